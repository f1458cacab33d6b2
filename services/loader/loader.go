package main

import (
	"cmp"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicedata/sluice/pkg/chsink"
	"github.com/sluicedata/sluice/pkg/delivery"
	"github.com/sluicedata/sluice/pkg/kafka"
	"github.com/sluicedata/sluice/pkg/pipeline"
)

// batchWriter is what the loader needs of ClickHouse, with errors classified (chsink.Classify):
// the schema of a table for a sink, the columns that new fields call for, and an insert.
type batchWriter interface {
	Schema(ctx context.Context, table string, sink *chsink.Sink) (*chsink.Schema, error)
	Evolve(ctx context.Context, table string, fields map[string]*chsink.Inference) error
	Insert(ctx context.Context, table string, block *chsink.Block, loadedAt time.Time, token string) error
}

// sinkCatalog resolves the sink schema ids that typed jobs' records carry (catalog.Catalog).
type sinkCatalog interface {
	Sink(ctx context.Context, id string) (*chsink.Sink, error)
}

// tableKey is a table and a sink schema ("" for the raw landing rows): the records of one insert.
type tableKey struct{ table, schema string }

var _ batchWriter = (*chsink.Writer)(nil)

// Loader consumes the raw topic in a consumer group and inserts the records into ClickHouse, table
// by table. It commits a partition only up to its first record that is neither inserted nor
// acknowledged by the dead-letter topic, so that a table that refuses its records holds back the
// commit without holding back the other tables.
type Loader struct {
	cl *kgo.Client
	// denied takes the fetch and group errors: a refusal of this member's rights fails readiness.
	denied  func(error) bool
	writer  batchWriter
	sinks   sinkCatalog
	core    *delivery.Core
	cfg     LoaderConfig
	topics  topics
	log     *slog.Logger
	metrics *loaderMetrics
	lag     *kafka.LagReporter
	backoff pipeline.Backoff
	now     func() time.Time

	// mu guards what the rebalance callbacks change: the owned partitions and the records waiting
	// for their tables.
	mu     sync.Mutex
	tables map[tableKey]*table
	parts  map[int32]*partition
	// pendingRows and pendingBytes are what the tables hold in all: the bound on buffering.
	pendingRows, pendingBytes int
	// unfinished is a batch whose rows are in but whose dead letters, events or commit are not yet
	// acknowledged: nothing else is committed before it is.
	unfinished *delivery.Outcome
	// fatal is a record that could not get a dead letter: the member stops without committing.
	fatal error
	// strings interns the envelopes' repeating strings, validTables are the table names found
	// valid, and jobRuns the jobs' names and planning times by job id: each only grows up to
	// maxInterned, and is used under mu.
	strings     interner
	validTables map[string]bool
	jobRuns     map[string]jobRun
	// tokens is set when the server takes insert deduplication tokens (22.2 and later): only then
	// are they computed. topicID is the raw topic's id, read at start and at every assignment.
	tokens  atomic.Bool
	topicID atomic.Pointer[string]
	// paused are the raw partitions collect paused (only collect's goroutine uses it).
	paused []int32
	// flights are the tables' inserts in the air; drainCtx is theirs, and outlives Run's context
	// by the drain timeout. A flight that is done counts itself in landings and calls wake, which
	// ends the poll or the wait in progress; applied is landings when the flights were last
	// looked at, so that a landing between two polls is not missed either.
	flights  []*flight
	drainCtx context.Context
	landings atomic.Int64
	applied  int64
	wakeMu   sync.Mutex
	wake     context.CancelFunc
}

type topics struct{ raw, dlq string }

// partition is what the loader knows of one raw-topic partition it owns.
type partition struct {
	epoch     int32
	next      int64 // one past the highest offset polled in this ownership
	committed int64
	// start is where this ownership began reading: what a commit with no committed offset before
	// it commits.
	start int64
	// blocks are the partition's blocks at or past the committed offset, planned or inserted, and
	// recorded is the metadata that the last commit recorded them with.
	blocks   []*block
	recorded string
	// unread is a partition whose committed offset and blocks could not be read when it was
	// assigned: nothing of it is inserted or committed until they are.
	unread bool
}

type loaderMetrics struct {
	*pipeline.Metrics
	rowsInserted  prometheus.Counter
	insertSeconds prometheus.Histogram
	batchRows     prometheus.Histogram
	pendingRows   prometheus.Gauge
	heldTables    *prometheus.GaugeVec
	// fieldsDiscarded counts record fields that no column of a typed table took.
	fieldsDiscarded prometheus.Counter
}

func newLoaderMetrics(reg prometheus.Registerer, shared *pipeline.Metrics) *loaderMetrics {
	f := promauto.With(reg)
	return &loaderMetrics{
		Metrics: shared,
		rowsInserted: f.NewCounter(prometheus.CounterOpts{
			Name: "loader_rows_inserted_total",
			Help: "Rows inserted into ClickHouse.",
		}),
		insertSeconds: f.NewHistogram(prometheus.HistogramOpts{
			Name:    "loader_insert_seconds",
			Help:    "Duration of one successful insert.",
			Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}),
		batchRows: f.NewHistogram(prometheus.HistogramOpts{
			Name:    "loader_batch_rows",
			Help:    "Records per insert block.",
			Buckets: prometheus.ExponentialBuckets(1, 4, 10),
		}),
		pendingRows: f.NewGauge(prometheus.GaugeOpts{
			Name: "loader_pending_rows",
			Help: "Records polled and not yet inserted or dead-lettered, all tables together.",
		}),
		heldTables: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "loader_held_tables",
			Help: "Tables whose records wait because the last insert failed, by class (transient, schema).",
		}, []string{"class"}),
		fieldsDiscarded: f.NewCounter(prometheus.CounterOpts{
			Name: "loader_fields_discarded_total",
			Help: "Record fields that no column of their typed table took, dropped (on_new_field: discard).",
		}),
	}
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
	l.drainCtx = drainCtx
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
		l.cl.AllowRebalance()
		switch {
		case err == nil:
		case drainCtx.Err() != nil:
			l.log.Warn("records abandoned at shutdown; they will be redelivered", "records", l.pending())
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
		if err := l.land(ctx); err != nil || pass == 3 || l.pending() == 0 {
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
	due, room := l.waiting()
	if room == 0 {
		// Planned blocks whose records are not all here yet would wait for ever: their partitions
		// are read on, the others paused.
		need := l.incompleteParts()
		if len(need) == 0 {
			l.lag.Doing(fmt.Sprintf("waiting: %d records wait for their tables", l.pending()))
			l.cl.AllowRebalance()
			l.sleep(ctx, due)
			return nil
		}
		l.pauseBut(need)
		room = l.cfg.BatchRows
	} else {
		l.resume()
	}
	l.lag.Doing("polling the raw topic")
	for {
		// A poll that returned nothing to work on (no fetch, or only franz-go's injected error
		// fetch while the group rejoins) still holds off rebalances until AllowRebalance.
		// Polling again without a deadline would wait for records that only the rebalance it
		// blocks can bring: after a broker restart the whole group would wait on this member.
		l.cl.AllowRebalance()
		pollCtx, done := l.wakeable(ctx, due)
		fetches := l.cl.PollRecords(pollCtx, room)
		woken := pollCtx.Err() != nil
		done()
		if fetches.IsClientClosed() {
			return nil
		}
		fetches.EachError(func(topic string, partition int32, err error) {
			if !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
				if l.denied != nil {
					l.denied(err)
				}
				l.log.Warn("fetch failed", "topic", topic, "partition", partition, "error", err)
			}
		})
		recs := fetches.Records()
		if len(recs) > 0 || woken {
			return recs
		}
	}
}

// landed reports whether a flight landed since the flights were last looked at.
func (l *Loader) landed() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.landings.Load() != l.applied
}

// sleep waits until at (for ever when zero), a flight lands, or ctx ends.
func (l *Loader) sleep(ctx context.Context, at time.Time) {
	ctx, done := l.wakeable(ctx, at)
	defer done()
	<-ctx.Done()
}

// wakeable returns a context that ends with ctx, at at (never when zero), or when a flight lands
// (or has landed since the flights were last looked at), and a func that releases it.
func (l *Loader) wakeable(ctx context.Context, at time.Time) (context.Context, func()) {
	c, cancel := context.WithCancel(ctx)
	if !at.IsZero() {
		cancel()
		c, cancel = context.WithDeadline(ctx, at)
	}
	l.wakeMu.Lock()
	l.wake = cancel
	l.wakeMu.Unlock()
	if l.landed() { // after wake is set: a flight either sees it or is counted here
		cancel()
	}
	return c, func() {
		l.wakeMu.Lock()
		l.wake = nil
		l.wakeMu.Unlock()
		cancel()
	}
}

// waiting returns when the first table is due for a flight (zero when none is), and how many more
// records the loader may hold: none when the tables hold as much as it may buffer.
func (l *Loader) waiting() (due time.Time, room int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	for _, t := range l.tables {
		if at := l.dueAt(t, now); !at.IsZero() && (due.IsZero() || at.Before(due)) {
			due = at
		}
	}
	if len(l.flights) >= l.cfg.InsertConcurrency {
		due = time.Time{} // no table may insert before a flight lands, which wakes the loop
	}
	room = min(2*l.cfg.BatchRows-l.pendingRows, l.cfg.BatchRows)
	if l.unfinished != nil || l.pendingBytes >= l.cfg.MaxPendingBytes || room <= 0 {
		room = 0
	}
	if l.unfinished != nil && due.IsZero() {
		due = now.Add(l.cfg.FlushInterval)
	}
	return due, room
}

// incompleteParts is incomplete under mu.
func (l *Loader) incompleteParts() []int32 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.incomplete()
}

// pauseBut pauses fetching every raw partition but need; resume undoes it.
func (l *Loader) pauseBut(need []int32) {
	l.mu.Lock()
	var pause []int32
	for p := range l.parts {
		if !slices.Contains(need, p) {
			pause = append(pause, p)
		}
	}
	l.mu.Unlock()
	l.resume()
	if len(pause) > 0 {
		l.cl.PauseFetchPartitions(map[string][]int32{l.topics.raw: pause})
		l.paused = pause
	}
}

func (l *Loader) resume() {
	if len(l.paused) > 0 {
		l.cl.ResumeFetchPartitions(map[string][]int32{l.topics.raw: l.paused})
		l.paused = nil
	}
}

func (l *Loader) pending() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.pendingRows
}

// readTopicID reads the raw topic's id, which the tokens of inserts name; it keeps the last one it
// read when the broker does not answer (a topic recreated meanwhile differs in the tokens' content
// hash all the same).
func (l *Loader) readTopicID(ctx context.Context, cl *kgo.Client) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	topics, err := kadm.NewClient(cl).ListTopics(ctx, l.topics.raw)
	if err == nil {
		err = topics.Error()
	}
	d, ok := topics[l.topics.raw]
	if err != nil || !ok || d.ID == (kadm.TopicID{}) {
		l.log.Warn("read the raw topic's id for the insert tokens; keeping the last one", "topic", l.topics.raw, "error", err)
		return
	}
	id := hex.EncodeToString(d.ID[:])
	if old := l.topicID.Swap(&id); old != nil && *old != id {
		l.log.Warn("the raw topic was created again: its id changed", "topic", l.topics.raw, "was", *old, "now", id)
	}
}

// revoked runs in the group's rebalance, for partitions revoked: their waiting records go, and the
// new owner fetches them again from the committed offset. The flights in the air land first, and
// what they did is committed.
func (l *Loader) revoked(ctx context.Context, _ *kgo.Client, partitions map[string][]int32) {
	if len(partitions[l.topics.raw]) == 0 {
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
	l.drop(partitions[l.topics.raw])
}

// lost runs when the group session expired: the partitions may be someone else's already, so
// nothing of them is landed or committed. Their waiting records go; a flight in the air for them
// lands into nothing (load skips what this member no longer owns: no event, no letter, no commit),
// and their next owner loads them again from the committed offset.
func (l *Loader) lost(_ context.Context, _ *kgo.Client, partitions map[string][]int32) {
	if len(partitions[l.topics.raw]) == 0 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.log.Warn("partitions lost: the group session expired; nothing of them is committed, their next owner loads them again",
		"partitions", partitions[l.topics.raw])
	l.drop(partitions[l.topics.raw])
}

// drop forgets partitions this member no longer owns, and their waiting records. The caller holds mu.
func (l *Loader) drop(partitions []int32) {
	gone := map[int32]bool{}
	for _, p := range partitions {
		gone[p] = true
		delete(l.parts, p)
	}
	for _, t := range l.tables {
		t.items = slices.DeleteFunc(t.items, func(it *item) bool {
			if gone[it.partition] {
				l.release(t, it)
				return true
			}
			return false
		})
	}
	l.metrics.pendingRows.Set(float64(l.pendingRows))
}

// owns reports whether it was polled in this member's current ownership of its partition: an item of
// a partition lost (or revoked before its flight landed) is someone else's to count and commit. The
// caller holds mu.
func (l *Loader) owns(it *item) bool {
	s := l.parts[it.partition]
	return s != nil && s == it.owner
}

// commitOffsets returns, per owned partition, the offset up to which every record is done (its
// first waiting record, or one past the last polled) where that is past the committed offset or
// the partition's blocks changed since they were recorded. The caller holds mu.
func (l *Loader) commitOffsets() map[int32]kgo.EpochOffset {
	next := make(map[int32]int64, len(l.parts))
	for p, s := range l.parts {
		next[p] = s.next
	}
	for _, t := range l.tables {
		for _, it := range t.items {
			if o, ok := next[it.partition]; ok && it.offset < o {
				next[it.partition] = it.offset
			}
		}
	}
	out := map[int32]kgo.EpochOffset{}
	for p, o := range next {
		s := l.parts[p]
		if s.unread || s.start < 0 {
			continue // committing would overwrite the blocks of its last owner, or nothing is known
		}
		if o < s.committed {
			o = s.committed // the partition's last owner committed past what this member polled
		}
		kept, _ := encodeBlocks(compact(slices.DeleteFunc(slices.Clone(s.blocks), func(b *block) bool { return b.last < o })))
		if o > s.committed || kept != s.recorded {
			out[p] = kgo.EpochOffset{Epoch: s.epoch, Offset: o}
		}
	}
	return out
}

// commit commits what commitOffsets allows, with the partitions' blocks. A failed commit is not
// retried: the records are in, and whoever owns the partitions next gets them again, and finds
// their blocks planned or inserted in the last commit that went through.
func (l *Loader) commit(ctx context.Context) error {
	if err := l.commitBlocks(ctx, l.commitOffsets(), true); err != nil {
		l.log.Warn("commit offsets failed; the records will be redelivered", "error", err)
	}
	return nil
}

// sortedTables returns the tables with waiting records, by name: a stable order of inserts.
func (l *Loader) sortedTables() []*table {
	out := make([]*table, 0, len(l.tables))
	for _, t := range l.tables {
		if len(t.items) > 0 {
			out = append(out, t)
		}
	}
	slices.SortFunc(out, func(a, b *table) int {
		return cmp.Or(cmp.Compare(a.name, b.name), cmp.Compare(a.schemaID, b.schemaID))
	})
	return out
}
