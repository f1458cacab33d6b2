package main

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicedata/sluice/pkg/delivery"
)

// offsetTracker knows, per partition, which task offsets are in flight and which are done, so that
// a commit never passes a task that is not done: tasks finish out of order, offsets are committed in
// order.
type offsetTracker struct {
	mu    sync.Mutex
	parts map[tp]*partitionState
	// changed closes at the next change of any partition's state: who waits for a checkpoint
	// looks again then.
	changed chan struct{}
}

type tp struct {
	topic     string
	partition int32
}

type partitionState struct {
	inFlight  map[int64]struct{}
	epoch     int32
	committed int64
	// next is one past the highest task offset started in this ownership (-1: none).
	next int64
	// blocked is the lowest offset of a task abandoned here (-1: none): nothing at or past it may be
	// committed by this member.
	blocked int64
	// starts counts, per task offset not yet committed past, the members that started the task and
	// did not finish or hand it over: kept in the commit's metadata, so that the member that takes
	// the partition after a crash knows a task that kills the members it lands on. recorded is the
	// metadata the last commit wrote.
	starts   map[int64]int
	recorded string
}

// startsPrefix starts the commit metadata that records the tasks' starts.
const startsPrefix = "sluice-starts:"

// maxStartsMeta bounds the metadata, under Kafka's default offset.metadata.max.bytes (4096): past
// it a commit would be refused whole.
const maxStartsMeta = 3000

// encodeStarts writes the starts of the tasks at or past the committed offset next, in offset order;
// past maxStartsMeta, the tasks started most often are the ones kept.
func encodeStarts(starts map[int64]int, next int64) string {
	var offsets []int64
	for o, n := range starts {
		if o >= next && n > 0 {
			offsets = append(offsets, o)
		}
	}
	if len(offsets) == 0 {
		return ""
	}
	slices.SortFunc(offsets, func(a, b int64) int { return cmp.Or(cmp.Compare(starts[b], starts[a]), cmp.Compare(a, b)) })
	size := len(startsPrefix)
	for i, o := range offsets {
		if size += len(fmt.Sprintf("%d=%d,", o, starts[o])); size > maxStartsMeta {
			offsets = offsets[:i]
			break
		}
	}
	slices.Sort(offsets)
	parts := make([]string, len(offsets))
	for i, o := range offsets {
		parts[i] = fmt.Sprintf("%d=%d", o, starts[o])
	}
	return startsPrefix + strings.Join(parts, ",")
}

// decodeStarts reads what encodeStarts wrote; anything else is no starts.
func decodeStarts(meta string) map[int64]int {
	out := map[int64]int{}
	body, ok := strings.CutPrefix(meta, startsPrefix)
	if !ok {
		return out
	}
	for _, part := range strings.Split(body, ",") {
		o, n, ok := strings.Cut(part, "=")
		offset, err1 := strconv.ParseInt(o, 10, 64)
		count, err2 := strconv.Atoi(n)
		if ok && err1 == nil && err2 == nil && offset >= 0 && count > 0 {
			out[offset] = count
		}
	}
	return out
}

func newOffsetTracker() *offsetTracker {
	return &offsetTracker{parts: map[tp]*partitionState{}, changed: make(chan struct{})}
}

// notify wakes who waits for a change; the caller holds mu.
func (t *offsetTracker) notify() {
	close(t.changed)
	t.changed = make(chan struct{})
}

// checkpointed reports whether the task at offset of partition k is behind this member's commit:
// taken in this ownership, done and committed past, or held back only by an earlier task that is
// not done (no commit of this member can pass it then). The channel closes at the next change.
func (t *offsetTracker) checkpointed(k tp, offset int64) (bool, <-chan struct{}) {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.parts[k]
	if s == nil || offset >= s.next {
		return false, t.changed
	}
	if _, ok := s.inFlight[offset]; ok {
		return false, t.changed
	}
	if s.committed > offset || s.blocked >= 0 && s.blocked < offset {
		return true, t.changed
	}
	for o := range s.inFlight {
		if o < offset {
			return true, t.changed
		}
	}
	return false, t.changed
}

// state returns the partition's state, made when it has none. The caller holds mu.
func (t *offsetTracker) state(k tp) *partitionState {
	s := t.parts[k]
	if s == nil {
		s = &partitionState{inFlight: map[int64]struct{}{}, committed: -1, next: -1, blocked: -1, starts: map[int64]int{}}
		t.parts[k] = s
	}
	return s
}

// assigned takes what the commit of a partition just assigned says: its offset, and the starts of
// the tasks at or past it that earlier members did not finish.
func (t *offsetTracker) assigned(topic string, partition int32, committed int64, meta string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.state(tp{topic, partition})
	s.committed = max(s.committed, committed)
	for o, n := range decodeStarts(meta) {
		if o >= committed {
			s.starts[o] = max(s.starts[o], n)
		}
	}
	s.recorded = meta
}

// start records that the task at r is in flight, and returns the ownership of its partition that
// the task belongs to (done and abandon change nothing once that ownership ended: the partition was
// revoked, or revoked and assigned again, so a task of an earlier ownership never moves a commit)
// and how many members have started it, this one included.
func (t *offsetTracker) start(r *kgo.Record) (*partitionState, int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	defer t.notify()
	s := t.state(tp{r.Topic, r.Partition})
	s.inFlight[r.Offset] = struct{}{}
	s.next = max(s.next, r.Offset+1)
	s.epoch = r.LeaderEpoch
	s.starts[r.Offset]++
	return s, s.starts[r.Offset]
}

// current returns the partition's state when it is still the ownership s; the caller holds mu.
func (t *offsetTracker) current(s *partitionState, r *kgo.Record) bool {
	return t.parts[tp{r.Topic, r.Partition}] == s
}

// done records that the task at r is done: its records are acknowledged, or it is dead-lettered.
func (t *offsetTracker) done(s *partitionState, r *kgo.Record) {
	t.mu.Lock()
	defer t.mu.Unlock()
	defer t.notify()
	if !t.current(s, r) {
		return
	}
	delete(s.inFlight, r.Offset)
	delete(s.starts, r.Offset)
}

// abandon forgets the task at r without marking it done: it will be redelivered. handedOver says
// the member let go of it on purpose (a revocation, a shutdown): its start is taken back, since it
// killed nobody.
func (t *offsetTracker) abandon(s *partitionState, r *kgo.Record, handedOver bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	defer t.notify()
	if !t.current(s, r) {
		return
	}
	delete(s.inFlight, r.Offset)
	if handedOver {
		if s.starts[r.Offset]--; s.starts[r.Offset] <= 0 {
			delete(s.starts, r.Offset)
		}
	}
	if s.blocked < 0 || r.Offset < s.blocked {
		s.blocked = r.Offset
	}
}

// commitable returns, per partition, the offset that may be committed (its delivery.Watermark: the
// lowest task in flight or abandoned, or one past the highest started when there is none) and the
// metadata that records the starts of the tasks from there on, where either differs from what was
// committed last.
func (t *offsetTracker) commitable() (map[string]map[int32]kgo.EpochOffset, map[tp]string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	out, metas := map[string]map[int32]kgo.EpochOffset{}, map[tp]string{}
	for k, s := range t.parts {
		w := delivery.NewWatermark(s.committed, s.next)
		for o := range s.inFlight {
			w.Hold(o)
		}
		if s.blocked >= 0 {
			w.Hold(s.blocked) // abandoned: its next owner runs it again
		}
		next, ok := w.Offset()
		meta := encodeStarts(s.starts, next)
		if !ok || (next <= s.committed || next == 0) && meta == s.recorded {
			continue
		}
		if out[k.topic] == nil {
			out[k.topic] = map[int32]kgo.EpochOffset{}
		}
		out[k.topic][k.partition] = kgo.EpochOffset{Epoch: s.epoch, Offset: next}
		metas[k] = meta
	}
	return out, metas
}

// committed records offsets, and the metadata with them, that the group coordinator accepted.
func (t *offsetTracker) committed(offsets map[string]map[int32]kgo.EpochOffset, metas map[tp]string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	defer t.notify()
	for topic, ps := range offsets {
		for p, eo := range ps {
			s := t.parts[tp{topic, p}]
			if s == nil {
				continue
			}
			s.committed = max(s.committed, eo.Offset)
			s.recorded = metas[tp{topic, p}]
			for o := range s.starts {
				if o < s.committed {
					delete(s.starts, o)
				}
			}
		}
	}
}

// drop forgets partitions that were revoked or lost.
func (t *offsetTracker) drop(partitions map[string][]int32) {
	t.mu.Lock()
	defer t.mu.Unlock()
	defer t.notify()
	for topic, ps := range partitions {
		for _, p := range ps {
			delete(t.parts, tp{topic, p})
		}
	}
}
