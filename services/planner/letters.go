package main

import (
	"cmp"
	"context"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicedata/sluice/pkg/dlq"
)

// letters follows the dead-letter topic for the status page: the newest letters, and how many
// letters each job has by stage and class since the topic's start.
type letters struct {
	keep   int
	mu     sync.Mutex
	recent []numbered // oldest first, at most 2*keep before a trim
	counts map[LetterCount]int
	read   uint64
}

// numbered is a letter with its number among those read, from 1: what a page's cursor names.
type numbered struct {
	n uint64
	dlq.Summary
}

// LetterCount is how many dead letters a job has of one stage and class.
type LetterCount struct {
	JobID   string `json:"job_id"`
	Stage   string `json:"stage"`
	Class   string `json:"error_class"`
	Letters int    `json:"letters"`
}

func newLetters(keep int) *letters {
	return &letters{keep: max(keep, 1), counts: map[LetterCount]int{}}
}

func (l *letters) add(s dlq.Summary) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.counts[LetterCount{JobID: s.JobID, Stage: s.Stage, Class: s.Class}]++
	l.read++
	l.recent = append(l.recent, numbered{n: l.read, Summary: s})
	if len(l.recent) >= 2*l.keep {
		l.recent = slices.Clone(l.recent[len(l.recent)-l.keep:])
	}
}

// Run reads the topic from its start with cl, which consumes it, and follows it until ctx ends.
func (l *letters) Run(ctx context.Context, cl *kgo.Client, log *slog.Logger) error {
	defer cl.Close()
	var said string
	for {
		fetches := cl.PollFetches(ctx)
		if ctx.Err() != nil || fetches.IsClientClosed() {
			return nil
		}
		fetches.EachError(func(topic string, _ int32, err error) {
			// The client tries again by itself; a refusal that lasts is said once, not every poll.
			if err.Error() != said {
				said = err.Error()
				log.Warn("read the dead letters for the status page", "topic", topic, "error", err)
			}
		})
		fetches.EachRecord(func(r *kgo.Record) {
			dl, err := dlq.Decode(r)
			if err != nil {
				log.Warn("skip an undecodable dead letter", "partition", r.Partition, "offset", r.Offset, "error", err)
				return
			}
			l.add(dlq.Summarize(r, dl))
		})
	}
}

// letterFilter is what a query of the dead letters keeps.
type letterFilter struct {
	job, stage, class string
	since, until      time.Time
}

// parseLetterFilter reads job, stage, class, since and until (RFC 3339) from q.
func parseLetterFilter(q url.Values) (letterFilter, string) {
	f := letterFilter{job: q.Get("job"), stage: q.Get("stage"), class: q.Get("class")}
	if f.stage != "" && f.stage != "extract" && f.stage != "load" {
		return f, "stage must be extract or load"
	}
	for name, t := range map[string]*time.Time{"since": &f.since, "until": &f.until} {
		if v := q.Get(name); v != "" {
			at, err := time.Parse(time.RFC3339, v)
			if err != nil {
				return f, name + " must be a time in RFC 3339, such as 2026-12-07T10:00:00Z"
			}
			*t = at
		}
	}
	return f, ""
}

func (f letterFilter) keeps(s dlq.Summary) bool {
	return (f.job == "" || s.JobID == f.job) && (f.stage == "" || s.Stage == f.stage) && (f.class == "" || s.Class == f.class) &&
		(f.since.IsZero() || !s.FailedAt.Before(f.since)) && (f.until.IsZero() || s.FailedAt.Before(f.until))
}

// Query returns the newest limit letters f keeps, newest first, read before the letter numbered
// before (0: the newest), with the number of the last and whether more follow; and the counts of the
// job, stage and class f names (every letter since the topic's start, not only the newest kept).
func (l *letters) Query(f letterFilter, before uint64, limit int) ([]dlq.Summary, uint64, bool, []LetterCount) {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := []dlq.Summary{}
	var last uint64
	more := false
	for i := len(l.recent) - 1; i >= max(len(l.recent)-l.keep, 0) && !more; i-- {
		switch lt := l.recent[i]; {
		case before != 0 && lt.n >= before, !f.keeps(lt.Summary):
		case len(out) == limit:
			more = true
		default:
			out, last = append(out, lt.Summary), lt.n
		}
	}
	counts := []LetterCount{}
	for k, n := range l.counts {
		if (f.job == "" || k.JobID == f.job) && (f.stage == "" || k.Stage == f.stage) && (f.class == "" || k.Class == f.class) {
			k.Letters = n
			counts = append(counts, k)
		}
	}
	slices.SortFunc(counts, func(a, b LetterCount) int {
		return cmp.Or(cmp.Compare(b.Letters, a.Letters), strings.Compare(a.JobID, b.JobID),
			strings.Compare(a.Stage, b.Stage), strings.Compare(a.Class, b.Class))
	})
	return out, last, more, counts
}

// letterList is a page of the newest dead letters, newest first, with the counts of all of them.
type letterList struct {
	Letters    []dlq.Summary `json:"letters"`
	Counts     []LetterCount `json:"counts"`
	NextCursor string        `json:"next_cursor,omitempty"`
}

// deadLetters serves a page of the newest dead letters, filtered by job, stage, class and time,
// with counts.
func (p *Planner) deadLetters(w http.ResponseWriter, r *http.Request) {
	pq, err := parsePage(r.URL.Query(), listLetters)
	var before uint64
	if err == nil && pq.after != "" {
		if before, err = strconv.ParseUint(pq.after, 10, 64); err != nil || before == 0 {
			err = errCursor
		}
	}
	f, problem := parseLetterFilter(r.URL.Query())
	switch {
	case err != nil:
		writeJSON(w, http.StatusBadRequest, apiError{Error: err.Error()})
		return
	case problem != "":
		writeJSON(w, http.StatusBadRequest, apiError{Error: problem})
		return
	case p.letters == nil:
		writeJSON(w, http.StatusOK, letterList{Letters: []dlq.Summary{}, Counts: []LetterCount{}})
		return
	}
	answer := letterList{}
	var last uint64
	var more bool
	answer.Letters, last, more, answer.Counts = p.letters.Query(f, before, pq.limit)
	if more {
		answer.NextCursor = cursor(listLetters, strconv.FormatUint(last, 10))
	}
	writeJSON(w, http.StatusOK, answer)
}
