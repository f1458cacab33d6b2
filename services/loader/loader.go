package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	"github.com/sluicedata/sluice/pkg/chsink"
	"github.com/sluicedata/sluice/pkg/dlq"
	"github.com/sluicedata/sluice/pkg/events"
	"github.com/sluicedata/sluice/pkg/pipeline"
	sluicev1 "github.com/sluicedata/sluice/proto/sluice/v1"
)

// batchWriter is what the loader needs of ClickHouse.
type batchWriter interface {
	Insert(ctx context.Context, table string, rows *chsink.Rows, loadedAt time.Time) error
}

var _ batchWriter = (*chsink.Writer)(nil)

// Loader consumes the raw topic in a consumer group and inserts the records into ClickHouse. It
// commits a partition's offsets only after every record before them is inserted or acknowledged by
// the dead-letter topic.
type Loader struct {
	cl      *kgo.Client
	writer  batchWriter
	cfg     LoaderConfig
	topics  topics
	log     *slog.Logger
	metrics *loaderMetrics
	backoff pipeline.Backoff
	now     func() time.Time
}

type topics struct{ dlq, events string }

type loaderMetrics struct {
	*pipeline.Metrics
	rowsInserted  prometheus.Counter
	insertSeconds prometheus.Histogram
	batchRows     prometheus.Histogram
	insertRetries *prometheus.CounterVec
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
		insertRetries: f.NewCounterVec(prometheus.CounterOpts{
			Name: "loader_insert_retries_total",
			Help: "Inserts retried, by reason (network, timeout, too_many_parts, schema, data, transient, other).",
		}, []string{"reason"}),
	}
}

// Run polls, batches, inserts and commits until ctx ends. A batch in flight when ctx ends gets the
// drain timeout to finish; if it cannot, nothing of it is committed and it is redelivered.
func (l *Loader) Run(ctx context.Context) error {
	drainCtx, cancelDrain := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelDrain()
	stop := context.AfterFunc(ctx, func() { time.AfterFunc(l.cfg.DrainTimeout, cancelDrain) })
	defer stop()

	for {
		recs := l.collect(ctx)
		if len(recs) > 0 {
			// A flush holds off rebalances: bound it well under the rebalance timeout, and when it
			// runs out (ClickHouse down), rewind and let the group rebalance before trying again.
			flushCtx, cancel := context.WithTimeout(drainCtx, l.cfg.FlushTimeout)
			err := l.flush(flushCtx, recs)
			cancel()
			switch {
			case err == nil:
			case drainCtx.Err() != nil:
				l.log.Warn("batch abandoned at shutdown; it will be redelivered", "records", len(recs))
				return nil
			case errors.Is(err, context.DeadlineExceeded):
				l.log.Warn("batch not done within the flush timeout; rewound to try again", "records", len(recs),
					"timeout", l.cfg.FlushTimeout.String())
				l.cl.SetOffsets(firstOffsets(recs))
			default:
				return err
			}
		}
		l.cl.AllowRebalance()
		if ctx.Err() != nil {
			return nil
		}
	}
}

// collect polls until the batch is full by rows or bytes, the flush interval has passed since its
// first record, or ctx ends.
func (l *Loader) collect(ctx context.Context) []*kgo.Record {
	var (
		recs     []*kgo.Record
		bytes    int
		deadline time.Time
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
		if deadline.IsZero() && len(recs) > 0 {
			deadline = l.now().Add(l.cfg.FlushInterval)
		}
		if pollCtx.Err() != nil {
			return recs
		}
	}
	return recs
}

// firstOffsets are the offsets to fetch a batch again from: its first record of each partition.
func firstOffsets(recs []*kgo.Record) map[string]map[int32]kgo.EpochOffset {
	out := map[string]map[int32]kgo.EpochOffset{}
	for _, r := range recs {
		if out[r.Topic] == nil {
			out[r.Topic] = map[int32]kgo.EpochOffset{}
		}
		if _, seen := out[r.Topic][r.Partition]; !seen {
			out[r.Topic][r.Partition] = kgo.EpochOffset{Epoch: r.LeaderEpoch, Offset: r.Offset}
		}
	}
	return out
}

// span is the part of a batch that belongs to one run of one task in one partition, for the job's
// events.
type span struct {
	job, task, run string
	partition      int32
}

type spanCount struct {
	table       string
	first, last int64
	loaded      offsets
	dead        map[string]*offsets // by error class
}

// offsets are a partition's offsets as runs of consecutive offsets, in the order they were added.
type offsets struct {
	spans []*sluicev1.OffsetSpan
	n     uint64
}

func (o *offsets) add(offset int64) {
	o.n++
	if k := len(o.spans); k > 0 && o.spans[k-1].Last+1 == offset {
		o.spans[k-1].Last = offset
		return
	}
	o.spans = append(o.spans, &sluicev1.OffsetSpan{First: offset, Last: offset})
}

// flush inserts the valid records, dead-letters the rest, publishes the jobs' events and commits.
func (l *Loader) flush(ctx context.Context, recs []*kgo.Record) error {
	start := l.now()
	tables := map[string]*chsink.Rows{}
	spans := map[span]*spanCount{}
	var letters []*kgo.Record
	var env sluicev1.Record

	count := func(env *sluicev1.Record, r *kgo.Record) *spanCount {
		k := span{env.JobId, env.TaskId, env.Run, r.Partition}
		s := spans[k]
		if s == nil {
			s = &spanCount{table: env.Table, first: r.Offset, dead: map[string]*offsets{}}
			spans[k] = s
		}
		s.last = r.Offset
		return s
	}
	for _, r := range recs {
		env.Reset()
		class, err := "", error(nil)
		if uerr := proto.Unmarshal(r.Value, &env); uerr != nil {
			env.Reset() // a failed decode leaves fragments: the letter keeps the original bytes instead
			class, err = "bad_envelope", fmt.Errorf("raw record is not a sluice.v1.Record: %w", uerr)
		} else {
			class, err = validate(&env, l.cfg.MaxRecordBytes)
		}
		s := count(&env, r)
		if err != nil {
			letter, lerr := dlq.Record(l.topics.dlq, dlq.Letter{
				Stage: sluicev1.DeadLetter_STAGE_LOAD, ErrorClass: class, Err: err, Attempts: 1,
				Original: r, JobID: env.JobId, TaskID: env.TaskId, Payload: env.Payload, FailedAt: l.now(),
			}, l.cfg.MaxRecordBytes)
			if lerr != nil {
				return lerr
			}
			letters = append(letters, letter)
			if s.dead[class] == nil {
				s.dead[class] = &offsets{}
			}
			s.dead[class].add(r.Offset)
			continue
		}
		rows := tables[env.Table]
		if rows == nil {
			rows = &chsink.Rows{}
			tables[env.Table] = rows
		}
		// env.Payload is the decoder's own copy, and env.Reset drops it: the rows may keep it.
		rows.Add(env.Key, env.Payload, env.JobId, env.TaskId, r.Partition, r.Offset, env.ExtractedAt.AsTime())
		s.loaded.add(r.Offset)
	}

	for table, rows := range tables {
		if err := l.insert(ctx, table, rows); err != nil {
			return err
		}
	}
	if err := pipeline.Retry(ctx, l.backoff, l.log, "produce dead letters", func() error { return dlq.Produce(ctx, l.cl, letters...) }); err != nil {
		return err
	}
	evs := spanEvents(spans)
	if err := pipeline.Retry(ctx, l.backoff, l.log, "publish job events", func() error { return events.Publish(ctx, l.cl, l.topics.events, evs...) }); err != nil {
		return err
	}
	if err := l.cl.CommitRecords(ctx, recs...); err != nil {
		// The rows are in; the records come again to whoever owns the partitions now, and the
		// landing table collapses them.
		l.log.Warn("commit offsets failed; the batch will be redelivered", "error", err)
	}
	l.observe(recs, spans, time.Since(start))
	return nil
}

// insert writes one table's rows, retrying transient and schema failures with backoff until it
// succeeds or ctx ends.
func (l *Loader) insert(ctx context.Context, table string, rows *chsink.Rows) error {
	for attempt := 0; ; attempt++ {
		began := l.now()
		err := l.writer.Insert(ctx, table, rows, began)
		if err == nil {
			l.metrics.insertSeconds.Observe(time.Since(began).Seconds())
			l.metrics.rowsInserted.Add(float64(rows.Len()))
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		reason := chsink.Reason(err)
		l.metrics.insertRetries.WithLabelValues(reason).Inc()
		if attempt%10 == 0 {
			l.log.Warn("insert failed; retrying", "table", table, "rows", rows.Len(), "attempt", attempt+1,
				"class", chsink.Classify(err).String(), "error", err)
		}
		if !pipeline.Sleep(ctx, l.backoff.Delay(attempt)) {
			return ctx.Err()
		}
	}
}

func spanEvents(spans map[span]*spanCount) []*sluicev1.JobEvent {
	var evs []*sluicev1.JobEvent
	for k, s := range spans {
		if k.job == "" {
			continue // not a sluice record: counted in metrics only
		}
		if s.loaded.n > 0 {
			evs = append(evs, &sluicev1.JobEvent{JobId: k.job, Producer: "loader", Event: &sluicev1.JobEvent_RecordsLoaded{
				RecordsLoaded: &sluicev1.RecordsLoaded{Records: s.loaded.n, Table: s.table, Partition: k.partition,
					FirstOffset: s.first, LastOffset: s.last, TaskId: k.task, Run: k.run, Offsets: s.loaded.spans}}})
		}
		for class, o := range s.dead {
			evs = append(evs, &sluicev1.JobEvent{JobId: k.job, Producer: "loader", Event: &sluicev1.JobEvent_RecordsDeadLettered{
				RecordsDeadLettered: &sluicev1.RecordsDeadLettered{Records: o.n, ErrorClass: class, Partition: k.partition,
					FirstOffset: s.first, LastOffset: s.last, TaskId: k.task, Run: k.run, Offsets: o.spans}}})
		}
	}
	return evs
}

func (l *Loader) observe(recs []*kgo.Record, spans map[span]*spanCount, took time.Duration) {
	type pc struct{ loaded, dead float64 }
	perPartition := map[int32]*pc{}
	deadByClass := map[string]float64{}
	for k, s := range spans {
		p := perPartition[k.partition]
		if p == nil {
			p = &pc{}
			perPartition[k.partition] = p
		}
		p.loaded += float64(s.loaded.n)
		for class, o := range s.dead {
			p.dead += float64(o.n)
			deadByClass[class] += float64(o.n)
		}
	}
	for partition, c := range perPartition {
		label := pipeline.Partition(partition)
		l.metrics.Processed.WithLabelValues(label, pipeline.StatusLoaded).Add(c.loaded)
		l.metrics.Processed.WithLabelValues(label, pipeline.StatusDeadLettered).Add(c.dead)
	}
	for class, n := range deadByClass {
		l.metrics.DeadLetters.WithLabelValues("load", class).Add(n)
	}
	l.metrics.Processing.Observe(took.Seconds())
	l.metrics.batchRows.Observe(float64(len(recs)))
}
