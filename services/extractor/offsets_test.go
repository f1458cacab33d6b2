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
	var owner *partitionState
	for _, o := range []int64{5, 6, 7} {
		owner = tr.start(at(o))
	}
	steps := []struct {
		name string
		do   func()
		want int64
	}{
		{"6 done, 5 running", func() { tr.done(owner, at(6)) }, 5},
		{"5 done, 7 running", func() { tr.done(owner, at(5)) }, 7},
		{"7 done", func() { tr.done(owner, at(7)) }, 8},
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
	owner := tr.start(at(10))
	tr.start(at(11))
	tr.done(owner, at(11))
	tr.abandon(owner, at(10))
	tr.start(at(12))
	tr.done(owner, at(12))
	if got := committable(t, tr); got != 10 {
		t.Fatalf("commit offset %d, want 10: the abandoned task must run again", got)
	}
}

// TestTrackerIgnoresEarlierOwnership: a task of a partition's earlier ownership that ends after the
// partition came back neither completes nor blocks the new ownership's tasks.
func TestTrackerIgnoresEarlierOwnership(t *testing.T) {
	tr := newOffsetTracker()
	old := tr.start(at(10))
	tr.start(at(11))
	tr.start(at(12))
	tr.drop(map[string][]int32{"tasks": {0}}) // revoked with 10, 11 and 12 unfinished
	owner := tr.start(at(10))                 // assigned again: redelivered from 10
	tr.done(old, at(12))                      // the old run of 12 ends late
	tr.abandon(old, at(11))
	tr.done(owner, at(10))
	if got := committable(t, tr); got != 11 {
		t.Fatalf("commit offset %d, want 11: nothing of the earlier ownership may count", got)
	}
}
