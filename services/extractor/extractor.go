package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sluicedata/sluice/pkg/delivery"
	"github.com/sluicedata/sluice/pkg/events"
	"github.com/sluicedata/sluice/pkg/kafka"
	"github.com/sluicedata/sluice/pkg/pipeline"
	"github.com/sluicedata/sluice/pkg/source"
)

// Extractor consumes tasks in a consumer group, fetches their pages and produces the records to the
// raw topic. A task's offset is committed only after every record of it is acknowledged by Kafka,
// or the task is acknowledged by the dead-letter topic.
type Extractor struct {
	cl   *kgo.Client
	core *delivery.Core
	// denied takes the fetch and group errors: a refusal of this member's rights fails readiness.
	denied func(error) bool
	// sources is what every source reads with: HTTP, secrets, retries.
	sources source.Env
	cfg     ExtractorConfig
	topics  topics
	log     *slog.Logger
	metrics *extractorMetrics
	offsets *offsetTracker
	claims  *claims
	lag     *kafka.LagReporter
	backoff pipeline.Backoff
	now     func() time.Time
	// maxRecordBytes is the largest record the raw topic takes.
	maxRecordBytes int

	mu     sync.Mutex
	owners map[tp]*owner // one per owned partition with tasks: revoking it cancels them
	// alone is held by a task that was in flight when a member died, while it runs, and shared by
	// every other task.
	alone sync.RWMutex
	// cancelled are the jobs whose tasks this member skips.
	cancelled *events.Cancelled
	// pacers are the rate limits of source hosts, this member's share of each.
	pacers *pacers
	// membersKick asks for a count of the group's members now (a rebalance happened).
	membersKick chan struct{}
	// wantSlot is a parked task ready to work again: the poll that holds the free slots ends.
	wantSlot chan struct{}
	jobSlots map[string]chan struct{} // one per job with a concurrency cap
	tasks    sync.WaitGroup
	// commitMu keeps commits in order: a commit of a lower offset never overtakes a higher one.
	commitMu sync.Mutex
	// commits asks Run's committer for a commit soon: the copy of a crawl's page run in process
	// is committed off the chain's way (the chain waits for it only before reading further).
	commits chan struct{}
	// parked counts the tasks waiting for a rate limit or their job's cap without a slot; unparked
	// tells Run that one returned.
	parked   atomic.Int64
	unparked chan struct{}
	// starved is true while the poll loop waits for a free slot: it polls no task meanwhile, so a
	// crawl's chain leaves its next page to the tasks topic and its slot to the tasks that wait.
	starved atomic.Bool
	// fatal is the first fatal failure of a task: the member stops with it.
	fatal     chan error
	fatalOnce sync.Once
}

type topics struct{ tasks, raw, dlq, events string }

type extractorMetrics struct {
	*pipeline.Metrics
	fetch          *source.Metrics
	produced       prometheus.Counter
	tasksDone      *prometheus.CounterVec
	inFlight       prometheus.Gauge
	copies         prometheus.Counter
	chained        prometheus.Counter
	tokens         prometheus.Counter
	parked         prometheus.Gauge
	rateLimitWaits prometheus.Counter
	throttles      *prometheus.CounterVec
	ratePerSecond  *prometheus.GaugeVec
	members        prometheus.Gauge
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
			Help: "Tasks finished, by outcome (extracted, dead_lettered, cancelled: skipped, whole or in part, because their job was cancelled or failed before them).",
		}, []string{"outcome"}),
		inFlight: f.NewGauge(prometheus.GaugeOpts{
			Name: "extractor_tasks_in_flight",
			Help: "Tasks this member is working on.",
		}),
		tokens: f.NewCounter(prometheus.CounterOpts{
			Name: "extractor_oauth_tokens_total",
			Help: "OAuth2 tokens obtained from sources' token endpoints.",
		}),
		copies: f.NewCounter(prometheus.CounterOpts{
			Name: "extractor_task_copies_skipped_total",
			Help: "Tasks not run because this member works on or finished the same task (a crawl page published twice).",
		}),
		chained: f.NewCounter(prometheus.CounterOpts{
			Name: "extractor_crawl_pages_ahead_total",
			Help: "Crawl pages this member went on to in process, read while the page before was produced, without waiting for their task to come back from the tasks topic.",
		}),
		parked: f.NewGauge(prometheus.GaugeOpts{
			Name: "extractor_tasks_parked",
			Help: "Tasks waiting for their job's rate limit without holding a work slot.",
		}),
		rateLimitWaits: f.NewCounter(prometheus.CounterOpts{
			Name: "extractor_rate_limit_waits_total",
			Help: "Requests that waited for the job's rate limit.",
		}),
		throttles: f.NewCounterVec(prometheus.CounterOpts{
			Name: "extractor_rate_limit_throttles_total",
			Help: "Answers that slowed this member down for a source host (429, or 503 with Retry-After).",
		}, []string{"host"}),
		ratePerSecond: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "extractor_rate_limit_per_second",
			Help: "Requests per second this member may make to a source host now: its share of the group's rate limit, slowed by throttles.",
		}, []string{"host"}),
		members: f.NewGauge(prometheus.GaugeOpts{
			Name: "extractor_group_members",
			Help: "Members of the extractor group, that share every rate limit.",
		}),
	}
	return m
}

// Run polls tasks while it has a free slot, works on up to Concurrency of them at once, and commits
// finished ones in offset order. When ctx ends it stops polling and gives the tasks in flight the
// drain timeout to finish. A fatal failure of a task (an unknown topic, a denied authorization)
// stops the member with its reason.
func (x *Extractor) Run(ctx context.Context) error {
	drainCtx, cancelDrain := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelDrain()
	stop := context.AfterFunc(ctx, func() { time.AfterFunc(x.cfg.DrainTimeout, cancelDrain) })
	defer stop()
	pollCtx, cancelPoll := context.WithCancel(ctx)
	defer cancelPoll()
	var fatal atomic.Pointer[error]
	go func() {
		select {
		case err := <-x.fatal:
			fatal.Store(&err)
			cancelPoll()
			cancelDrain()
		case <-pollCtx.Done():
		}
	}()

	// Tasks wait for the cancelled jobs to be known, a while: a member that cannot read them
	// extracts all the same.
	if x.cancelled != nil {
		x.lag.Doing("reading the jobs topic for the cancelled jobs")
		select {
		case <-x.cancelled.CaughtUp():
		case <-time.After(10 * time.Second):
			x.log.Warn("the cancelled jobs are not known yet; extracting meanwhile")
		case <-pollCtx.Done():
		}
	}
	commitCtx, stopCommits := context.WithCancel(context.WithoutCancel(ctx))
	committer := make(chan struct{})
	go func() {
		defer close(committer)
		for {
			select {
			case <-x.commits:
				// A commit that hangs holds commitMu: a revocation's commit would wait for it.
				cctx, cancel := context.WithTimeout(commitCtx, commitTimeout)
				x.commit(cctx)
				cancel()
			case <-commitCtx.Done():
				return
			}
		}
	}()
	defer func() {
		stopCommits()
		<-committer
	}()
	slots := make(chan struct{}, x.cfg.Concurrency)
	for pollCtx.Err() == nil {
		// Parked tasks are not free: past the bound no task is taken until one of them returns.
		for x.parked.Load() >= int64(4*cap(slots)) && pollCtx.Err() == nil {
			x.lag.Doing(fmt.Sprintf("%d tasks wait for their jobs' rate limits or caps; taking no more", x.parked.Load()))
			select {
			case <-x.unparked:
			case <-pollCtx.Done():
			}
		}
		x.lag.Doing(fmt.Sprintf("working on %d of %d tasks; waiting for a free slot", len(slots), cap(slots)))
		free := x.acquire(pollCtx, slots)
		if free == 0 {
			break
		}
		x.lag.Doing(fmt.Sprintf("working on %d tasks; polling for more", len(slots)-free))
		// The poll has a deadline, and the slots it did not fill go back: a parked task waiting to
		// take its slot again gets it then (waiting senders are served first).
		pollOnce, cancelOnce := context.WithTimeout(pollCtx, time.Second)
		polled := make(chan struct{})
		go func() {
			select {
			case <-x.wantSlot: // a parked task is ready: the slots go back to it now
				cancelOnce()
			case <-polled:
			}
		}()
		fetches := x.cl.PollRecords(pollOnce, free)
		close(polled)
		cancelOnce()
		if fetches.IsClientClosed() {
			break
		}
		fetches.EachError(func(topic string, partition int32, err error) {
			if !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
				if x.denied != nil {
					x.denied(err)
				}
				x.log.Warn("fetch tasks failed", "topic", topic, "partition", partition, "error", err)
			}
		})
		taken := 0
		fetches.EachRecord(func(r *kgo.Record) {
			taken++
			x.start(drainCtx, pollCtx, r, slots)
		})
		// Every polled task is registered with its partition's owner before a rebalance may revoke it.
		x.cl.AllowRebalance()
		for range free - taken {
			<-slots
		}
	}
	x.tasks.Wait()
	x.commit(context.WithoutCancel(ctx))
	if err := fatal.Load(); err != nil {
		return fmt.Errorf("extractor stopped: %w", *err)
	}
	select {
	case err := <-x.fatal: // a task failed for good while the others drained
		return fmt.Errorf("extractor stopped: %w", err)
	default:
	}
	return nil
}

// start runs the task at r on its partition's owner. A copy of a task this member works on or
// finished is done once that work is. A crawl's page goes on with the next pages in process (a
// chain) until stop ends or the chain does.
func (x *Extractor) start(parent, stop context.Context, r *kgo.Record, slots chan struct{}) {
	state, starts := x.offsets.start(r)
	t := &polled{o: x.owner(parent, r), stop: stop, state: state, r: r, id: taskID(r), starts: starts, slots: slots}
	if !x.claim(t) {
		x.metrics.copies.Inc()
		<-slots
		return
	}
	// The start is on the tasks topic's commit before the task runs: were this member killed by
	// it, the next one knows. A task that members started that many times and never finished is
	// dead-lettered instead of run again.
	cctx, cancel := context.WithTimeout(parent, 5*time.Second) // the group waits while this poll's tasks start
	x.commit(cctx)
	cancel()
	x.launch(t, &slot{ch: slots, held: true})
}

// polled is a task as polled, with what its run needs.
type polled struct {
	o      *owner
	stop   context.Context
	state  *partitionState
	r      *kgo.Record
	id     string
	starts int
	slots  chan struct{}
}

// claim takes the task's id for its run, and reports whether it did. When the id is at work on this
// member, the task is a copy: it is settled once that work ends.
func (x *Extractor) claim(t *polled) bool {
	return t.id == "" || x.claims.claim(t.o, t.id, func(how released) { x.settle(t, how) })
}

// launch runs the task in a goroutine of its own with the slot s; a task that holds no slot yet
// takes one first.
func (x *Extractor) launch(t *polled, held *slot) {
	o, r, id := t.o, t.r, t.id
	var ch *chain
	if t.starts == 1 && id != "" {
		ch = x.newChain(o, t.stop, r)
	}
	work := func(ctx context.Context, r *kgo.Record, s *slot) (delivery.Outcome, error) {
		return x.runTask(ctx, r, s, ch)
	}
	if t.starts > x.cfg.MaxTaskStarts {
		work = func(context.Context, *kgo.Record, *slot) (delivery.Outcome, error) {
			return delivery.Outcome{}, delivery.New(delivery.Data, "killed_members", fmt.Errorf(
				"%d members started the task and none finished or handed it over (killed, out of memory?); dead-lettered so that it kills no more (SLUICE_EXTRACTOR_MAX_TASK_STARTS is %d)",
				t.starts-1, x.cfg.MaxTaskStarts))
		}
	}
	x.tasks.Add(1)
	o.wg.Add(1)
	x.metrics.inFlight.Inc()
	go func() {
		defer func() {
			held.release()
			x.metrics.inFlight.Dec()
			o.wg.Done()
			x.tasks.Done()
		}()
		if !held.held && !x.retake(o.ctx, held) {
			x.claims.release(o, id, handedOver)
			x.offsets.abandon(t.state, r, true)
			return
		}
		// A task that was in flight when a member died runs alone: were it the one that kills
		// members, only it is blamed for the next death, not the tasks that ran beside it.
		if t.starts > 1 {
			x.alone.Lock()
			defer x.alone.Unlock()
		} else {
			x.alone.RLock()
			defer x.alone.RUnlock()
		}
		done := false
		markDone := func(ctx context.Context) error {
			x.offsets.done(t.state, r)
			done = true
			x.commit(ctx)
			x.lag.Progressed()
			return nil
		}
		err := x.process(o.ctx, r, held, markDone, work)
		how := finished
		if !done {
			how = handedOver
		}
		x.claims.release(o, id, how)
		switch {
		case err == nil:
		case delivery.ClassOf(err) == delivery.Fatal && o.ctx.Err() == nil:
			x.offsets.abandon(t.state, r, false)
			x.stopOn(err)
		default:
			x.offsets.abandon(t.state, r, true) // revoked, or shutting down: handed over
		}
		for a := ch.next(err); a != nil; a = ch.next(err) {
			err = x.runAhead(o, ch, held, a, work)
		}
	}()
}

// runAhead runs a crawl's page that its chain read ahead, in process. Its task has no offset in
// this member's tracker: its copy, polled from the tasks topic, is done or handed over with this
// run.
func (x *Extractor) runAhead(o *owner, ch *chain, held *slot, a *ahead, work func(context.Context, *kgo.Record, *slot) (delivery.Outcome, error)) error {
	done := false
	markDone := func(context.Context) error {
		done = true
		x.claims.release(o, a.id, finished) // commits the copy when it waits
		x.lag.Progressed()
		return nil
	}
	err := x.process(o.ctx, a.rec, held, markDone, work)
	ch.discard()
	if !done {
		x.claims.release(o, a.id, handedOver)
	}
	if err != nil && delivery.ClassOf(err) == delivery.Fatal && o.ctx.Err() == nil {
		x.stopOn(err)
	}
	return err
}

// settle finishes the copy t of a task this member worked on, once that work ended: finished, it
// is committed soon; handed over, it goes with its partition; given up, the copy runs the task.
func (x *Extractor) settle(t *polled, how released) {
	switch how {
	case finished:
		x.offsets.done(t.state, t.r)
		select {
		case x.commits <- struct{}{}:
		default: // a commit is asked for already, and takes this one in
		}
	case handedOver:
		x.offsets.abandon(t.state, t.r, true)
	case givenUp:
		if x.claim(t) { // another copy may have taken it first: this one waits for it then
			x.launch(t, &slot{ch: t.slots})
		}
	}
}

// retake takes a work slot for s, and reports whether it did before ctx ended. A poll holding the
// free slots ends first.
func (x *Extractor) retake(ctx context.Context, s *slot) bool {
	select {
	case x.wantSlot <- struct{}{}:
	default:
	}
	select {
	case s.ch <- struct{}{}:
		s.held = true
		return true
	case <-ctx.Done():
		return false
	}
}

// stopOn stops the member with the fatal failure of a task.
func (x *Extractor) stopOn(err error) {
	x.log.Error("task cannot be worked on; stopping", "error", err)
	x.fatalOnce.Do(func() { x.fatal <- err })
}

// acquire waits for one free slot, then takes every other free one; it returns how many it took,
// 0 when ctx ended. Taking a slot before polling is what makes a slow stage stop taking tasks
// instead of buffering them.
func (x *Extractor) acquire(ctx context.Context, slots chan struct{}) int {
	select {
	case slots <- struct{}{}:
	default:
		x.starved.Store(true)
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			x.starved.Store(false)
			return 0
		}
		x.starved.Store(false)
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

// commitTimeout bounds a commit that the committer makes for the copies of crawl pages.
const commitTimeout = 5 * time.Second

// commit commits every partition's offset up to its first unfinished task.
func (x *Extractor) commit(ctx context.Context) {
	x.commitMu.Lock()
	defer x.commitMu.Unlock()
	offsets, metas := x.offsets.commitable()
	if len(offsets) == 0 {
		return
	}
	ctx = kgo.PreCommitFnContext(ctx, func(req *kmsg.OffsetCommitRequest) error {
		for i := range req.Topics {
			for j := range req.Topics[i].Partitions {
				p := &req.Topics[i].Partitions[j]
				if m, ok := metas[tp{req.Topics[i].Topic, p.Partition}]; ok {
					p.Metadata = &m
				}
			}
		}
		return nil
	})
	if err := kafka.CommitSync(ctx, x.cl, offsets); err != nil {
		x.log.Warn("commit task offsets failed; the tasks may run again", "error", err)
		return
	}
	x.offsets.committed(offsets, metas)
}

// slot is the member's work slot that a task holds. A task that waits for its job's rate limit
// gives it back meanwhile, so that a slow job does not starve the others.
type slot struct {
	ch   chan struct{}
	held bool
}

func (s *slot) release() {
	if s.held {
		<-s.ch
		s.held = false
	}
}

// park runs wait without the slot and takes a slot again before it returns. Run takes no new task
// while 4×Concurrency tasks are parked, which bounds them.
func (x *Extractor) park(ctx context.Context, s *slot, wait func(context.Context) error) error {
	x.parked.Add(1)
	s.release()
	x.metrics.parked.Inc()
	err := wait(ctx)
	x.metrics.parked.Dec()
	x.parked.Add(-1)
	select {
	case x.unparked <- struct{}{}:
	default:
	}
	if !x.retake(ctx, s) {
		return ctx.Err()
	}
	return err
}
