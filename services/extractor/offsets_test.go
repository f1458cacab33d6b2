package main

import (
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
)

func at(offset int64) *kgo.Record { return &kgo.Record{Topic: "tasks", Partition: 0, Offset: offset} }

func committable(t *testing.T, tr *offsetTracker) int64 {
	t.Helper()
	offs, metas := tr.commitable()
	eo, ok := offs["tasks"][0]
	if !ok {
		return -1
	}
	tr.committed(offs, metas)
	return eo.Offset
}

// TestTrackerCommitsInOrder finishes tasks out of order: a commit never passes an unfinished task.
func TestTrackerCommitsInOrder(t *testing.T) {
	tr := newOffsetTracker()
	var owner *partitionState
	for _, o := range []int64{5, 6, 7} {
		owner, _ = tr.start(at(o))
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
	owner, _ := tr.start(at(10))
	tr.start(at(11))
	tr.done(owner, at(11))
	tr.abandon(owner, at(10), true)
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
	old, _ := tr.start(at(10))
	tr.start(at(11))
	tr.start(at(12))
	tr.drop(map[string][]int32{"tasks": {0}}) // revoked with 10, 11 and 12 unfinished
	owner, _ := tr.start(at(10))              // assigned again: redelivered from 10
	tr.done(old, at(12))                      // the old run of 12 ends late
	tr.abandon(old, at(11), true)
	tr.done(owner, at(10))
	if got := committable(t, tr); got != 11 {
		t.Fatalf("commit offset %d, want 11: nothing of the earlier ownership may count", got)
	}
}

// TestTrackerRecordsStarts: the commit carries, in its metadata, how many members started each task
// past it and did not finish it; a member that takes the partition over counts on from there, a
// task handed over (revoked, shut down) is not counted, and a finished one leaves the record.
func TestTrackerRecordsStarts(t *testing.T) {
	commit := func(tr *offsetTracker) (int64, string) {
		offs, metas := tr.commitable()
		eo, ok := offs["tasks"][0]
		if !ok {
			return -1, ""
		}
		tr.committed(offs, metas)
		return eo.Offset, metas[tp{"tasks", 0}]
	}
	first := newOffsetTracker()
	_, n := first.start(at(0))
	if n != 1 {
		t.Fatalf("first start counted %d", n)
	}
	if o, meta := commit(first); o != 0 || meta != "sluice-starts:0=1" {
		t.Fatalf("commit %d %q, want the start recorded at offset 0", o, meta)
	}
	// The member dies with the task running; the next takes over from the commit.
	next := newOffsetTracker()
	next.assigned("tasks", 0, 0, "sluice-starts:0=1")
	s2, n := next.start(at(0))
	if n != 2 {
		t.Fatalf("start after a member died counted %d, want 2", n)
	}
	if _, meta := commit(next); meta != "sluice-starts:0=2" {
		t.Fatalf("metadata %q", meta)
	}
	// Handed over on a revocation: taken back.
	next.abandon(s2, at(0), true)
	if _, meta := commit(next); meta != "sluice-starts:0=1" {
		t.Fatalf("metadata after a hand-over %q, want the one start that killed a member", meta)
	}
	// The member that takes it then finishes it: the commit moves past it and records nothing.
	last := newOffsetTracker()
	last.assigned("tasks", 0, 0, "sluice-starts:0=1")
	s3, n := last.start(at(0))
	if n != 2 {
		t.Fatalf("start after a hand-over counted %d, want 2", n)
	}
	last.done(s3, at(0))
	if o, meta := commit(last); o != 1 || meta != "" {
		t.Fatalf("commit %d %q after the task finished", o, meta)
	}
	if got := decodeStarts("sluice-starts:3=2,x=1,5=0,7=-1,9=4"); len(got) != 2 || got[3] != 2 || got[9] != 4 {
		t.Fatalf("decodeStarts %v", got)
	}
}

// TestStartsMetadataBounded: however many tasks are in flight, the metadata stays under Kafka's
// default offset.metadata.max.bytes, keeping the tasks started most often.
func TestStartsMetadataBounded(t *testing.T) {
	starts := map[int64]int{}
	for o := range int64(2000) {
		starts[o] = 1
	}
	starts[1500] = 3
	meta := encodeStarts(starts, 0)
	if len(meta) > 3000 || decodeStarts(meta)[1500] != 3 {
		t.Fatalf("metadata of %d bytes, the poison's count %d", len(meta), decodeStarts(meta)[1500])
	}
}

// TestTrackerUnknownCommitNeverRewinds: a member that could not read its partition's commit (or
// joins a group with none) and polled from offset 100 commits its first task's offset while it
// runs or once it is abandoned, never 0: a commit of 0 sent the partition's next owner back over
// every task before it.
func TestTrackerUnknownCommitNeverRewinds(t *testing.T) {
	tr := newOffsetTracker()
	owner, _ := tr.start(at(100))
	if got := committable(t, tr); got != 100 {
		t.Fatalf("commit offset %d while task 100 runs, want 100", got)
	}
	tr.start(at(101))
	tr.done(owner, at(101))
	tr.abandon(owner, at(100), true) // revoked while it ran
	if got := committable(t, tr); got != 100 && got != -1 {
		t.Fatalf("commit offset %d after task 100 was abandoned, want 100", got)
	}
}
