package main

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sluicedata/sluice/pkg/chsink"
	"github.com/sluicedata/sluice/pkg/delivery"
	"github.com/sluicedata/sluice/pkg/dlq"
	"github.com/sluicedata/sluice/pkg/events"
	sluicev1 "github.com/sluicedata/sluice/proto/sluice/v1"
)

// item is one raw record, decoded, on its way to its table.
type item struct {
	// Where the record is on the raw topic, and its Kafka key and value: not the *kgo.Record,
	// which would keep alive the whole slab of records franz-go allocated with it.
	partition             int32
	offset                int64
	owner                 *partition // the ownership the record was polled in
	rawKey, raw           []byte
	job, task, run, table string
	schema                string
	key                   string
	payload               []byte
	extractedAt           time.Time
	polled                time.Time
	// jobName and planned are the job's name and when this run of it was planned, from its id:
	// the row's $source (in the raw table) and the start of its version.
	jobName string
	planned time.Time
}

// table is the records waiting for one table with one sink schema, and what the table said last.
type table struct {
	name     string
	schemaID string // "" for the raw landing rows
	sink     *chsink.Sink
	items    []*item
	// bytes is the size of the waiting records.
	bytes int
	// rows is the most records a new block of the table takes. It starts at the batch size,
	// halves when an insert runs out of time or ClickHouse refuses a block for the partitions its
	// rows fall in (shrink), and doubles back while the table is behind.
	rows int
	// flying is set while a flight inserts the table's blocks.
	flying bool
	// ceiling is half the smallest block ClickHouse refused for its partitions, the most its
	// blocks grow back to (0: none was refused); timeouts counts the flights in a row that ran
	// out of time.
	ceiling, timeouts int
	// stalled is set when the table's records could make no block at the last plan (a block
	// recorded by the partition's last owner is not all polled, or the partition's commit metadata
	// is full): it is not due again until a record comes or a flight lands.
	stalled bool
	// class is the class of the last failed insert (transient or schema) while records wait.
	class   delivery.Class
	reason  string
	attempt int
	retryAt time.Time
	// since is when the table first refused records for a schema reason; after the grace the
	// loader dead-letters what it refuses.
	since time.Time
	// unclassifiedSince is when the table's inserts began to fail with an unclassified ClickHouse
	// error, and unclassified how many have since; past both bounds its next flight isolates the
	// rows that still fail.
	unclassifiedSince time.Time
	unclassified      int
	// told are the jobs whose status says that this table holds their records.
	told map[string]bool
}

// batch is what one step did: the records it finished and how, and the events that say so.
type batch struct {
	letters []*kgo.Record
	spans   map[span]*spanCount
	events  []*sluicev1.JobEvent
	// landed is set when a flight landed: the commit may move.
	landed bool
}

// flight is one table's blocks being inserted, off the loop: the loop goes on polling, and the
// other tables go on inserting, while a table is slow.
type flight struct {
	tp   *tablePlan
	res  insertResult
	done chan struct{}
}

// step takes the records just polled to their tables, lands the flights that are done, finishes
// what they did (dead letters, events, commit), and then starts a flight for every table that is
// due. What landed is finished before anything is planned: planning records the partitions'
// blocks, inserted ones too, which must not reach a commit before their dead letters do. drain
// makes every table due, whatever its blocks' size and age (at shutdown).
func (l *Loader) step(ctx context.Context, recs []*kgo.Record, drain bool) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := &batch{spans: map[span]*spanCount{}}
	if err := l.prepare(recs, b); err != nil {
		return err
	}
	if l.apply(b); l.fatal != nil {
		return l.fatal
	}
	if err := l.finish(ctx, b); err != nil {
		return err
	}
	// The tables due longest go first, as many as may insert at once.
	now := l.now()
	var due []*table
	at := map[*table]time.Time{}
	for _, t := range l.sortedTables() {
		if at[t] = l.dueAt(t, now); !at[t].IsZero() && (drain || !at[t].After(now)) {
			due = append(due, t)
		}
	}
	slices.SortStableFunc(due, func(a, b *table) int { return at[a].Compare(at[b]) })
	due = due[:min(len(due), max(l.cfg.InsertConcurrency-len(l.flights), 0))]
	if len(due) == 0 {
		return nil
	}
	// The blocks about to be inserted are recorded first: were they not, a member that takes a
	// partition over after a crash could form other blocks of the same records. When they cannot
	// be recorded nothing is inserted now.
	planned, err := l.planBlocks(ctx, due)
	if err != nil {
		l.log.Warn("record the blocks about to be inserted; trying again", "error", err)
		for _, t := range due {
			t.retryAt = now.Add(l.backoff.Delay(0))
		}
	}
	for _, tp := range planned {
		l.launch(tp)
	}
	return nil
}

// finish writes b's dead letters and events and commits what is done, after what an earlier step
// could not finish: b joins it, so that nothing is committed before it is and none of b's letters
// is lost. The caller holds mu.
func (l *Loader) finish(ctx context.Context, b *batch) error {
	l.metrics.pendingRows.Set(float64(l.pendingRows))
	l.observeHeld()
	out := l.unfinished
	if len(b.letters) > 0 || len(b.events) > 0 || len(b.spans) > 0 || b.landed {
		if out == nil {
			out = &delivery.Outcome{Commit: l.commit}
		}
		out.Letters = append(out.Letters, b.letters...)
		out.Events = append(append(out.Events, spanEvents(b.spans)...), b.events...)
		l.observe(b)
		if len(b.spans) > 0 {
			l.lag.Progressed()
		}
	}
	if out == nil {
		return nil
	}
	l.unfinished = out
	l.lag.Doing(fmt.Sprintf("writing %d dead letters, %d job events and the commit", len(out.Letters), len(out.Events)))
	if err := l.core.Finish(ctx, out); err != nil {
		return err
	}
	l.unfinished = nil
	return nil
}

// launch starts the flight of one table's plan. The caller holds mu.
func (l *Loader) launch(tp *tablePlan) {
	t := tp.t
	t.flying = true
	f := &flight{tp: tp, done: make(chan struct{})}
	l.flights = append(l.flights, f)
	// Inserts get half the flush timeout: dead letters, events and the commit the rest.
	ctx, cancel := context.WithTimeout(l.drainCtx, l.cfg.FlushTimeout/2)
	sink, name, schemaID := t.sink, t.name, t.schemaID
	tp.isolate = l.isolates(t, l.now())
	go func() {
		defer cancel()
		began := time.Now()
		f.res = l.insertTable(ctx, name, schemaID, sink, tp)
		f.res.took = time.Since(began)
		close(f.done) // before it is counted: the step that counts it finds the flight done
		l.landings.Add(1)
		l.wakeMu.Lock()
		if l.wake != nil {
			l.wake()
		}
		l.wakeMu.Unlock()
	}()
}

// apply lands every flight that is done: what it inserted, rejected and failed on goes to its
// table, its dead letters and events to b. The caller holds mu.
func (l *Loader) apply(b *batch) {
	l.applied = l.landings.Load()
	keep := l.flights[:0]
	for _, f := range l.flights {
		select {
		case <-f.done:
		default:
			keep = append(keep, f)
			continue
		}
		b.landed = true
		if l.fatal == nil {
			l.load(f.tp, f.res, b)
		}
	}
	clear(l.flights[len(keep):])
	l.flights = keep
	if b.landed {
		for _, t := range l.tables {
			t.stalled = false // a landed flight may have made room for blocks in the metadata
		}
	}
}

// land waits, while ctx lasts, for the flights in the air (those launched meanwhile too), and
// finishes what they did: before the partitions they insert for are revoked, and at shutdown.
func (l *Loader) land(ctx context.Context) error {
	for {
		l.mu.Lock()
		var flying []*flight
		for _, f := range l.flights {
			select {
			case <-f.done:
			default:
				flying = append(flying, f)
			}
		}
		l.mu.Unlock()
		if len(flying) == 0 {
			break
		}
		for _, f := range flying {
			select {
			case <-f.done:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	b := &batch{spans: map[span]*spanCount{}}
	if l.apply(b); l.fatal != nil {
		return l.fatal
	}
	return l.finish(ctx, b)
}

// dueAt returns when t is due for a flight: now when its records fill a block, when its
// oldest record has waited a flush interval, or when its last failure's retry comes; zero while
// it waits for nothing it can act on (no record, a flight in the air, or stalled).
func (l *Loader) dueAt(t *table, now time.Time) time.Time {
	if len(t.items) == 0 || t.flying || t.stalled {
		return time.Time{}
	}
	if !t.retryAt.IsZero() {
		return t.retryAt
	}
	if len(t.items) >= t.rows || t.bytes >= l.cfg.BatchBytes {
		return now
	}
	return t.items[0].polled.Add(l.cfg.FlushInterval)
}

// prepare decodes and checks every record: a bad one becomes a dead letter at once, a good one
// waits with its table.
func (l *Loader) prepare(recs []*kgo.Record, b *batch) error {
	items := make([]item, len(recs))
	polled := l.now()
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
		// The key and payload are slices of r.Value, which the item keeps (not r).
		it := &items[i]
		*it = item{partition: r.Partition, offset: r.Offset, owner: s, rawKey: r.Key, raw: r.Value, job: env.job, task: env.task,
			run: env.run, table: env.table, schema: env.schema, key: env.key, payload: env.payload,
			extractedAt: env.extractedAt, polled: polled}
		it.jobName, it.planned = l.jobRun(env.job)
		if err != nil {
			if lerr := l.deadLetter(b, it, class, err); lerr != nil {
				return lerr
			}
			continue
		}
		tk := tableKey{it.table, it.schema}
		t := l.tables[tk]
		if t == nil {
			t = &table{name: it.table, schemaID: it.schema, told: map[string]bool{}, rows: l.cfg.BatchRows}
			l.tables[tk] = t
		}
		l.hold(t, it)
	}
	return nil
}

// load inserts a table's waiting records. Rows that ClickHouse rejects as bad data are found by
// splitting the block and dead-lettered alone; a schema failure holds the table's records, says so
// on their jobs' status, and dead-letters them once the grace has passed; a transient failure holds
// them until the next try.
func (l *Loader) load(tp *tablePlan, res insertResult, b *batch) {
	t := tp.t
	t.flying = false
	if res.sink != nil {
		t.sink = res.sink
	}
	rows := 0
	for _, u := range tp.units[:res.units] {
		l.mark(u, true)
		l.metrics.batchRows.Observe(float64(len(u.items)))
		rows += len(u.items)
	}
	full := rows >= t.rows // the flight's blocks took the table's block size in all
	if len(tp.units) > 0 {
		l.metrics.Processing.Observe(res.took.Seconds())
	}
	inserted, rejected, err := res.inserted, res.rejected, res.err
	done := make(map[*item]bool, len(inserted)+len(rejected))
	for _, it := range inserted {
		if l.owns(it) {
			b.count(it).loaded.add(it.offset)
		}
		done[it] = true
	}
	for _, rj := range rejected {
		if !l.owns(rj.item) {
			continue // its partition's next owner letters it
		}
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
		t.timeouts, t.unclassified, t.unclassifiedSince = 0, 0, time.Time{}
		// A full block landed and another is waiting: the table is behind, and larger blocks are
		// fewer inserts (and parts) for the same records.
		if ceiling := cmp.Or(t.ceiling, l.cfg.BatchRows); full && len(t.items) >= t.rows && t.rows < ceiling {
			t.rows = min(2*t.rows, ceiling)
		}
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
		l.shrink(tp, res, err)
		if delivery.ReasonOf(err) == chsink.Unclassified {
			if t.unclassified == 0 {
				t.unclassifiedSince = now
				l.log.Warn("insert failed with an error sluice does not classify; retrying, then isolating the rows that still fail",
					"table", t.name, "attempts", l.cfg.UnclassifiedAttempts, "grace", l.cfg.UnclassifiedGrace.String(), "error", err)
			}
			t.unclassified++
		}
	}
}

// isolates reports whether t's next flight looks for the rows that an unclassified error is about:
// the error came back UnclassifiedAttempts times over at least UnclassifiedGrace, so that it is
// taken for the rows' (a view that throws on them, say) and no longer for the server's.
func (l *Loader) isolates(t *table, now time.Time) bool {
	return t.unclassified >= l.cfg.UnclassifiedAttempts && now.Sub(t.unclassifiedSince) >= l.cfg.UnclassifiedGrace
}

// shrink halves the blocks of a table whose insert ran out of time, or that ClickHouse refused
// because the block's rows fall in more partitions than one insert may write
// (max_partitions_per_insert_block), down to SLUICE_LOADER_BATCH_ROWS_MIN. Such a refused block
// was not written and never will be: it is planned again as smaller blocks, with the blocks of the
// flight after it that were never tried, and the table's blocks stay at half its size. A block that
// timed out is tried again whole, since part of it may be in; when it times out a second time in a
// row it is planned again smaller all the same (what landed twice, the table collapses). A table
// refused as too many parts because merges are behind keeps its block size: it waits for its
// retry, and smaller blocks would only make more parts.
func (l *Loader) shrink(tp *tablePlan, res insertResult, err error) {
	t := tp.t
	if res.units >= len(tp.units) {
		return // the failure came before the blocks (resolving the sink)
	}
	failed := tp.units[res.units]
	if b := l.find(failed); b != nil {
		b.tried = true
	}
	refused := refusedPartitions(err)
	timeout := delivery.ReasonOf(err) == "timeout"
	if timeout {
		t.timeouts++
	}
	if !refused && !timeout {
		return
	}
	t.rows = max(t.rows/2, min(l.cfg.BatchRowsMin, l.cfg.BatchRows))
	if refused {
		t.rows = min(t.rows, max(len(failed.items)/2, 1))
		t.ceiling = t.rows
	}
	if !refused && t.timeouts < 2 {
		return
	}
	if timeout {
		l.log.Warn("insert block timed out twice; planning its records again as smaller blocks", "table", t.name,
			"partition", failed.partition, "first", failed.blk.first, "last", failed.blk.last, "rows", len(failed.items))
	}
	l.mark(failed, false)
	for _, u := range tp.units[res.units+1:] {
		if b := l.find(u); b != nil && !b.tried {
			l.mark(u, false)
		}
	}
}

// refusedPartitions reports whether ClickHouse refused a block because its rows fall in more
// partitions than one insert may write: the same block is refused every time.
func refusedPartitions(err error) bool {
	return delivery.ReasonOf(err) == "too_many_parts" && strings.Contains(err.Error(), "partitions for single INSERT block")
}

// mark finds the block of u among its partition's blocks and marks it inserted or, with inserted
// false, drops it: its records are planned again.
func (l *Loader) mark(u *unit, inserted bool) {
	b := l.find(u)
	switch {
	case b == nil: // revoked since: its next owner finds the block planned
	case inserted:
		b.inserted = true
	default:
		s := l.parts[u.partition]
		s.blocks = slices.DeleteFunc(s.blocks, func(x *block) bool { return x == b })
	}
}

// find returns the planned block of u among its partition's blocks: compacting them copies them.
// Nil when the ownership u was planned in ended: the next ownership's blocks are its own.
func (l *Loader) find(u *unit) *block {
	s := l.parts[u.partition]
	if s == nil || s != u.owner {
		return nil
	}
	i := slices.IndexFunc(s.blocks, func(b *block) bool {
		return b.table == u.blk.table && b.first == u.blk.first && b.last == u.blk.last && !b.inserted
	})
	if i < 0 {
		return nil
	}
	return s.blocks[i]
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
		l.release(t, it)
	}
	t.items = keep
}

// hold adds it to what waits for t.
func (l *Loader) hold(t *table, it *item) {
	t.items = append(t.items, it)
	t.bytes += len(it.raw)
	l.pendingRows++
	l.pendingBytes += len(it.raw)
	t.stalled = false
}

// release counts it out of what waits for t; the caller drops it from t.items.
func (l *Loader) release(t *table, it *item) {
	t.bytes -= len(it.raw)
	l.pendingRows--
	l.pendingBytes -= len(it.raw)
}

// deadLetter adds the dead letter of it to the batch, counted for its job.
func (l *Loader) deadLetter(b *batch, it *item, class string, err error) error {
	// The envelope without its payload goes with the letter, for a replay; one that does not decode
	// (the letter's cause, then) stays out, and the letter keeps the raw message instead (a nil
	// payload). A record whose payload is empty keeps it empty.
	var env sluicev1.Record
	envelope, payload := &env, it.payload
	if proto.Unmarshal(it.raw, &env) != nil {
		envelope = nil
	} else if env.Payload = nil; payload == nil {
		payload = []byte{}
	}
	letter, lerr := dlq.Record(l.topics.dlq, dlq.Letter{
		Stage: sluicev1.DeadLetter_STAGE_LOAD, ErrorClass: class, Err: err, Attempts: 1,
		JobID: it.job, TaskID: it.task, Payload: payload, FailedAt: l.now(), Record: envelope,
		Original: &kgo.Record{Topic: l.topics.raw, Partition: it.partition, Offset: it.offset, Key: it.rawKey, Value: it.raw},
	}, l.cfg.MaxRecordBytes)
	if lerr != nil {
		return delivery.New(delivery.Fatal, "bad_letter", lerr)
	}
	b.letters = append(b.letters, letter)
	s := b.count(it)
	if s.dead[class] == nil {
		s.dead[class] = &offsets{}
	}
	s.dead[class].add(it.offset)
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

// jobRun returns the name of a job and when the run was planned, from its id (events.ParseJobID):
// the id whole, and the zero time, for an id of another form. The caller holds mu.
func (l *Loader) jobRun(id string) (string, time.Time) {
	if r, ok := l.jobRuns[id]; ok {
		return r.name, r.planned
	}
	if l.jobRuns == nil || len(l.jobRuns) >= maxInterned {
		l.jobRuns = map[string]jobRun{}
	}
	name, planned, _ := events.ParseJobID(id)
	l.jobRuns[id] = jobRun{name, planned}
	return name, planned
}

// jobRun is a job's name and when a run of it was planned.
type jobRun struct {
	name    string
	planned time.Time
}
