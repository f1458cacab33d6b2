package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sluicedata/sluice/pkg/catalog"
	"github.com/sluicedata/sluice/pkg/chsink"
	"github.com/sluicedata/sluice/pkg/delivery"
	"github.com/sluicedata/sluice/pkg/dlq"
	sluicev1 "github.com/sluicedata/sluice/proto/sluice/v1"
)

// item is one raw record, decoded, on its way to its table.
type item struct {
	rec                   *kgo.Record
	job, task, run, table string
	schema                string
	key                   string
	payload               []byte
	extractedAt           time.Time
}

// table is the records waiting for one table with one sink schema, and what the table said last.
type table struct {
	name     string
	schemaID string // "" for the raw landing rows
	sink     *chsink.Sink
	items    []*item
	// class is the class of the last failed insert (transient or schema) while records wait.
	class   delivery.Class
	reason  string
	attempt int
	retryAt time.Time
	// since is when the table first refused records for a schema reason; after the grace the
	// loader dead-letters what it refuses.
	since time.Time
	// told are the jobs whose status says that this table holds their records.
	told map[string]bool
	// more is set when the table's records made more than one block's worth at the last flush.
	more bool
}

// batch is what one flush did: the records it finished and how, and the events that say so.
type batch struct {
	letters []*kgo.Record
	spans   map[span]*spanCount
	events  []*sluicev1.JobEvent
	records int
}

// flush decodes recs into their tables, inserts every table that is due, dead-letters what is bad,
// and finishes the outcome: dead letters, events, commit.
func (l *Loader) flush(ctx context.Context, recs []*kgo.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.unfinished != nil {
		if err := l.core.Finish(ctx, l.unfinished); err != nil {
			return err
		}
		l.unfinished = nil
	}
	start := l.now()
	b := &batch{spans: map[span]*spanCount{}, records: len(recs)}
	if err := l.prepare(recs, b); err != nil {
		return err
	}
	// Inserts get half the flush: the dead letters, events and commit the rest.
	insertCtx, cancel := context.WithTimeout(ctx, l.cfg.FlushTimeout/2)
	var due []*table
	for _, t := range l.sortedTables() {
		if !t.retryAt.After(start) {
			due = append(due, t)
		}
	}
	// The blocks about to be inserted are recorded first: were they not, a member that takes a
	// partition over after a crash could form other blocks of the same records.
	// When they cannot be recorded nothing is inserted now, and the batch goes on to its dead
	// letters, events and commit, which pass no waiting record.
	planned, err := l.planBlocks(insertCtx, due)
	if err != nil {
		l.log.Warn("record the blocks about to be inserted; trying again", "error", err)
		planned = nil
	}
	// Tables insert side by side, each its blocks in order; what they did is applied in order.
	l.lag.Doing(fmt.Sprintf("inserting into %d tables", len(planned)))
	results := make([]insertResult, len(planned))
	slots := make(chan struct{}, l.cfg.InsertConcurrency)
	var wg sync.WaitGroup
	for i, tp := range planned {
		wg.Go(func() {
			slots <- struct{}{}
			defer func() { <-slots }()
			r := &results[i]
			r.inserted, r.rejected, r.err = l.insertTable(insertCtx, tp)
		})
	}
	wg.Wait()
	for i, tp := range planned {
		if l.load(tp, results[i], b); l.fatal != nil {
			break
		}
	}
	cancel()
	if l.fatal != nil {
		return l.fatal
	}
	l.metrics.pendingRows.Set(float64(l.pendingRows))
	l.observeHeld()
	out := &delivery.Outcome{Letters: b.letters, Events: append(spanEvents(b.spans), b.events...), Commit: l.commit}
	l.unfinished = out
	l.lag.Doing(fmt.Sprintf("writing %d dead letters, %d job events and the commit", len(out.Letters), len(out.Events)))
	if err := l.core.Finish(ctx, out); err != nil {
		return err
	}
	l.unfinished = nil
	if len(b.spans) > 0 {
		l.lag.Progressed()
	}
	l.observe(b, time.Since(start))
	return nil
}

// prepare decodes and checks every record: a bad one becomes a dead letter at once, a good one
// waits with its table.
func (l *Loader) prepare(recs []*kgo.Record, b *batch) error {
	items := make([]item, len(recs))
	var env envelope
	for i, r := range recs {
		s := l.parts[r.Partition]
		if s == nil {
			s = &partition{committed: -1, start: r.Offset}
			l.parts[r.Partition] = s
		}
		s.next, s.epoch = r.Offset+1, r.LeaderEpoch
		if s.start < 0 {
			s.start = r.Offset
		}

		class, err := "", error(nil)
		if derr := decodeEnvelope(r.Value, l.strings, &env); derr != nil {
			env = envelope{} // the letter keeps the original bytes instead
			class, err = "bad_envelope", fmt.Errorf("raw record is not a sluice.v1.Record: %w", derr)
		} else {
			class, err = validate(&env, l.validTables, l.cfg.MaxRecordBytes)
		}
		// The key and payload are slices of r.Value, which the item keeps.
		it := &items[i]
		*it = item{rec: r, job: env.job, task: env.task, run: env.run, table: env.table, schema: env.schema,
			key: env.key, payload: env.payload, extractedAt: env.extractedAt}
		if err != nil {
			if lerr := l.deadLetter(b, it, class, err); lerr != nil {
				return lerr
			}
			continue
		}
		tk := tableKey{it.table, it.schema}
		t := l.tables[tk]
		if t == nil {
			t = &table{name: it.table, schemaID: it.schema, told: map[string]bool{}}
			l.tables[tk] = t
		}
		t.items = append(t.items, it)
		l.pendingRows++
		l.pendingBytes += len(r.Value)
	}
	return nil
}

// load inserts a table's waiting records. Rows that ClickHouse rejects as bad data are found by
// splitting the block and dead-lettered alone; a schema failure holds the table's records, says so
// on their jobs' status, and dead-letters them once the grace has passed; a transient failure holds
// them until the next try.
func (l *Loader) load(tp *tablePlan, res insertResult, b *batch) {
	t := tp.t
	inserted, rejected, err := res.inserted, res.rejected, res.err
	for _, it := range inserted {
		b.count(it).loaded.add(it.rec.Offset)
	}
	done := make(map[*item]bool, len(inserted)+len(rejected))
	for _, it := range inserted {
		done[it] = true
	}
	for _, rj := range rejected {
		// dlq.Record fails only on what cannot be encoded, which it cleans first: were it to fail,
		// the record would have no letter, so the member stops rather than commit past it.
		if lerr := l.deadLetter(b, rj.item, rj.class, rj.err); lerr != nil {
			l.fatal = lerr
			return
		}
		done[rj.item] = true
	}
	l.forget(t, done)
	now := l.now()
	switch class := delivery.ClassOf(err); {
	case err == nil:
		if t.class == delivery.Schema {
			l.log.Info("table takes records again", "table", t.name)
			l.tell(t, b, true)
		}
		t.class, t.reason, t.attempt, t.since, t.retryAt = delivery.Transient, "", 0, time.Time{}, time.Time{}
	case class == delivery.Schema:
		if t.since.IsZero() {
			t.since = now
			l.log.Warn("table refuses records; holding them", "table", t.name, "records", len(t.items),
				"dead_letter_after", l.cfg.SchemaGrace.String(), "error", err)
		}
		t.class, t.reason = class, err.Error()
		if now.Sub(t.since) >= l.cfg.SchemaGrace {
			l.log.Warn("table still refuses records after the grace; dead-lettering them", "table", t.name,
				"records", len(t.items), "error", err)
			for _, it := range t.items {
				if lerr := l.deadLetter(b, it, "schema", fmt.Errorf("table %s refused the record for %s: %w",
					t.name, l.cfg.SchemaGrace, err)); lerr != nil {
					l.fatal = lerr
					return
				}
			}
			l.forget(t, nil)
			l.settle(t.key())
		} else {
			l.tell(t, b, false)
		}
		t.retryAt = now.Add(l.backoff.Delay(t.attempt) + time.Second)
		t.attempt++
	default:
		t.class, t.reason = delivery.Transient, err.Error()
		t.retryAt = now.Add(l.backoff.Delay(t.attempt))
		t.attempt++
	}
}

// insertResult is what insertTable did with one table's records.
type insertResult struct {
	inserted []*item
	rejected []rejection
	err      error
}

// rejection is a record that its table refused, with the dead-letter class and why: a value its
// schema does not take, or a row ClickHouse refused as bad data.
type rejection struct {
	item  *item
	class string
	err   error
}

// insertTable inserts a table's waiting records, block by block as tp plans them: it resolves
// their sink and the table's schema, builds each block (a record whose value does not fit is
// rejected there, with its column named), adds the columns that new fields call for when the sink
// evolves, and inserts it. The records of blocks known to be in count as inserted. It returns what
// is in, what is rejected, and the failure that stopped the rest (nil when nothing is left); the
// records of the block that failed wait, those rejected while building it too, and are rejected
// again on the next try.
func (l *Loader) insertTable(ctx context.Context, tp *tablePlan) (inserted []*item, rejected []rejection, err error) {
	t := tp.t
	inserted = tp.known
	if t.schemaID != "" && t.sink == nil {
		// Its own budget: a schemas topic that cannot be read must not take the other tables'.
		sctx, cancel := context.WithTimeout(ctx, l.cfg.FlushTimeout/8)
		sink, err := l.sinks.Sink(sctx, t.schemaID)
		cancel()
		switch {
		case errors.Is(err, catalog.ErrUnknown), errors.Is(err, catalog.ErrInvalid):
			for _, u := range tp.units {
				for _, it := range u.items {
					rejected = append(rejected, rejection{it, "unknown_schema", err})
				}
				u.blk.inserted = true
			}
			return inserted, rejected, nil
		case err != nil:
			return inserted, nil, delivery.New(delivery.Transient, "schemas", err)
		}
		t.sink = sink
	}
	for _, u := range tp.units {
		in, rej, err := l.insertUnit(ctx, t, u)
		inserted = append(inserted, in...)
		if err != nil {
			return inserted, rejected, err
		}
		rejected = append(rejected, rej...)
		u.blk.inserted = true
	}
	return inserted, rejected, nil
}

// insertUnit inserts the records of one planned block.
func (l *Loader) insertUnit(ctx context.Context, t *table, u *unit) (inserted []*item, rejected []rejection, err error) {
	loadedAt := time.Unix(u.blk.loadedAt, 0)
	for evolved := false; ; evolved = true {
		schema, err := l.writer.Schema(ctx, t.name, t.sink)
		if err != nil {
			return nil, nil, err
		}
		block := schema.NewBlock(len(u.items))
		good := make([]*item, 0, len(u.items))
		rejected = rejected[:0]
		for _, it := range u.items {
			in := chsink.Input{Key: it.key, Record: it.payload, Job: it.job, Task: it.task, Partition: it.rec.Partition,
				Offset: it.rec.Offset, ExtractedAt: it.extractedAt}
			if err := block.Add(&in); err != nil {
				rejected = append(rejected, rejection{it, fieldClass(err), err})
				continue
			}
			good = append(good, it)
		}
		if len(block.New) > 0 && !evolved {
			if err := l.writer.Evolve(ctx, t.name, block.New); err != nil {
				return nil, nil, err
			}
			continue
		}
		inserted, rej, err := l.insertRows(ctx, t.name, good, block, loadedAt)
		if err != nil {
			// What got in waits with the rest: the block is tried again whole, its halves formed
			// and named as before, so that the rows in come to the same blocks (dropped by their
			// tokens, or collapsed by the table), and it stays one block for a member that takes
			// the partition over.
			return nil, nil, err
		}
		l.metrics.fieldsDiscarded.Add(float64(block.Discarded))
		return inserted, append(rejected, rej...), nil
	}
}

// fieldClass is the dead-letter class of a record its schema refuses.
func fieldClass(err error) string {
	var fe *chsink.FieldError
	switch {
	case errors.As(err, &fe) && fe.Field == "*":
		return "bad_json"
	case errors.As(err, &fe) && fe.Field != "":
		return "unknown_field"
	}
	return "bad_value"
}

// insertRows inserts items, whose rows block holds, as one block, retrying transient failures while
// ctx lasts. On a data failure it inserts each half on its own, down to single rows, which are the
// rejected ones.
func (l *Loader) insertRows(ctx context.Context, name string, items []*item, rows *chsink.Block, loadedAt time.Time) ([]*item, []rejection, error) {
	if len(items) == 0 {
		return nil, nil, nil
	}
	// The token names the block's records: the same records always make the same block.
	first, last := items[0].rec, items[len(items)-1].rec
	token := fmt.Sprintf("%s-%s-%s-%d-%d-%d", name, items[0].schema, first.Topic, first.Partition, first.Offset, last.Offset)
	pol := delivery.Policy{Backoff: l.backoff, Deadline: l.cfg.FlushTimeout / 4}
	_, err := l.core.Retrier().Do(ctx, "insert", pol, func(int) error {
		began := l.now()
		err := l.writer.Insert(ctx, name, rows, loadedAt, token)
		if err == nil {
			l.metrics.insertSeconds.Observe(time.Since(began).Seconds())
			l.metrics.rowsInserted.Add(float64(rows.Len()))
		}
		return err
	})
	switch {
	case err == nil:
		return items, nil, nil
	case delivery.ClassOf(err) != delivery.Data:
		return nil, nil, err
	case len(items) == 1:
		return nil, []rejection{{items[0], "data", err}}, nil
	}
	mid := len(items) / 2
	inLeft, rejLeft, err := l.insertRows(ctx, name, items[:mid], rows.Slice(0, mid), loadedAt)
	if err != nil {
		return inLeft, rejLeft, err
	}
	inRight, rejRight, err := l.insertRows(ctx, name, items[mid:], rows.Slice(mid, rows.Len()), loadedAt)
	return append(inLeft, inRight...), append(rejLeft, rejRight...), err
}

// forget drops the done records (all of them for nil) from what waits for t; the rest wait in
// order.
func (l *Loader) forget(t *table, done map[*item]bool) {
	keep := t.items[:0:0]
	for _, it := range t.items {
		if done != nil && !done[it] {
			keep = append(keep, it)
			continue
		}
		l.pendingRows--
		l.pendingBytes -= len(it.rec.Value)
	}
	t.items = keep
}

// deadLetter adds the dead letter of it to the batch, counted for its job.
func (l *Loader) deadLetter(b *batch, it *item, class string, err error) error {
	letter, lerr := dlq.Record(l.topics.dlq, dlq.Letter{
		Stage: sluicev1.DeadLetter_STAGE_LOAD, ErrorClass: class, Err: err, Attempts: 1,
		Original: it.rec, JobID: it.job, TaskID: it.task, Payload: it.payload, FailedAt: l.now(),
	}, l.cfg.MaxRecordBytes)
	if lerr != nil {
		return delivery.New(delivery.Fatal, "bad_letter", lerr)
	}
	b.letters = append(b.letters, letter)
	s := b.count(it)
	if s.dead[class] == nil {
		s.dead[class] = &offsets{}
	}
	s.dead[class].add(it.rec.Offset)
	return nil
}

// tell puts on the status of every job with records waiting for t that its table refuses them, or,
// with cleared, that it takes them again.
func (l *Loader) tell(t *table, b *batch, cleared bool) {
	jobs := map[string]uint64{}
	if cleared {
		for job := range t.told {
			jobs[job] = 0
		}
	} else {
		for _, it := range t.items {
			if it.job != "" && !t.told[it.job] {
				jobs[it.job]++
			}
		}
	}
	for job, n := range jobs {
		held := &sluicev1.LoadHeld{Table: t.name, ErrorClass: "schema", Reason: strings.ToValidUTF8(t.reason, "\uFFFD"), Records: n, Cleared: cleared,
			Since: timestamppb.New(t.since), DeadLetterAt: timestamppb.New(t.since.Add(l.cfg.SchemaGrace))}
		b.events = append(b.events, &sluicev1.JobEvent{JobId: job, Producer: "loader", Event: &sluicev1.JobEvent_LoadHeld{LoadHeld: held}})
		if cleared {
			delete(t.told, job)
		} else {
			t.told[job] = true
		}
	}
}

func (l *Loader) observeHeld() {
	var transient, schema float64
	for _, t := range l.tables {
		switch {
		case len(t.items) == 0:
		case t.class == delivery.Schema:
			schema++
		case t.attempt > 0:
			transient++
		}
	}
	l.metrics.heldTables.WithLabelValues("transient").Set(transient)
	l.metrics.heldTables.WithLabelValues("schema").Set(schema)
}
