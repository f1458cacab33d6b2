package main

import (
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
)

func at(offset int64) *kgo.Record { return &kgo.Record{Topic: "tasks", Partition: 0, Offset: offset} }

func committable(t *testing.T, tr *offsetTracker) int64 {
	t.Helper()
	offs := tr.commitable()
	eo, ok := offs["tasks"][0]
	if !ok {
		return -1
	}
	tr.committed(offs)
	return eo.Offset
}

// TestTrackerCommitsInOrder finishes tasks out of order: a commit never passes an unfinished task.
func TestTrackerCommitsInOrder(t *testing.T) {
	tr := newOffsetTracker()
	for _, o := range []int64{5, 6, 7} {
		tr.start(at(o))
	}
	steps := []struct {
		name string
		do   func()
		want int64
	}{
		{"6 done, 5 running", func() { tr.done(at(6)) }, 5},
		{"5 done, 7 running", func() { tr.done(at(5)) }, 7},
		{"7 done", func() { tr.done(at(7)) }, 8},
		{"nothing new", func() {}, -1},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			s.do()
			if got := committable(t, tr); got != s.want {
				t.Fatalf("commit offset %d, want %d", got, s.want)
			}
		})
	}
}

// TestTrackerAbandonBlocks: a task abandoned (revoked, shut down) keeps later tasks from being
// committed past it, so that it runs again.
func TestTrackerAbandonBlocks(t *testing.T) {
	tr := newOffsetTracker()
	tr.start(at(10))
	tr.start(at(11))
	tr.done(at(11))
	tr.abandon(at(10))
	tr.start(at(12))
	tr.done(at(12))
	if got := committable(t, tr); got != 10 {
		t.Fatalf("commit offset %d, want 10: the abandoned task must run again", got)
	}
}
