package main

import (
	"errors"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/sluicedata/sluice/pkg/delivery"
	"github.com/sluicedata/sluice/pkg/pipeline"
)

func newTestBatcher(t testing.TB, now time.Time) *batcher {
	t.Helper()
	b := newBatcher(LoaderConfig{BatchRows: 10, BatchBytes: 1 << 20, FlushInterval: time.Second, InsertConcurrency: 2,
		MaxPendingBytes: 1000, UnclassifiedAttempts: 3, UnclassifiedGrace: time.Minute}, pipeline.Backoff{Base: time.Second, Max: time.Second})
	b.now = func() time.Time { return now }
	return b
}

// fill gives table name n records of partition p from offset first, polled at polled, 10 bytes each.
func fill(b *batcher, name string, p int32, first int64, n int, polled time.Time) {
	for i := range n {
		b.add(&item{partition: p, offset: first + int64(i), table: name, raw: make([]byte, 10), polled: polled})
	}
}

// TestBatcherDue: a table is due when its records fill a block, a flush interval after its oldest
// came, or at its retry; not while it flies; the longest due go first, as many as may fly.
func TestBatcherDue(t *testing.T) {
	t0 := time.Unix(1700000000, 0)
	b := newTestBatcher(t, t0)
	fill(b, "full", 0, 0, 10, t0)
	fill(b, "young", 0, 10, 3, t0)
	fill(b, "old", 1, 0, 3, t0.Add(-2*time.Second))
	fill(b, "flying", 1, 3, 10, t0)
	b.tables[tableKey{"flying", ""}].flying = true
	fill(b, "retry", 1, 13, 10, t0)
	b.tables[tableKey{"retry", ""}].retryAt = t0.Add(5 * time.Second)

	names := func(ts []*table) []string {
		var out []string
		for _, t := range ts {
			out = append(out, t.name)
		}
		return out
	}
	if got := names(b.due(t0, false, 2)); !slices.Equal(got, []string{"old", "full"}) {
		t.Fatalf("due now %v, want the old one then the full one", got)
	}
	if got := names(b.due(t0, false, 0)); len(got) != 0 {
		t.Fatalf("due with no flight free: %v", got)
	}
	if got := names(b.due(t0, true, 4)); !slices.Equal(got, []string{"old", "full", "young", "retry"}) {
		t.Fatalf("due at shutdown %v", got)
	}
	if due, _ := b.waiting(0, false); !due.Equal(t0.Add(-time.Second)) {
		t.Fatalf("first due at %v", due)
	}
	if due, _ := b.waiting(2, false); !due.IsZero() {
		t.Fatalf("due at %v while every flight is in the air", due)
	}
}

// TestBatcherBounds: the loader holds at most two batches of records and MaxPendingBytes, and
// nothing more while a batch is unfinished.
func TestBatcherBounds(t *testing.T) {
	t0 := time.Unix(1700000000, 0)
	tests := []struct {
		name       string
		records    int
		bytes      int // one more record, of this many bytes
		unfinished bool
		room       int
	}{
		{"one record: a batch", 0, 0, false, 10},
		{"one batch and a half held", 14, 0, false, 5},
		{"two batches held", 19, 0, false, 0},
		{"a batch unfinished", 1, 0, true, 0},
		{"the bytes' bound", 0, 1000, false, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newTestBatcher(t, t0)
			fill(b, "t", 0, 0, tt.records, t0)
			b.add(&item{table: "t", offset: int64(tt.records), raw: make([]byte, tt.bytes), polled: t0})
			due, room := b.waiting(0, tt.unfinished)
			if room != tt.room {
				t.Fatalf("room %d, want %d", room, tt.room)
			}
			if tt.unfinished && due.IsZero() {
				t.Fatal("an unfinished batch is not tried again")
			}
		})
	}
}

// TestBatcherDrop: the records of partitions no longer owned go, and are counted out; the others
// wait, and hold their partitions' commits.
func TestBatcherDrop(t *testing.T) {
	b := newTestBatcher(t, time.Now())
	fill(b, "a", 0, 5, 3, time.Now())
	fill(b, "a", 1, 7, 3, time.Now())
	fill(b, "b", 1, 10, 2, time.Now())
	b.drop(map[int32]bool{1: true})
	if b.pending() != 3 || b.pendingBytes != 30 || b.tables[tableKey{"a", ""}].bytes != 30 {
		t.Fatalf("%d records, %d bytes held after the drop", b.pending(), b.pendingBytes)
	}
	if got := maps.Collect(b.offsets()); len(got) != 1 || got[0] < 5 {
		t.Fatalf("offsets waiting %v", got)
	}
}

// TestTableAdapts: a table's blocks halve when an insert times out (planned again smaller at the
// second timeout in a row) or ClickHouse refuses a block for its partitions (planned again at
// once, and capped), keep their size when merges are behind, and double back while it is behind.
func TestTableAdapts(t *testing.T) {
	timeout := delivery.New(delivery.Transient, "timeout", errors.New("context deadline exceeded"))
	refused := delivery.New(delivery.Transient, "too_many_parts", errors.New("code: 252, message: Too many partitions for single INSERT block (more than 100)"))
	merges := delivery.New(delivery.Transient, "too_many_parts", errors.New("code: 252, message: Too many parts (300). Merges are processing significantly slower than inserts"))
	tab := &table{rows: 800}
	steps := []struct {
		name   string
		do     func() bool
		rows   int
		replan bool
	}{
		{"merges behind", func() bool { return tab.shrink(800, merges, 100) }, 800, false},
		{"timed out", func() bool { return tab.shrink(800, timeout, 100) }, 400, false},
		{"timed out again", func() bool { return tab.shrink(400, timeout, 100) }, 200, true},
		{"refused for its partitions", func() bool { return tab.shrink(200, refused, 100) }, 100, true},
		{"a full flight, more waiting", func() bool {
			tab.items = make([]*item, 500)
			tab.succeeded(true, 800)
			return false
		}, 100, false},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			if replan := s.do(); replan != s.replan || tab.rows != s.rows {
				t.Fatalf("rows %d, replan %v; want %d, %v", tab.rows, replan, s.rows, s.replan)
			}
		})
	}
	tab.ceiling = 0 // no refusal: blocks grow back to the batch size
	tab.succeeded(true, 800)
	if tab.rows != 200 || tab.timeouts != 0 {
		t.Fatalf("rows %d, timeouts %d after a full flight landed", tab.rows, tab.timeouts)
	}
}
