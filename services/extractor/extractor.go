package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"golang.org/x/time/rate"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sluicedata/sluice/pkg/dlq"
	"github.com/sluicedata/sluice/pkg/events"
	"github.com/sluicedata/sluice/pkg/jobspec"
	"github.com/sluicedata/sluice/pkg/kafka"
	"github.com/sluicedata/sluice/pkg/pipeline"
	"github.com/sluicedata/sluice/pkg/source"
	sluicev1 "github.com/sluicedata/sluice/proto/sluice/v1"
)

// Extractor consumes tasks in a consumer group, fetches their pages and produces the records to the
// raw topic. A task's offset is committed only after every record of it is acknowledged by Kafka,
// or the task is acknowledged by the dead-letter topic.
type Extractor struct {
	cl      *kgo.Client
	fetch   *source.Fetcher
	cfg     ExtractorConfig
	topics  topics
	lookup  func(string) (string, bool)
	log     *slog.Logger
	metrics *extractorMetrics
	offsets *offsetTracker
	lag     *kafka.LagReporter
	backoff pipeline.Backoff
	now     func() time.Time

	mu            sync.Mutex
	cancels       map[tp]context.CancelFunc // one per owned partition: revoking it cancels its tasks
	partitionCtxs map[tp]context.Context
	limiters      map[string]*rate.Limiter // one per job with a rate limit
	tasks         sync.WaitGroup
	// commitMu keeps commits in order: a commit of a lower offset never overtakes a higher one.
	commitMu sync.Mutex
}

type topics struct{ raw, dlq, events string }

type extractorMetrics struct {
	*pipeline.Metrics
	fetch          *source.Metrics
	produced       prometheus.Counter
	tasksDone      *prometheus.CounterVec
	inFlight       prometheus.Gauge
	rateLimitWaits prometheus.Counter
}

func newExtractorMetrics(reg prometheus.Registerer, shared *pipeline.Metrics) *extractorMetrics {
	f := promauto.With(reg)
	m := &extractorMetrics{
		Metrics: shared,
		fetch:   source.NewMetrics(reg, "extractor"),
		produced: f.NewCounter(prometheus.CounterOpts{
			Name: "extractor_records_produced_total",
			Help: "Records acknowledged on the raw topic.",
		}),
		tasksDone: f.NewCounterVec(prometheus.CounterOpts{
			Name: "extractor_tasks_total",
			Help: "Tasks finished, by outcome (extracted, dead_lettered).",
		}, []string{"outcome"}),
		inFlight: f.NewGauge(prometheus.GaugeOpts{
			Name: "extractor_tasks_in_flight",
			Help: "Tasks this member is working on.",
		}),
		rateLimitWaits: f.NewCounter(prometheus.CounterOpts{
			Name: "extractor_rate_limit_waits_total",
			Help: "Requests that waited for the job's rate limit.",
		}),
	}
	return m
}

// Run polls tasks while it has a free slot, works on up to Concurrency of them at once, and commits
// finished ones in offset order. When ctx ends it stops polling and gives the tasks in flight the
// drain timeout to finish.
func (x *Extractor) Run(ctx context.Context) error {
	drainCtx, cancelDrain := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelDrain()
	stop := context.AfterFunc(ctx, func() { time.AfterFunc(x.cfg.DrainTimeout, cancelDrain) })
	defer stop()

	slots := make(chan struct{}, x.cfg.Concurrency)
	for ctx.Err() == nil {
		free := acquire(ctx, slots)
		if free == 0 {
			break
		}
		fetches := x.cl.PollRecords(ctx, free)
		if fetches.IsClientClosed() {
			break
		}
		fetches.EachError(func(topic string, partition int32, err error) {
			if !errors.Is(err, context.Canceled) {
				x.log.Warn("fetch tasks failed", "topic", topic, "partition", partition, "error", err)
			}
		})
		taken := 0
		fetches.EachRecord(func(r *kgo.Record) {
			taken++
			taskCtx := x.partitionContext(drainCtx, r)
			owner := x.offsets.start(r)
			x.tasks.Add(1)
			x.metrics.inFlight.Inc()
			go func() {
				defer func() { <-slots; x.metrics.inFlight.Dec(); x.tasks.Done() }()
				if x.process(taskCtx, r) {
					x.offsets.done(owner, r)
					x.commit(drainCtx)
				} else {
					x.offsets.abandon(owner, r)
				}
			}()
		})
		// Every polled task is registered with its partition before a rebalance may revoke it.
		x.cl.AllowRebalance()
		for range free - taken {
			<-slots
		}
	}
	x.tasks.Wait()
	x.commit(drainCtx)
	return nil
}

// acquire waits for one free slot, then takes every other free one; it returns how many it took,
// 0 when ctx ended. Taking a slot before polling is what makes a slow stage stop taking tasks
// instead of buffering them.
func acquire(ctx context.Context, slots chan struct{}) int {
	select {
	case slots <- struct{}{}:
	case <-ctx.Done():
		return 0
	}
	free := 1
	for free < cap(slots) {
		select {
		case slots <- struct{}{}:
			free++
		default:
			return free
		}
	}
	return free
}

// partitionContext returns the context of the tasks of r's partition, which revoking it cancels.
func (x *Extractor) partitionContext(parent context.Context, r *kgo.Record) context.Context {
	x.mu.Lock()
	defer x.mu.Unlock()
	k := tp{r.Topic, r.Partition}
	if _, ok := x.cancels[k]; !ok {
		ctx, cancel := context.WithCancel(parent)
		x.cancels[k] = cancel
		x.partitionCtxs[k] = ctx
	}
	return x.partitionCtxs[k]
}

// revoked runs in the group's rebalance: it cancels the tasks of the partitions going away, waits
// until they stopped, and commits what is done of them. Their unfinished tasks go to the new owner.
func (x *Extractor) revoked(ctx context.Context, cl *kgo.Client, partitions map[string][]int32) {
	x.lag.Revoked(ctx, cl, partitions)
	x.cancelPartitions(partitions)
	x.waitPartitions(partitions)
	x.commit(ctx)
	x.offsets.drop(partitions)
}

// lost runs when the session expired: nothing of those partitions may be committed any more.
func (x *Extractor) lost(ctx context.Context, cl *kgo.Client, partitions map[string][]int32) {
	x.lag.Revoked(ctx, cl, partitions)
	x.offsets.drop(partitions)
	x.cancelPartitions(partitions)
}

func (x *Extractor) cancelPartitions(partitions map[string][]int32) {
	x.mu.Lock()
	defer x.mu.Unlock()
	for topic, ps := range partitions {
		for _, p := range ps {
			k := tp{topic, p}
			if cancel, ok := x.cancels[k]; ok {
				cancel()
				delete(x.cancels, k)
				delete(x.partitionCtxs, k)
			}
		}
	}
}

// waitPartitions waits until no task of the partitions is in flight, or the drain timeout passed.
func (x *Extractor) waitPartitions(partitions map[string][]int32) {
	deadline := time.Now().Add(x.cfg.DrainTimeout)
	for time.Now().Before(deadline) && x.offsets.anyInFlight(partitions) {
		time.Sleep(10 * time.Millisecond)
	}
}

// commit commits every partition's offset up to its first unfinished task.
func (x *Extractor) commit(ctx context.Context) {
	x.commitMu.Lock()
	defer x.commitMu.Unlock()
	offsets := x.offsets.commitable()
	if len(offsets) == 0 {
		return
	}
	var failed error
	x.cl.CommitOffsetsSync(ctx, offsets, func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, resp *kmsg.OffsetCommitResponse, err error) {
		if err != nil {
			failed = err
			return
		}
		for _, t := range resp.Topics {
			for _, p := range t.Partitions {
				if perr := kerr.ErrorForCode(p.ErrorCode); perr != nil {
					failed = perr
				}
			}
		}
	})
	if failed != nil {
		x.log.Warn("commit task offsets failed; the tasks may run again", "error", failed)
		return
	}
	x.offsets.committed(offsets)
}

// process runs one task to its end. It returns true when the task is done (every record
// acknowledged, or the task dead-lettered) and its offset may be committed, false when it was
// abandoned (revoked, shut down) and must run again elsewhere. A task whose records Kafka did not
// take runs again here from its first page.
func (x *Extractor) process(ctx context.Context, r *kgo.Record) bool {
	for attempt := 0; ; attempt++ {
		done, again := x.runTask(ctx, r)
		if !again || ctx.Err() != nil {
			return done
		}
		if !pipeline.Sleep(ctx, x.backoff.Delay(attempt)) {
			return false
		}
	}
}

// runTask makes one pass over a task. again is true when producing failed and the task should run
// again.
func (x *Extractor) runTask(ctx context.Context, r *kgo.Record) (done, again bool) {
	began := x.now()
	run := newRun()
	var task sluicev1.Task
	if err := proto.Unmarshal(r.Value, &task); err != nil {
		return x.deadLetter(ctx, r, &task, taskFailure{class: "bad_task", err: fmt.Errorf("task is not a sluice.v1.Task: %w", err)}), false
	}
	src := task.GetSource().GetHttp()
	if src == nil {
		return x.deadLetter(ctx, r, &task, taskFailure{class: "bad_task", err: errors.New("task has no HTTP source")}), false
	}
	headers, err := jobspec.ExpandHeaders(src.Headers, x.lookup)
	if err != nil {
		return x.deadLetter(ctx, r, &task, taskFailure{class: "config", err: err}), false
	}
	pol := source.Policy{
		MaxRetries: int(src.MaxRetries),
		Backoff:    x.backoff,
		Deadline:   x.cfg.PageDeadline,
		Timeout:    src.GetTimeout().AsDuration(),
	}
	if pol.Timeout <= 0 {
		pol.Timeout = 30 * time.Second
	}

	prod := &taskProducer{x: x, ctx: ctx, task: r}
	var (
		records uint64
		pages   uint32
		attempt int
	)
	pg := newPager(&task, src)
	for req, ok := pg.request(); ok; req, ok = pg.request() {
		if err := x.wait(ctx, task.JobId, src); err != nil {
			prod.wait()
			return false, ctx.Err() == nil // the task runs again; never counted done
		}
		u, err := source.PageURL(src, req.start, req.limit)
		if err != nil {
			return x.deadLetter(ctx, r, &task, taskFailure{class: "bad_task", err: err, records: records}), false
		}
		p, attempts, ferr := x.fetch.FetchPage(ctx, u, headers, src.RecordsPath, src.Pagination.GetTotalPath(), pol)
		attempt = max(attempt, attempts)
		if ferr != nil {
			if ctx.Err() != nil {
				break
			}
			if !prod.wait() {
				return false, true
			}
			return x.deadLetter(ctx, r, &task, taskFailure{class: ferr.Class, err: ferr.Err, attempts: attempts,
				status: ferr.Status, head: ferr.Head, page: req.start, records: records, tooLarge: prod.tooLarge.Load(), run: run}), false
		}
		pages++
		extractedAt := timestamppb.New(x.now())
		for i, rec := range p.Records {
			key, keyErr := source.RecordKey(rec, src.Key)
			env := &sluicev1.Record{JobId: task.JobId, TaskId: task.TaskId, Key: key, Payload: rec,
				ExtractedAt: extractedAt, Page: req.start, IndexInPage: uint32(i), Table: task.Table, KeyError: keyErr, Run: run}
			prod.produce(env)
		}
		records += uint64(len(p.Records))
		if err := pg.advance(req, len(p.Records)); err != nil {
			if !prod.wait() {
				return false, ctx.Err() == nil
			}
			return x.deadLetter(ctx, r, &task, taskFailure{class: "short_page", err: err, attempts: attempts,
				status: http.StatusOK, page: req.start, records: records, tooLarge: prod.tooLarge.Load(), run: run}), false
		}
	}
	if !prod.wait() {
		return false, ctx.Err() == nil
	}
	if ctx.Err() != nil {
		return false, false
	}
	if prod.tooLarge.Load() > 0 {
		x.metrics.DeadLetters.WithLabelValues("extract", "too_large").Add(float64(prod.tooLarge.Load()))
	}
	ev := &sluicev1.JobEvent{JobId: task.JobId, Producer: "extractor", Event: &sluicev1.JobEvent_TaskExtracted{
		TaskExtracted: &sluicev1.TaskExtracted{TaskId: task.TaskId, Records: records, Pages: pages, Attempts: uint32(attempt),
			DeadLettered: prod.tooLarge.Load(), Run: run}}}
	if err := pipeline.Retry(ctx, x.backoff, x.log, "publish job event", func() error { return events.Publish(ctx, x.cl, x.topics.events, ev) }); err != nil {
		return false, false
	}
	label := pipeline.Partition(r.Partition)
	x.metrics.Processed.WithLabelValues(label, pipeline.StatusProduced).Add(float64(prod.acked.Load()))
	x.metrics.Processed.WithLabelValues(label, pipeline.StatusDeadLettered).Add(float64(prod.tooLarge.Load()))
	x.metrics.produced.Add(float64(prod.acked.Load()))
	x.metrics.tasksDone.WithLabelValues("extracted").Inc()
	x.metrics.Processing.Observe(time.Since(began).Seconds())
	return true, false
}

// newRun names one attempt at a task.
func newRun() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// wait blocks for the job's rate limit, when it has one.
func (x *Extractor) wait(ctx context.Context, job string, src *sluicev1.HttpSource) error {
	if src.RateLimit <= 0 {
		return nil
	}
	x.mu.Lock()
	l := x.limiters[job]
	if l == nil {
		l = rate.NewLimiter(rate.Limit(src.RateLimit), 1)
		x.limiters[job] = l
	}
	x.mu.Unlock()
	if !l.Allow() {
		x.metrics.rateLimitWaits.Inc()
		return l.Wait(ctx)
	}
	return nil
}

// taskFailure is why a task is dead-lettered, with what the source last said.
type taskFailure struct {
	class    string
	err      error
	attempts int
	status   int
	head     []byte
	page     uint64
	// records the task's earlier pages held; tooLarge of them were dead-lettered, not produced.
	records  uint64
	tooLarge uint64
	run      string
}

// deadLetter sends the task to the dead-letter topic with its context and publishes the job event.
// It returns true once both are acknowledged, so that the task's offset may be committed.
func (x *Extractor) deadLetter(ctx context.Context, r *kgo.Record, task *sluicev1.Task, f taskFailure) bool {
	err := f.err
	if f.page > 0 || f.status > 0 {
		err = fmt.Errorf("page at %d: %w", f.page, f.err)
	}
	letter, lerr := dlq.Record(x.topics.dlq, dlq.Letter{
		Stage: sluicev1.DeadLetter_STAGE_EXTRACT, ErrorClass: f.class, Err: err, Attempts: f.attempts,
		Original: r, JobID: task.JobId, TaskID: task.TaskId, HTTPStatus: f.status, ResponseHead: f.head,
		FailedAt: x.now(),
	}, x.cfg.MaxRecordBytes)
	if lerr != nil {
		x.log.Error("encode dead letter", "error", lerr)
		return false
	}
	if err := pipeline.Retry(ctx, x.backoff, x.log, "produce dead letter", func() error { return dlq.Produce(ctx, x.cl, letter) }); err != nil {
		return false
	}
	ev := &sluicev1.JobEvent{JobId: task.JobId, Producer: "extractor", Event: &sluicev1.JobEvent_TaskDeadLettered{
		TaskDeadLettered: &sluicev1.TaskDeadLettered{TaskId: task.TaskId, ErrorClass: f.class, Records: f.records,
			DeadLettered: f.tooLarge, Run: f.run}}}
	if err := pipeline.Retry(ctx, x.backoff, x.log, "publish job event", func() error { return events.Publish(ctx, x.cl, x.topics.events, ev) }); err != nil {
		return false
	}
	x.log.Warn("task dead-lettered", "job", task.JobId, "task", task.TaskId, "class", f.class,
		"attempts", f.attempts, "status", f.status, "error", err)
	x.metrics.DeadLetters.WithLabelValues("extract", f.class).Inc()
	x.metrics.tasksDone.WithLabelValues("dead_lettered").Inc()
	return true
}

// taskProducer produces one task's records asynchronously and waits for all acknowledgements. A
// record the broker refuses as too large becomes a dead letter with a stub; any other failure fails
// the task, which then runs again.
type taskProducer struct {
	x        *Extractor
	ctx      context.Context
	task     *kgo.Record
	wg       sync.WaitGroup
	acked    atomic.Uint64
	tooLarge atomic.Uint64
	failed   atomic.Pointer[error]
}

func (p *taskProducer) produce(env *sluicev1.Record) {
	value, err := proto.Marshal(env)
	if err != nil {
		p.fail(fmt.Errorf("encode record: %w", err))
		return
	}
	p.wg.Add(1)
	p.x.cl.Produce(p.ctx, &kgo.Record{Topic: p.x.topics.raw, Key: []byte(env.Key), Value: value}, p.onAck)
}

// onAck is the one callback of every record of the task: no closure per record.
func (p *taskProducer) onAck(rec *kgo.Record, err error) {
	defer p.wg.Done()
	switch {
	case err == nil:
		p.acked.Add(1)
	case errors.Is(err, kerr.MessageTooLarge):
		var env sluicev1.Record
		if uerr := proto.Unmarshal(rec.Value, &env); uerr != nil {
			p.fail(uerr)
			return
		}
		// Not on this goroutine: franz-go runs every produce callback on it, so waiting here for
		// the dead letter's own acknowledgement would wait forever.
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.deadLetterTooLarge(&env, err)
		}()
	default:
		p.fail(err)
	}
}

func (p *taskProducer) deadLetterTooLarge(env *sluicev1.Record, err error) {
	letter, lerr := dlq.Record(p.x.topics.dlq, dlq.Letter{
		Stage: sluicev1.DeadLetter_STAGE_EXTRACT, ErrorClass: "too_large",
		Err: fmt.Errorf("record of %d bytes refused by the raw topic: %w", len(env.Payload), err), Attempts: 1,
		Original: p.task, JobID: env.JobId, TaskID: env.TaskId, Payload: env.Payload, FailedAt: p.x.now(),
	}, 0)
	if lerr == nil {
		lerr = pipeline.Retry(p.ctx, p.x.backoff, p.x.log, "produce dead letter", func() error { return dlq.Produce(p.ctx, p.x.cl, letter) })
	}
	if lerr != nil {
		p.fail(lerr)
		return
	}
	p.tooLarge.Add(1)
}

func (p *taskProducer) fail(err error) { p.failed.CompareAndSwap(nil, &err) }

// wait returns once every record is acknowledged or failed; true when none failed.
func (p *taskProducer) wait() bool {
	p.wg.Wait()
	if errp := p.failed.Load(); errp != nil {
		if p.ctx.Err() == nil {
			p.x.log.Warn("produce records failed; the task will run again", "error", *errp)
		}
		return false
	}
	return true
}

// pageRequest is one page of a task: where it starts and how many records it asks for.
type pageRequest struct {
	start uint64 // the offset, or the page number
	limit uint64
}

// errShortPage is a page-numbered source that returned fewer records than asked before the task's
// last page: it caps the page size below the job's, and page numbers would skip records.
var errShortPage = errors.New("the source returned a short page before the last page of the task: it caps the page size below the job's page_size")

// pager walks a task's pages. Offset pages advance by the records the source returned, so that a
// source capping the page size below the job's skips nothing.
type pager struct {
	pages     bool // page numbers, else offsets
	next      uint64
	end       uint64 // offsets: exclusive end; pages: the last page
	unbounded bool
	size      uint64
	done      bool
}

func newPager(task *sluicev1.Task, src *sluicev1.HttpSource) *pager {
	p := &pager{size: uint64(src.Pagination.GetPageSize())}
	if p.size == 0 {
		p.size = 100
	}
	switch s := task.Slice.(type) {
	case *sluicev1.Task_Offsets:
		p.next, p.end, p.unbounded = s.Offsets.Start, s.Offsets.End, s.Offsets.Unbounded
		p.done = !p.unbounded && p.next >= p.end
	case *sluicev1.Task_Pages:
		p.pages = true
		p.next, p.end, p.unbounded = s.Pages.First, s.Pages.Last, s.Pages.Unbounded
		p.done = !p.unbounded && p.next > p.end
	default:
		p.done = true
	}
	return p
}

// request returns the next page to fetch, or false when the task is complete.
func (p *pager) request() (pageRequest, bool) {
	if p.done {
		return pageRequest{}, false
	}
	limit := p.size
	if !p.pages && !p.unbounded {
		limit = min(p.size, p.end-p.next)
	}
	return pageRequest{start: p.next, limit: limit}, true
}

// advance records that the page asked for returned got records.
func (p *pager) advance(req pageRequest, got int) error {
	short := uint64(got) < req.limit
	switch {
	case got == 0:
		p.done = true // an empty page ends the task, bounded or not
	case p.pages:
		if short && !p.unbounded && p.next < p.end {
			return errShortPage
		}
		p.next++
		p.done = short || (!p.unbounded && p.next > p.end)
	default:
		p.next += uint64(got)
		p.done = (p.unbounded && short) || (!p.unbounded && p.next >= p.end)
	}
	return nil
}
