package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
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
	cl      *kgo.Client
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
	// strings interns the envelopes' repeating strings, and validTables are the table names found
	// valid: both only grow up to maxInterned, and are used under mu.
	strings     interner
	validTables map[string]bool
	// paused are the raw partitions collect paused (only collect's goroutine uses it).
	paused []int32
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
			Help:    "Records per flushed batch.",
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

// Run polls, batches, inserts and commits until ctx ends. A batch in flight when ctx ends gets the
// drain timeout to finish; what it cannot finish is not committed and is redelivered.
func (l *Loader) Run(ctx context.Context) error {
	drainCtx, cancelDrain := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelDrain()
	stop := context.AfterFunc(ctx, func() { time.AfterFunc(l.cfg.DrainTimeout, cancelDrain) })
	defer stop()

	for {
		recs := l.collect(ctx)
		// A flush holds off rebalances: it is bounded well under the rebalance timeout. What it
		// could not insert in time waits with its table and is tried again after the rebalance.
		flushCtx, cancel := context.WithTimeout(drainCtx, l.cfg.FlushTimeout)
		err := l.flush(flushCtx, recs)
		cancel()
		l.cl.AllowRebalance()
		switch {
		case err == nil:
		case drainCtx.Err() != nil:
			l.log.Warn("batch abandoned at shutdown; it will be redelivered", "records", l.pending())
			return nil
		case delivery.ClassOf(err) == delivery.Fatal:
			return err
		default:
			l.log.Warn("batch not finished within the flush timeout; trying again", "error", err,
				"timeout", l.cfg.FlushTimeout.String())
		}
		if ctx.Err() != nil {
			return nil
		}
	}
}

// collect polls until the batch is full by rows or bytes, the flush interval has passed since its
// first record, a waiting table is due for another try, or ctx ends. It polls nothing while the
// tables hold as much as the loader may buffer: backpressure is lag.
func (l *Loader) collect(ctx context.Context) []*kgo.Record {
	due, full := l.waiting()
	if full {
		// Planned blocks whose records are not all here yet would wait for ever: their partitions
		// are read on, the others paused.
		need := l.incompleteParts()
		if len(need) == 0 {
			l.lag.Doing(fmt.Sprintf("waiting: %d records wait for tables that refuse them or cannot be reached", l.pending()))
			l.cl.AllowRebalance()
			pipeline.Sleep(ctx, time.Until(due))
			return nil
		}
		l.pauseBut(need)
	} else {
		l.resume()
	}
	l.lag.Doing("polling the raw topic")
	var (
		recs     []*kgo.Record
		bytes    int
		deadline = due
	)
	for len(recs) < l.cfg.BatchRows && bytes < l.cfg.BatchBytes {
		if len(recs) == 0 {
			// A poll that returned nothing to work on (no fetch, or only franz-go's injected error
			// fetch while the group rejoins) still holds off rebalances until AllowRebalance.
			// Polling again without a deadline would wait for records that only the rebalance it
			// blocks can bring: after a broker restart the whole group would wait on this member.
			l.cl.AllowRebalance()
		}
		pollCtx, cancel := ctx, context.CancelFunc(func() {})
		if !deadline.IsZero() {
			pollCtx, cancel = context.WithDeadline(ctx, deadline)
		}
		fetches := l.cl.PollRecords(pollCtx, l.cfg.BatchRows-len(recs))
		cancel()
		if fetches.IsClientClosed() {
			return recs
		}
		fetches.EachError(func(topic string, partition int32, err error) {
			if !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
				l.log.Warn("fetch failed", "topic", topic, "partition", partition, "error", err)
			}
		})
		fetches.EachRecord(func(r *kgo.Record) {
			recs = append(recs, r)
			bytes += len(r.Value)
		})
		if first := l.now().Add(l.cfg.FlushInterval); len(recs) > 0 && (deadline.IsZero() || first.Before(deadline)) {
			deadline = first
		}
		if pollCtx.Err() != nil {
			return recs
		}
	}
	return recs
}

// waiting returns when the first waiting table is due for another try (zero when none waits), and
// whether the tables hold as much as the loader may buffer.
func (l *Loader) waiting() (due time.Time, full bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, t := range l.tables {
		// A table without a retry time waits for records (those of a block not all polled); one
		// with more records than its last block took is due at once.
		at := t.retryAt
		if t.more && len(t.items) > 0 {
			at = l.now()
		}
		if len(t.items) > 0 && !at.IsZero() && (due.IsZero() || at.Before(due)) {
			due = at
		}
	}
	full = l.unfinished != nil || l.pendingBytes >= l.cfg.MaxPendingBytes || l.pendingRows >= 4*l.cfg.BatchRows
	if full && due.IsZero() {
		due = l.now().Add(l.cfg.FlushInterval)
	}
	return due, full
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

// revoked runs in the group's rebalance, for partitions revoked or lost: their waiting records go,
// and the new owner fetches them again from the committed offset. Everything done of them is
// committed already: each flush commits before it returns.
func (l *Loader) revoked(_ context.Context, _ *kgo.Client, partitions map[string][]int32) {
	l.mu.Lock()
	defer l.mu.Unlock()
	gone := map[int32]bool{}
	for _, p := range partitions[l.topics.raw] {
		gone[p] = true
		delete(l.parts, p)
	}
	for _, t := range l.tables {
		t.items = slices.DeleteFunc(t.items, func(it *item) bool {
			if gone[it.rec.Partition] {
				l.pendingRows--
				l.pendingBytes -= len(it.rec.Value)
				return true
			}
			return false
		})
	}
	l.metrics.pendingRows.Set(float64(l.pendingRows))
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
			if o, ok := next[it.rec.Partition]; ok && it.rec.Offset < o {
				next[it.rec.Partition] = it.rec.Offset
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
