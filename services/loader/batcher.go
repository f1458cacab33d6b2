package main

import (
	"cmp"
	"iter"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicedata/sluice/pkg/delivery"
	"github.com/sluicedata/sluice/pkg/pipeline"
)

// batcher keeps the records waiting for their tables: it decodes what the poller read, says which
// tables are due for a flight (their blocks full or old enough, or their retry come), and bounds
// what the loader holds in all. The Loader's mu guards it.
type batcher struct {
	cfg     LoaderConfig
	backoff pipeline.Backoff
	now     func() time.Time
	dec     decoder
	tables  map[tableKey]*table
	// pendingRows and pendingBytes are what the tables hold in all: the bound on buffering.
	pendingRows, pendingBytes int
}

func newBatcher(cfg LoaderConfig, backoff pipeline.Backoff) *batcher {
	return &batcher{cfg: cfg, backoff: backoff, now: time.Now, dec: newDecoder(cfg.MaxRecordBytes), tables: map[tableKey]*table{}}
}

// decode makes it of r, polled in ownership owner at polled. It returns the dead-letter class and
// the reason of a record that cannot be loaded: it is dead-lettered on its own, its neighbours load.
func (b *batcher) decode(r *kgo.Record, owner *partition, polled time.Time, it *item) (string, error) {
	return b.dec.decode(r, owner, polled, it)
}

// add puts it with what waits for its table.
func (b *batcher) add(it *item) {
	tk := tableKey{it.table, it.schema}
	t := b.tables[tk]
	if t == nil {
		t = &table{name: it.table, schemaID: it.schema, told: map[string]bool{}, rows: b.cfg.BatchRows}
		b.tables[tk] = t
	}
	b.hold(t, it)
}

// hold adds it to what waits for t.
func (b *batcher) hold(t *table, it *item) {
	t.items = append(t.items, it)
	t.bytes += len(it.raw)
	b.pendingRows++
	b.pendingBytes += len(it.raw)
	t.stalled = false
}

// release counts it out of what waits for t; the caller drops it from t.items.
func (b *batcher) release(t *table, it *item) {
	t.bytes -= len(it.raw)
	b.pendingRows--
	b.pendingBytes -= len(it.raw)
}

// forget drops the done records (all of them for nil) from what waits for t; the rest wait in
// order.
func (b *batcher) forget(t *table, done map[*item]bool) {
	keep := t.items[:0:0]
	for _, it := range t.items {
		if done != nil && !done[it] {
			keep = append(keep, it)
			continue
		}
		b.release(t, it)
	}
	t.items = keep
}

// drop forgets the waiting records of partitions this member no longer owns.
func (b *batcher) drop(gone map[int32]bool) {
	for _, t := range b.tables {
		t.items = slices.DeleteFunc(t.items, func(it *item) bool {
			if gone[it.partition] {
				b.release(t, it)
				return true
			}
			return false
		})
	}
}

// waiting returns when the first table is due for a flight (zero when none is), and how many more
// records the loader may hold: none when the tables hold as much as it may buffer, or a batch is
// unfinished. flying is how many flights are in the air.
func (b *batcher) waiting(flying int, unfinished bool) (due time.Time, room int) {
	now := b.now()
	for _, t := range b.tables {
		if at := b.dueAt(t, now); !at.IsZero() && (due.IsZero() || at.Before(due)) {
			due = at
		}
	}
	if flying >= b.cfg.InsertConcurrency {
		due = time.Time{} // no table may insert before a flight lands, which wakes the loop
	}
	room = min(2*b.cfg.BatchRows-b.pendingRows, b.cfg.BatchRows)
	if unfinished || b.pendingBytes >= b.cfg.MaxPendingBytes || room <= 0 {
		room = 0
	}
	if unfinished && due.IsZero() {
		due = now.Add(b.cfg.FlushInterval)
	}
	return due, room
}

// due returns the tables due for a flight at now (every table with records and no flight when
// drain is set, at shutdown), those due longest first, at most slots of them.
func (b *batcher) due(now time.Time, drain bool, slots int) []*table {
	var due []*table
	at := map[*table]time.Time{}
	for _, t := range b.tables {
		if at[t] = b.dueAt(t, now); !at[t].IsZero() && (drain || !at[t].After(now)) {
			due = append(due, t)
		}
	}
	// By due time, then by name: a stable order of inserts.
	slices.SortFunc(due, func(a, b *table) int {
		return cmp.Or(at[a].Compare(at[b]), cmp.Compare(a.name, b.name), cmp.Compare(a.schemaID, b.schemaID))
	})
	return due[:min(len(due), max(slots, 0))]
}

// dueAt returns when t is due for a flight: now when its records fill a block, when its
// oldest record has waited a flush interval, or when its last failure's retry comes; zero while
// it waits for nothing it can act on (no record, a flight in the air, or stalled).
func (b *batcher) dueAt(t *table, now time.Time) time.Time {
	if len(t.items) == 0 || t.flying || t.stalled {
		return time.Time{}
	}
	if !t.retryAt.IsZero() {
		return t.retryAt
	}
	if len(t.items) >= t.rows || t.bytes >= b.cfg.BatchBytes {
		return now
	}
	return t.items[0].polled.Add(b.cfg.FlushInterval)
}

// later makes tables due again the first retry delay after now: their blocks could not be planned.
func (b *batcher) later(tables []*table, now time.Time) {
	at := now.Add(b.backoff.Delay(0))
	for _, t := range tables {
		t.retryAt = at
	}
}

// held counts the tables whose records wait because their last insert failed, by class.
func (b *batcher) held() (transient, schema float64) {
	for _, t := range b.tables {
		switch {
		case len(t.items) == 0:
		case t.class == delivery.Schema:
			schema++
		case t.attempt > 0:
			transient++
		}
	}
	return transient, schema
}

// offsets yields the partition and offset of every waiting record: none of them is done, and a
// partition's commit stops at the first.
func (b *batcher) offsets() iter.Seq2[int32, int64] {
	return func(yield func(int32, int64) bool) {
		for _, t := range b.tables {
			for _, it := range t.items {
				if !yield(it.partition, it.offset) {
					return
				}
			}
		}
	}
}

// pending is how many records wait for their tables.
func (b *batcher) pending() int { return b.pendingRows }
