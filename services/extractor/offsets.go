package main

import (
	"sync"

	"github.com/twmb/franz-go/pkg/kgo"
)

// offsetTracker knows, per partition, which task offsets are in flight and which are done, so that
// a commit never passes a task that is not done: tasks finish out of order, offsets are committed in
// order.
type offsetTracker struct {
	mu    sync.Mutex
	parts map[tp]*partitionState
}

type tp struct {
	topic     string
	partition int32
}

type partitionState struct {
	inFlight    map[int64]struct{}
	epoch       int32
	committed   int64
	highestDone int64
	// blocked is the lowest offset of a task abandoned here (-1: none): nothing at or past it may be
	// committed by this member.
	blocked int64
}

func newOffsetTracker() *offsetTracker { return &offsetTracker{parts: map[tp]*partitionState{}} }

// start records that the task at r is in flight, and returns the ownership of its partition that
// the task belongs to: done and abandon change nothing once that ownership ended (the partition was
// revoked, or revoked and assigned again), so a task of an earlier ownership never moves a commit.
func (t *offsetTracker) start(r *kgo.Record) *partitionState {
	t.mu.Lock()
	defer t.mu.Unlock()
	k := tp{r.Topic, r.Partition}
	s := t.parts[k]
	if s == nil {
		s = &partitionState{inFlight: map[int64]struct{}{}, committed: -1, highestDone: -1, blocked: -1}
		t.parts[k] = s
	}
	s.inFlight[r.Offset] = struct{}{}
	s.epoch = r.LeaderEpoch
	return s
}

// current returns the partition's state when it is still the ownership s; the caller holds mu.
func (t *offsetTracker) current(s *partitionState, r *kgo.Record) bool {
	return t.parts[tp{r.Topic, r.Partition}] == s
}

// done records that the task at r is done: its records are acknowledged, or it is dead-lettered.
func (t *offsetTracker) done(s *partitionState, r *kgo.Record) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.current(s, r) {
		return
	}
	delete(s.inFlight, r.Offset)
	s.highestDone = max(s.highestDone, r.Offset)
}

// abandon forgets the task at r without marking it done: it will be redelivered.
func (t *offsetTracker) abandon(s *partitionState, r *kgo.Record) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.current(s, r) {
		return
	}
	delete(s.inFlight, r.Offset)
	if s.blocked < 0 || r.Offset < s.blocked {
		s.blocked = r.Offset
	}
}

// commitable returns, per partition, the offset that may be committed and was not yet: the lowest
// offset in flight, or one past the highest done when nothing is in flight.
func (t *offsetTracker) commitable() map[string]map[int32]kgo.EpochOffset {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := map[string]map[int32]kgo.EpochOffset{}
	for k, s := range t.parts {
		next := s.highestDone + 1
		for o := range s.inFlight {
			if o < next {
				next = o
			}
		}
		if s.blocked >= 0 && s.blocked < next {
			next = s.blocked
		}
		if next <= 0 || next <= s.committed {
			continue
		}
		if out[k.topic] == nil {
			out[k.topic] = map[int32]kgo.EpochOffset{}
		}
		out[k.topic][k.partition] = kgo.EpochOffset{Epoch: s.epoch, Offset: next}
	}
	return out
}

// committed records offsets that the group coordinator accepted.
func (t *offsetTracker) committed(offsets map[string]map[int32]kgo.EpochOffset) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for topic, ps := range offsets {
		for p, eo := range ps {
			if s := t.parts[tp{topic, p}]; s != nil && eo.Offset > s.committed {
				s.committed = eo.Offset
			}
		}
	}
}

// drop forgets partitions that were revoked or lost.
func (t *offsetTracker) drop(partitions map[string][]int32) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for topic, ps := range partitions {
		for _, p := range ps {
			delete(t.parts, tp{topic, p})
		}
	}
}
