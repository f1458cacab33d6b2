package main

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicedata/sluice/pkg/chsink"
	"github.com/sluicedata/sluice/pkg/delivery"
	"github.com/sluicedata/sluice/pkg/kafka"
	"github.com/sluicedata/sluice/pkg/pipeline"
)

// batchWriter is what the loader needs of ClickHouse, with errors classified (chsink.Classify):
// the inserter's table schemas and the sink its blocks go to.
type batchWriter interface {
	tableSchemas
	blockSink
}

// sinkCatalog resolves the sink schema ids that typed jobs' records carry (catalog.Catalog).
type sinkCatalog interface {
	Sink(ctx context.Context, id string) (*chsink.Sink, error)
}

var _ batchWriter = (*chsink.Writer)(nil)

// Loader consumes the raw topic in a consumer group and inserts the records into ClickHouse, table
// by table. It commits a partition only up to its first record that is neither inserted nor
// acknowledged by the dead-letter topic, so that a table that refuses its records holds back the
// commit without holding back the other tables.
//
// It is a loop over its parts: the poller reads the raw topic and knows the partitions owned, the
// batcher holds the records waiting for their tables and says which are due, the committer plans
// each table's blocks, records them in the commit metadata and commits, the inserter puts a flight
// of blocks into ClickHouse, and the finisher writes dead letters and events before each commit.
type Loader struct {
	cfg     LoaderConfig
	log     *slog.Logger
	metrics *loaderMetrics
	lag     *kafka.LagReporter

	// mu guards the parts' state, which the loop, the rebalance callbacks (on franz-go's
	// goroutines) and the landing of flights change: the partitions owned and their blocks, the
	// records waiting for their tables, the flights in the air and what is unfinished. A flight
	// itself (the inserter) runs without it, on its plan alone.
	mu       sync.Mutex
	poller   *poller
	batcher  *batcher
	blocks   *committer
	inserter *inserter
	flights  *flights
	out      *finisher
}

// newLoader returns a loader of the raw topic that is ready for its rebalance callbacks (assigned,
// revoked, lost), which go into the options of its Kafka client: connect then gives it that
// client and the rest.
func newLoader(cfg LoaderConfig, t topics, lag *kafka.LagReporter, backoff pipeline.Backoff) *Loader {
	l := &Loader{cfg: cfg, lag: lag, log: slog.New(slog.DiscardHandler),
		poller:   newPoller(t.raw),
		batcher:  newBatcher(cfg, backoff),
		inserter: newInserter(t.raw, cfg.FlushTimeout/2, backoff), // the other half is the letters', events' and commit's
		flights:  newFlights(cfg.FlushTimeout / 2),
	}
	l.blocks = newCommitter(t.raw, cfg.Group, l.poller.parts, cfg.BatchBytes)
	l.out = &finisher{topics: t, maxRecordBytes: cfg.MaxRecordBytes, now: time.Now, doing: lag.Doing,
		// A failed commit is not retried: the records are in, and whoever owns the partitions
		// next gets them again, and finds their blocks planned or inserted in the last commit
		// that went through.
		commit: func(ctx context.Context) error {
			if err := l.blocks.commit(ctx, l.blocks.offsets(l.batcher.offsets()), true); err != nil {
				l.log.Warn("commit offsets failed; the records will be redelivered", "error", err)
			}
			return nil
		}}
	return l
}

// links are what a loader works with once its Kafka client is made.
type links struct {
	cl *kgo.Client
	// denied takes the fetch and group errors: a refusal of this member's rights fails readiness.
	denied func(error) bool
	// writer is ClickHouse: the tables' schemas, and the sink of every block.
	writer  batchWriter
	sinks   sinkCatalog
	core    *delivery.Core
	log     *slog.Logger
	metrics *loaderMetrics
	// tokens is set when the server takes insert deduplication tokens (22.2 and later).
	tokens bool
}

// connect gives the loader's parts their links.
func (l *Loader) connect(k links) {
	l.log, l.metrics = k.log, k.metrics
	l.poller.cl, l.poller.denied, l.poller.log = k.cl, k.denied, k.log
	l.blocks.cl = k.cl
	in := l.inserter
	in.sink, in.schemas, in.sinks, in.retrier, in.log, in.metrics = k.writer, k.writer, k.sinks, k.core.Retrier(), k.log, k.metrics
	in.tokens.Store(k.tokens)
	l.out.core = k.core
}

// Run polls, inserts and commits until ctx ends. The tables insert in flights of their own while
// the loop polls on; each step lands the flights that are done and commits what they did. At
// shutdown the tables get their last flights within the drain timeout; what they cannot finish is
// not committed and is redelivered.
func (l *Loader) Run(ctx context.Context) error {
	drainCtx, cancelDrain := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelDrain()
	stop := context.AfterFunc(ctx, func() { time.AfterFunc(l.cfg.DrainTimeout, cancelDrain) })
	defer stop()
	l.mu.Lock()
	l.flights.ctx = drainCtx
	l.mu.Unlock()

	for {
		recs := l.collect(ctx)
		drain := ctx.Err() != nil
		// A step holds off rebalances; it is bounded well under the rebalance timeout, and so are
		// the flights, which a revocation waits for.
		stepCtx, cancel := context.WithTimeout(drainCtx, l.cfg.FlushTimeout/2)
		err := l.step(stepCtx, recs, drain)
		cancel()
		if drain && err == nil {
			err = l.drain(drainCtx)
		}
		l.poller.allowRebalance()
		switch {
		case err == nil:
		case drainCtx.Err() != nil:
			l.mu.Lock()
			pending := l.batcher.pending()
			l.mu.Unlock()
			l.log.Warn("records abandoned at shutdown; they will be redelivered", "records", pending)
			return nil
		case delivery.ClassOf(err) == delivery.Fatal:
			return err
		default:
			l.log.Warn("dead letters, events or commit not written in time; trying again", "error", err,
				"timeout", (l.cfg.FlushTimeout / 2).String())
		}
		if drain {
			return nil
		}
	}
}

// drain runs at shutdown, while ctx lasts: the flights in the air land, and the tables that
// still hold records get a last flight, for a few passes at most (a table that cannot insert
// keeps its records, which are redelivered).
func (l *Loader) drain(ctx context.Context) error {
	for pass := 0; ; pass++ {
		err := l.land(ctx)
		l.mu.Lock()
		pending := l.batcher.pending()
		l.mu.Unlock()
		if err != nil || pass == 3 || pending == 0 {
			return err
		}
		if err := l.step(ctx, nil, true); err != nil {
			return err
		}
	}
}

// collect polls until it has records, a table is due (its blocks full or old enough, or its retry
// come), a flight lands, or ctx ends. It polls nothing while the tables hold as much as the loader
// may buffer: backpressure is lag.
func (l *Loader) collect(ctx context.Context) []*kgo.Record {
	l.mu.Lock()
	due, room := l.batcher.waiting(len(l.flights.inAir), l.out.unfinished != nil)
	l.mu.Unlock()
	if room == 0 {
		// Planned blocks whose records are not all here yet would wait for ever: their partitions
		// are read on, the others paused.
		l.mu.Lock()
		need := l.blocks.incomplete()
		pause, pending := l.poller.others(need), l.batcher.pending()
		l.mu.Unlock()
		if len(need) == 0 {
			l.lag.Doing(fmt.Sprintf("waiting: %d records wait for their tables", pending))
			l.poller.allowRebalance()
			l.flights.sleep(ctx, due)
			return nil
		}
		l.poller.pause(pause)
		room = l.cfg.BatchRows
	} else {
		l.poller.resume()
	}
	l.lag.Doing("polling the raw topic")
	return l.poller.poll(ctx, room, func(ctx context.Context) (context.Context, func()) { return l.flights.wakeable(ctx, due) })
}

// step takes the records just polled to their tables, lands the flights that are done, finishes
// what they did (dead letters, events, commit), and then starts a flight for every table that is
// due. What landed is finished before anything is planned: planning records the partitions'
// blocks, inserted ones too, which must not reach a commit before their dead letters do. drain
// makes every table due, whatever its blocks' size and age (at shutdown).
func (l *Loader) step(ctx context.Context, recs []*kgo.Record, drain bool) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := newBatch()
	if err := l.prepare(recs, b); err != nil {
		return err
	}
	if l.apply(b); l.out.fatal != nil {
		return l.out.fatal
	}
	if err := l.finish(ctx, b); err != nil {
		return err
	}
	// The tables due longest go first, as many as may insert at once.
	now := l.batcher.now()
	due := l.batcher.due(now, drain, l.cfg.InsertConcurrency-len(l.flights.inAir))
	if len(due) == 0 {
		return nil
	}
	// The partitions whose commits could not be read when they were assigned are read again,
	// without mu: a rebalance may go on meanwhile.
	if unread := l.blocks.unread(); len(unread) > 0 {
		l.mu.Unlock()
		resp, err := l.blocks.fetch(ctx, l.blocks.cl)
		l.mu.Lock()
		l.blocks.record(unread, resp, err)
		if err != nil {
			l.log.Warn("read the committed offsets of owned partitions; their records wait", "error", err)
		}
	}
	// The blocks about to be inserted are recorded first: were they not, a member that takes a
	// partition over after a crash could form other blocks of the same records. When they cannot
	// be recorded nothing is inserted now.
	planned, err := l.blocks.plan(ctx, due)
	if err != nil {
		l.log.Warn("record the blocks about to be inserted; trying again", "error", err)
		l.batcher.later(due, now)
	}
	for _, tp := range planned {
		t := tp.t
		t.flying = true
		tp.isolate = t.isolates(l.batcher.now(), l.cfg.UnclassifiedAttempts, l.cfg.UnclassifiedGrace)
		sink, name, schemaID := t.sink, t.name, t.schemaID
		l.flights.launch(tp, func(ctx context.Context) insertResult {
			return l.inserter.insertTable(ctx, name, schemaID, sink, tp)
		})
	}
	return nil
}

// prepare decodes and checks every record: a bad one becomes a dead letter at once, a good one
// waits with its table. The caller holds mu.
func (l *Loader) prepare(recs []*kgo.Record, b *batch) error {
	items := make([]item, len(recs))
	polled := l.batcher.now()
	for i, r := range recs {
		it := &items[i]
		if class, err := l.batcher.decode(r, l.poller.take(r), polled, it); err != nil {
			if lerr := l.out.letter(b, it, class, err); lerr != nil {
				return lerr
			}
			continue
		}
		l.batcher.add(it)
	}
	return nil
}

// finish writes b's dead letters and events and commits what is done, after what an earlier step
// could not finish: b joins it, so that nothing is committed before it is and none of b's letters
// is lost. The caller holds mu.
func (l *Loader) finish(ctx context.Context, b *batch) error {
	l.metrics.pendingRows.Set(float64(l.batcher.pending()))
	transient, schema := l.batcher.held()
	l.metrics.heldTables.WithLabelValues("transient").Set(transient)
	l.metrics.heldTables.WithLabelValues("schema").Set(schema)
	if !b.empty() {
		l.metrics.observe(b)
		if len(b.spans) > 0 {
			l.lag.Progressed()
		}
	}
	return l.out.finish(ctx, b)
}

// apply lands every flight that is done: what it inserted, rejected and failed on goes to its
// table, its dead letters and events to b. The caller holds mu.
func (l *Loader) apply(b *batch) {
	for _, f := range l.flights.landed() {
		b.landed = true
		if l.out.fatal == nil {
			l.load(f.tp, f.res, b)
		}
	}
	if b.landed {
		for _, t := range l.batcher.tables {
			t.stalled = false // a landed flight may have made room for blocks in the metadata
		}
	}
}

// land waits, while ctx lasts, for the flights in the air (those launched meanwhile too), and
// finishes what they did: before the partitions they insert for are revoked, and at shutdown.
func (l *Loader) land(ctx context.Context) error {
	for {
		l.mu.Lock()
		flying := l.flights.flying()
		l.mu.Unlock()
		if len(flying) == 0 {
			break
		}
		if err := wait(ctx, flying); err != nil {
			return err
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	b := newBatch()
	if l.apply(b); l.out.fatal != nil {
		return l.out.fatal
	}
	return l.finish(ctx, b)
}

// load takes what a flight did with a table's records. Rows that ClickHouse rejected as bad data
// (found by splitting the block) are dead-lettered alone; a schema failure holds the table's
// records, says so on their jobs' status, and dead-letters them once the grace has passed; a
// transient failure holds them until the next try. What belongs to an ownership that ended is
// left to the partition's next owner. The caller holds mu.
func (l *Loader) load(tp *tablePlan, res insertResult, b *batch) {
	t := tp.t
	t.flying = false
	if res.sink != nil {
		t.sink = res.sink
	}
	rows := 0
	for i, u := range tp.units[:res.units] {
		if token, ok := res.parked[i]; ok {
			l.blocks.parked(u, token) // part of it is in; the rest waits
			continue
		}
		l.blocks.mark(u, true)
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
		if l.poller.owns(it) {
			b.count(it).loaded.add(it.offset)
		}
		done[it] = true
	}
	for _, rj := range rejected {
		if !l.poller.owns(rj.item) {
			continue // its partition's next owner letters it
		}
		// dlq.Record fails only on what cannot be encoded, which it cleans first: were it to fail,
		// the record would have no letter, so the member stops rather than commit past it.
		if lerr := l.out.letter(b, rj.item, rj.class, rj.err); lerr != nil {
			l.out.fatal = lerr
			return
		}
		done[rj.item] = true
	}
	l.batcher.forget(t, done)
	now := l.batcher.now()
	switch class := delivery.ClassOf(err); {
	case err == nil:
		if t.class == delivery.Schema {
			l.log.Info("table takes records again", "table", t.name)
			t.tell(b, true, l.cfg.SchemaGrace)
		}
		t.succeeded(full, l.cfg.BatchRows)
	case class == delivery.Schema:
		if t.since.IsZero() {
			t.since = now
			l.log.Warn("table refuses records; holding them", "table", t.name, "records", len(t.items),
				"dead_letter_after", l.cfg.SchemaGrace.String(), "error", err)
		}
		t.failed(class, err, l.batcher.backoff.Delay(t.attempt)+time.Second, now)
		if now.Sub(t.since) >= l.cfg.SchemaGrace {
			l.log.Warn("table still refuses records after the grace; dead-lettering them", "table", t.name,
				"records", len(t.items), "error", err)
			for _, it := range t.items {
				if lerr := l.out.letter(b, it, "schema", fmt.Errorf("table %s refused the record for %s: %w",
					t.name, l.cfg.SchemaGrace, err)); lerr != nil {
					l.out.fatal = lerr
					return
				}
			}
			l.batcher.forget(t, nil)
			l.blocks.settle(t.key())
		} else {
			t.tell(b, false, l.cfg.SchemaGrace)
		}
	default:
		t.failed(delivery.Transient, err, l.batcher.backoff.Delay(t.attempt), now)
		if _, parked := res.parked[res.units]; res.units < len(tp.units) && !parked { // the failure came at a block, not before them (resolving the sink)
			failed := tp.units[res.units]
			l.blocks.tried(failed)
			if t.shrink(len(failed.items), err, min(l.cfg.BatchRowsMin, l.cfg.BatchRows)) {
				if delivery.ReasonOf(err) == "timeout" {
					l.log.Warn("insert block timed out twice; planning its records again as smaller blocks", "table", t.name,
						"partition", failed.partition, "first", failed.blk.first, "last", failed.blk.last, "rows", len(failed.items))
				}
				l.blocks.replan(failed, tp.units[res.units+1:])
			}
		}
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

// assigned reads, for the raw partitions just assigned, the committed offset and the blocks its
// metadata records (and the raw topic's id, which insert tokens name). It runs in the group's
// rebalance. A partition whose offsets cannot be read is marked so: nothing of it is inserted or
// committed (which would overwrite its last owner's blocks) until a plan reads them.
func (l *Loader) assigned(ctx context.Context, cl *kgo.Client, assigned map[string][]int32) {
	ps := assigned[l.poller.topic]
	if len(ps) == 0 {
		return
	}
	if l.inserter.tokens.Load() {
		l.inserter.readTopicID(ctx, cl)
	}
	var err error
	for attempt := range 3 {
		var resp kadm.OffsetResponses
		resp, err = l.blocks.fetch(ctx, cl)
		l.mu.Lock()
		l.blocks.record(ps, resp, err)
		l.mu.Unlock()
		if err == nil {
			return
		}
		pipeline.Sleep(ctx, time.Duration(attempt+1)*200*time.Millisecond)
	}
	l.log.Warn("read the committed offsets of assigned partitions; trying again before their first insert", "error", err)
}

// revoked runs in the group's rebalance, for partitions revoked: their waiting records go, and the
// new owner fetches them again from the committed offset. The flights in the air land first, and
// what they did is committed.
func (l *Loader) revoked(ctx context.Context, _ *kgo.Client, partitions map[string][]int32) {
	ps := partitions[l.poller.topic]
	if len(ps) == 0 {
		return // franz-go's cooperative protocol calls this at the end of every session
	}
	// What is in the air lands, and is committed, before the partitions go. With the step that
	// may run before, a rebalance waits at most the flush timeout.
	landCtx, cancel := context.WithTimeout(ctx, l.cfg.FlushTimeout/2)
	if err := l.land(landCtx); err != nil {
		l.log.Warn("land the inserts in the air before the rebalance; their records will be redelivered", "error", err)
	}
	cancel()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.batcher.drop(l.poller.drop(ps))
	l.metrics.pendingRows.Set(float64(l.batcher.pending()))
}

// lost runs when the group session expired: the partitions may be someone else's already, so
// nothing of them is landed or committed. Their waiting records go; a flight in the air for them
// lands into nothing (load skips what this member no longer owns: no event, no letter, no commit),
// and their next owner loads them again from the committed offset.
func (l *Loader) lost(_ context.Context, _ *kgo.Client, partitions map[string][]int32) {
	ps := partitions[l.poller.topic]
	if len(ps) == 0 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.log.Warn("partitions lost: the group session expired; nothing of them is committed, their next owner loads them again",
		"partitions", ps)
	l.batcher.drop(l.poller.drop(ps))
	l.metrics.pendingRows.Set(float64(l.batcher.pending()))
}
