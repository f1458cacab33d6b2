package main

import (
	"cmp"
	"context"
	"slices"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// The planner keeps a finished job for SLUICE_PLANNER_KEEP_FINISHED after it ended, and at most
// SLUICE_PLANNER_KEEP_FINISHED_MAX finished jobs; past either bound it forgets the oldest. A
// forgotten job is gone from the API (404), its idempotency key is free again, and its state is
// deleted from the jobs topic. Running jobs are never forgotten.

// minKept is how long a finished job is kept whatever the count, so that a client waiting for its
// end (sluicectl submit --wait) sees how it ended.
const minKept = time.Minute

// retention bounds the finished jobs a planner keeps: those that ended at most age ago, the newest
// most of them. A zero bound keeps all.
type retention struct {
	age  time.Duration
	most int
}

// Forget lets go of the finished jobs past r at now, oldest first, and returns them. Some stay
// past the bounds: those that finished in the last minute, a cancelled job whose state is not on
// the jobs topic yet (the extractors learn the cancel there), a succeeded run whose cursor was not
// yet compared with its job's mark, and the newest run of each name in scheduled (its next run is
// due from it).
func (js *Jobs) Forget(now time.Time, r retention, scheduled map[string]bool) []Job {
	js.mu.Lock()
	defer js.mu.Unlock()
	newest := map[string]*Job{}
	var finished []*Job
	for _, j := range js.jobs {
		if n := newest[j.Name]; scheduled[j.Name] && (n == nil || j.CreatedAt.After(n.CreatedAt)) {
			newest[j.Name] = j
		}
		if j.State != stateRunning {
			finished = append(finished, j)
		}
	}
	slices.SortFunc(finished, func(a, b *Job) int { return cmp.Or(a.ended().Compare(b.ended()), strings.Compare(a.ID, b.ID)) })
	over := len(finished) - r.most
	if r.most == 0 {
		over = 0
	}
	var gone []Job
	for _, j := range finished {
		old := r.age > 0 && j.ended().Before(now.Add(-r.age))
		if !old && over <= 0 || !j.ended().Before(now.Add(-minKept)) {
			break // the others ended later
		}
		if j.pinned() || newest[j.Name] == j {
			continue
		}
		js.drop(j)
		gone = append(gone, *j)
		over--
	}
	return gone
}

// ended is when a finished job ended; its creation for a state stored without the time.
func (j *Job) ended() time.Time {
	if j.FinishedAt != nil {
		return *j.FinishedAt
	}
	return j.CreatedAt
}

// pinned says that a finished job must be kept: what it holds is not yet where it is needed.
func (j *Job) pinned() bool {
	return j.State == stateCancelled && !j.stored || j.State == stateSucceeded && j.MaxCursor != "" && !j.markChecked
}

// drop forgets j; the caller holds the lock. Its key is freed only if it still names j: a key is
// used again only once its job is forgotten, and then names the newer job.
func (js *Jobs) drop(j *Job) {
	delete(js.jobs, j.ID)
	if js.byKey[j.IdempotencyKey] == j.ID {
		delete(js.byKey, j.IdempotencyKey)
	}
	if js.forgotten != nil {
		js.forgotten[j.ID] = true
	}
}

// Forgotten takes the tombstone of job id's state on the jobs topic: a planner forgot the job.
func (js *Jobs) Forgotten(id string) {
	js.mu.Lock()
	defer js.mu.Unlock()
	if j := js.jobs[id]; j != nil {
		js.drop(j)
	} else if js.forgotten != nil {
		js.forgotten[id] = true
	}
}

// Replayed says the events written before the planner started are folded in: a forgotten job's
// planned event could come only from them.
func (js *Jobs) Replayed() {
	js.mu.Lock()
	defer js.mu.Unlock()
	js.forgotten = nil
}

// claim points key at j, unless it names a newer job already; the caller holds the lock.
func (js *Jobs) claim(key string, j *Job) {
	if key == "" {
		return
	}
	if held := js.jobs[js.byKey[key]]; held != nil && held != j && held.CreatedAt.After(j.CreatedAt) {
		return
	}
	js.byKey[key] = j.ID
}

// forget lets go of the finished jobs past the retention and deletes their states from the jobs
// topic (a tombstone, which compaction keeps for a while and then drops with the state). A
// cancelled job's state stays: the extractors skip the tasks of the cancelled jobs they read there.
// A tombstone that cannot be written is not tried again: a planner that starts reads the state and
// forgets the job again.
func (p *Planner) forget(ctx context.Context) {
	scheduled := map[string]bool{}
	for _, s := range p.names.scheduleList() {
		scheduled[s.Name] = true
	}
	gone := p.jobs.Forget(p.now(), retention{age: p.cfg.KeepFinished, most: p.cfg.KeepFinishedMax}, scheduled)
	if len(gone) == 0 {
		return
	}
	if p.forgottenJobs != nil {
		p.forgottenJobs.Add(float64(len(gone)))
	}
	var recs []*kgo.Record
	for _, j := range gone {
		if j.State != stateCancelled {
			recs = append(recs, &kgo.Record{Topic: p.topics.jobs, Key: []byte(j.ID)})
		}
	}
	if len(recs) == 0 {
		return
	}
	if !p.leads() {
		// A follower forgets too, and owes the tombstones until the leader's arrive or it leads.
		p.owedMu.Lock()
		if p.owed == nil {
			p.owed = map[string]bool{}
		}
		for _, r := range recs {
			p.owed[string(r.Key)] = true
		}
		p.owedMu.Unlock()
		return
	}
	p.tombstones(ctx, recs)
}

// payTombstones writes the tombstones this planner owes since it forgot jobs while it followed.
func (p *Planner) payTombstones(ctx context.Context) {
	p.owedMu.Lock()
	recs := make([]*kgo.Record, 0, len(p.owed))
	for id := range p.owed {
		recs = append(recs, &kgo.Record{Topic: p.topics.jobs, Key: []byte(id)})
	}
	p.owed = nil
	p.owedMu.Unlock()
	if len(recs) > 0 {
		p.tombstones(ctx, recs)
	}
}

// tombstoned takes note of a tombstone on the jobs topic: this planner owes it no more.
func (p *Planner) tombstoned(id string) {
	p.owedMu.Lock()
	defer p.owedMu.Unlock()
	delete(p.owed, id)
}

// tombstones deletes the states of forgotten jobs from the jobs topic.
func (p *Planner) tombstones(ctx context.Context, recs []*kgo.Record) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := p.produce(ctx, recs...); err != nil {
		p.log.Warn("delete the states of forgotten jobs from the jobs topic; a planner that starts forgets them again",
			"jobs", len(recs), "error", err)
	}
}
