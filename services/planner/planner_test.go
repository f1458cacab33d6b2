package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sluicedata/sluice/pkg/delivery"
	"github.com/sluicedata/sluice/pkg/demosource"
	"github.com/sluicedata/sluice/pkg/events"
	"github.com/sluicedata/sluice/pkg/jobspec"
	"github.com/sluicedata/sluice/pkg/kafka"
	"github.com/sluicedata/sluice/pkg/kafkatest"
	"github.com/sluicedata/sluice/pkg/pipeline"
	"github.com/sluicedata/sluice/pkg/source"
	sluicev1 "github.com/sluicedata/sluice/proto/sluice/v1"
)

// The tests in this file run the planner against a kfake cluster and an in-process demo source.

type plannerRig struct {
	cluster *kfake.Cluster
	srcURL  string
	cfg     PlannerConfig
	events  string
	jobs    string
	// now is the planners' clock; nil: time.Now.
	now func() time.Time
	// clock is the planner's time when set, else the wall clock; passes counts Maintain's passes
	// when set.
	clock  *clock
	passes prometheus.Counter
	// onState, when set as a planner starts, sees each record of the jobs topic before that
	// planner folds it in, and may hold it back.
	onState func(*kgo.Record)
}

// clock is a planner's time in a test, moved by hand.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// afterPasses waits until Maintain made n passes from now on: the last of them saw the clock as
// it is now.
func (r *plannerRig) afterPasses(t *testing.T, n int) {
	t.Helper()
	from := testutil.ToFloat64(r.passes)
	waitUntil(t, fmt.Sprintf("%d passes of the planner's upkeep", n), func() bool { return testutil.ToFloat64(r.passes) >= from+float64(n) })
}

func newPlannerRig(t *testing.T) *plannerRig {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "tasks", "events", "events-after-retention", "jobs", "jobs-compacted", "lease"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	srcCfg := demosource.DefaultConfig()
	srcCfg.Records = 1000
	src, err := demosource.New(srcCfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(src.Handler())
	t.Cleanup(ts.Close)
	return &plannerRig{cluster: c, srcURL: ts.URL, events: "events", jobs: "jobs", cfg: PlannerConfig{JobStallTimeout: time.Hour, RepublishAfter: 200 * time.Millisecond, MarkMaxSkew: 24 * time.Hour}}
}

func (r *plannerRig) client(t *testing.T, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(r.cluster.ListenAddrs()...)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// start runs a planner, as a restarted process would, until the test ends.
func (r *plannerRig) start(t *testing.T) *Planner {
	t.Helper()
	p, _ := r.startWith(t, nil)
	waitUntil(t, "the planner to catch up", func() bool { return p.ready(context.Background()) == nil })
	return p
}

// startWith runs a planner whose lease is l (nil: it runs alone; the caller runs l); stop ends it
// as a planner that shuts down does.
func (r *plannerRig) startWith(t *testing.T, l *lease) (p *Planner, stop func()) {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	reg := prometheus.NewRegistry()
	retry := delivery.NewRetrier(reg, log)
	onState := r.onState
	p = &Planner{
		cl:     r.client(t, append(termWriteOpts(), kgo.ConsumeTopics(r.events), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))...),
		topics: topics{tasks: "tasks", events: r.events, jobs: r.jobs},
		cfg:    r.cfg,
		sources: source.Env{
			Fetcher: &source.Fetcher{Client: &http.Client{}, MaxBody: 1 << 20, Metrics: source.NewMetrics(reg, "planner"),
				Retry: retry, Now: time.Now},
			Lookup:       func(string) (string, bool) { return "", false },
			Backoff:      pipeline.Backoff{Base: time.Millisecond, Max: 10 * time.Millisecond},
			PageDeadline: 10 * time.Second,
		},
		jobs:         newJobs(),
		folded:       newFolded(),
		statesFolded: newFolded(),
		names:        newNames(),
		log:          log,
		backoff:      pipeline.Backoff{Base: time.Millisecond, Max: 10 * time.Millisecond},
		retry:        retry,
		now:          time.Now,
		states: func(ctx context.Context, fn func(*kgo.Record), live func()) error {
			if onState != nil {
				fold := fn
				fn = func(rec *kgo.Record) { onState(rec); fold(rec) }
			}
			return tail(ctx, r.client(t, kgo.ConsumeTopics(r.jobs), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart())), r.jobs, log, fn, live)
		},
	}
	p.jobs.count(reg)
	if r.now != nil {
		p.now = r.now
	}
	if r.clock != nil {
		p.now = r.clock.now
	}
	p.names.checks = r.passes
	p.lease = l
	ctx, cancel := context.WithCancel(context.Background())
	parts := []func(context.Context) error{p.Follow, p.Maintain}
	if l != nil {
		parts = append(parts, p.Lead)
	}
	done := make(chan struct{}, len(parts))
	for _, part := range parts {
		go func() { _ = part(ctx); done <- struct{}{} }()
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			for range parts {
				<-done
			}
		})
	}
	t.Cleanup(stop)
	return p, stop
}

func (r *plannerRig) spec(t *testing.T, table string) *jobspec.Spec {
	t.Helper()
	spec, err := jobspec.Parse([]byte(`name: users
source:
  type: http
  url: ` + r.srcURL + `/api/users
  records_path: data
  key: id
  pagination: {type: offset, offset_param: offset, limit_param: limit, page_size: 100, total_path: total}
tasks: 4
sink: {table: ` + table + `}
`))
	if err != nil {
		t.Fatal(err)
	}
	return spec
}

// count returns the records of topic.
func (r *plannerRig) count(t *testing.T, topic string) []*kgo.Record {
	t.Helper()
	var out []*kgo.Record
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := kafka.ReadToEnd(ctx, r.client(t, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart())), topic,
		func(rec *kgo.Record) bool { out = append(out, rec); return true })
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestSubmitIsIdempotentWithAKey: the same key returns the same job and publishes nothing more; the
// same key with another spec is refused; no key plans a new job each time.
func TestSubmitIsIdempotentWithAKey(t *testing.T) {
	r := newPlannerRig(t)
	p := r.start(t)
	ctx := context.Background()
	first, existing, err := p.Submit(ctx, r.spec(t, "users"), "key-1")
	if err != nil || existing {
		t.Fatalf("first submit: %v, existing %v", err, existing)
	}
	again, existing, err := p.Submit(ctx, r.spec(t, "users"), "key-1")
	if err != nil || !existing || again.ID != first.ID {
		t.Fatalf("second submit with the key: job %s (first %s), existing %v, %v", again.ID, first.ID, existing, err)
	}
	if _, _, err := p.Submit(ctx, r.spec(t, "other"), "key-1"); !errors.Is(err, errKeyReused) {
		t.Fatalf("another spec under the key: %v, want errKeyReused", err)
	}
	if tasks := r.count(t, "tasks"); len(tasks) != 4 {
		t.Fatalf("%d tasks published, want the first submission's 4", len(tasks))
	}
	// A restarted planner knows the key from the events.
	again, existing, err = r.start(t).Submit(ctx, r.spec(t, "users"), "key-1")
	if err != nil || !existing || again.ID != first.ID {
		t.Fatalf("submit after a restart: job %s, existing %v, %v", again.ID, existing, err)
	}
}

// TestTasksOfAnInterruptedPlanningArePublishedAgain: a planner that stopped after the planned
// event and before the tasks leaves a job that the next planner completes: the same tasks appear.
func TestTasksOfAnInterruptedPlanningArePublishedAgain(t *testing.T) {
	r := newPlannerRig(t)
	spec := r.spec(t, "users")
	now := time.Now().Add(-time.Minute)
	pl := planJob(spec, "users-interrupted", 1000, now)
	sum := [32]byte{}
	planned := &sluicev1.JobEvent{JobId: pl.jobID, At: timestamppb.New(now), Producer: "planner",
		Event: &sluicev1.JobEvent_Planned{Planned: &sluicev1.JobPlanned{Name: "users", Table: "users", Tasks: uint32(len(pl.tasks)),
			ExpectedRecords: 1000, Spec: spec.JSON(), SpecSha256: sum[:]}}}
	if err := events.Publish(context.Background(), r.client(t), "events", planned); err != nil {
		t.Fatal(err)
	}
	r.start(t)
	waitUntil(t, "the tasks", func() bool { return len(r.count(t, "tasks")) == len(pl.tasks) })
	for i, rec := range r.count(t, "tasks") {
		var task sluicev1.Task
		if err := proto.Unmarshal(rec.Value, &task); err != nil || task.TaskId != pl.tasks[i].TaskId {
			t.Fatalf("task %d is %v (%v), want %s", i, task.TaskId, err, pl.tasks[i].TaskId)
		}
	}
}

// TestJobWithoutNewsFails and outlives the events topic: a job one of whose tasks an extractor took
// and that has no news after it fails with a reason past the deadline, its final state goes to
// the jobs topic, and a planner that finds the events topic empty (its retention passed) still
// knows it.
func TestJobWithoutNewsFails(t *testing.T) {
	r := newPlannerRig(t)
	r.cfg.JobStallTimeout = time.Minute
	r.clock, r.passes = &clock{t: time.Now()}, prometheus.NewCounter(prometheus.CounterOpts{Name: "passes"})
	p := r.start(t)
	ctx := context.Background()
	j, _, err := p.Submit(ctx, r.spec(t, "users"), "")
	if err != nil {
		t.Fatal(err)
	}
	// Queued for an hour, then taken: the hour is no stall, and the clock runs from the start.
	r.clock.add(time.Hour)
	started := &sluicev1.JobEvent{JobId: j.ID, At: timestamppb.New(r.clock.now()), Producer: "extractor",
		Event: &sluicev1.JobEvent_TaskStarted{TaskStarted: &sluicev1.TaskStarted{TaskId: taskID(j.ID, 0), Run: "r1"}}}
	if err := events.Publish(ctx, r.client(t), r.events, started); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the task to be worked on", func() bool {
		tasks, _, _ := p.jobs.Tasks(j.ID)
		return len(tasks) == 4 && tasks[0].State == "extracting"
	})
	r.clock.add(59 * time.Second)
	r.afterPasses(t, 2)
	if got, _ := p.jobs.Get(j.ID, r.clock.now()); got.State != stateRunning {
		t.Fatalf("a job worked on for 59s of a 1m timeout is %s (%s)", got.State, got.Reason)
	}
	r.clock.add(2 * time.Second)
	waitUntil(t, "the job to fail", func() bool { got, _ := p.jobs.Get(j.ID, r.clock.now()); return got.State == stateFailed })
	got, _ := p.jobs.Get(j.ID, r.clock.now())
	if !strings.Contains(got.Reason, "no progress for 1m0s while it was worked on") {
		t.Fatalf("reason %q", got.Reason)
	}
	waitUntil(t, "the job's state on the jobs topic", func() bool {
		for _, rec := range r.count(t, "jobs") {
			if string(rec.Key) == j.ID {
				return true
			}
		}
		return false
	})

	// The events topic's retention passed: a new planner on an empty events topic knows the job
	// from the jobs topic alone.
	r.events = "events-after-retention"
	again, ok := r.start(t).jobs.Get(j.ID, time.Now())
	if !ok || again.State != stateFailed || again.Reason != got.Reason || again.Tasks.Planned != 4 || again.Records.Expected != 1000 {
		t.Fatalf("after the events' retention the job is %+v (known %v), was %+v", again, ok, got)
	}
}

// TestQueuedJobIsNoStall: a job whose tasks all wait on the tasks topic, no extractor having taken
// one (they work on other jobs), has no news for far longer than the stall timeout and still runs:
// waiting in the queue is not a stall.
func TestQueuedJobIsNoStall(t *testing.T) {
	r := newPlannerRig(t)
	r.cfg.JobStallTimeout = time.Minute
	r.clock, r.passes = &clock{t: time.Now()}, prometheus.NewCounter(prometheus.CounterOpts{Name: "passes"})
	p := r.start(t)
	j, _, err := p.Submit(context.Background(), r.spec(t, "users"), "")
	if err != nil {
		t.Fatal(err)
	}
	r.clock.add(2 * time.Hour)
	r.afterPasses(t, 2)
	if got, _ := p.jobs.Get(j.ID, r.clock.now()); got.State != stateRunning {
		t.Fatalf("a job queued for 2h behind other jobs is %s (%s), want running", got.State, got.Reason)
	}
}

// TestQueuedScheduledRunIsNotOverlapped: a scheduled run whose tasks wait on the tasks topic for
// many of its intervals still runs, and no second run starts beside it.
func TestQueuedScheduledRunIsNotOverlapped(t *testing.T) {
	r := newPlannerRig(t)
	r.cfg.JobStallTimeout = time.Minute
	r.clock, r.passes = &clock{t: time.Now()}, prometheus.NewCounter(prometheus.CounterOpts{Name: "passes"})
	p := r.start(t)
	spec := r.spec(t, "users")
	spec.Schedule.Every = "1m"
	ctx := context.Background()
	if err := p.setSchedule(ctx, spec); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the first run", func() bool { return p.jobs.Running("users") })
	first, _ := p.jobs.Latest("users")
	r.clock.add(2 * time.Hour)
	r.afterPasses(t, 3)
	var runs []string
	all, _ := p.jobs.Page(nil, 1000, r.clock.now())
	for _, j := range all {
		runs = append(runs, j.ID+" "+j.State+" "+j.Reason)
	}
	if len(runs) != 1 || runs[0] != first.ID+" running " {
		t.Fatalf("after 2h in the queue the runs are %q; want %s, running, alone", runs, first.ID)
	}
}

// TestSubmitAfterAnUnacknowledgedPlannedEvent: the broker did not acknowledge the planned event,
// which may be on the topic all the same (here it shows up after the retry): the retry with the key
// publishes the same job again instead of planning a second one.
func TestSubmitAfterAnUnacknowledgedPlannedEvent(t *testing.T) {
	r := newPlannerRig(t)
	p := r.start(t)
	var refused atomic.Bool
	r.cluster.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
		pr := req.(*kmsg.ProduceRequest)
		// The first produce after the start is the planned event (topics may be named by id only).
		if !refused.CompareAndSwap(false, true) {
			r.cluster.KeepControl()
			return nil, nil, false
		}
		return kafkatest.Refuse(pr, kerr.InvalidRecord.Code), nil, true
	})
	ctx := context.Background()
	if _, _, err := p.Submit(ctx, r.spec(t, "users"), "key-1"); err == nil {
		t.Fatal("the first submission succeeded although its planned event was refused")
	}
	p.submitMu.Lock()
	first, ok := p.unsure["key-1"]
	p.submitMu.Unlock()
	if !ok {
		t.Fatal("the planner forgot the plan whose planned event was not acknowledged")
	}
	again, _, err := p.Submit(ctx, r.spec(t, "users"), "key-1")
	if err != nil || again.ID != first.plan.jobID {
		t.Fatalf("the retry gave job %s (%v), want the first attempt's %s", again.ID, err, first.plan.jobID)
	}
	// The first event was written after all, and becomes visible only now.
	if err := events.Publish(ctx, r.client(t), "events", first.planned); err != nil {
		t.Fatal(err)
	}
	ids := map[string]bool{}
	for _, rec := range r.count(t, "events") {
		ids[string(rec.Key)] = true
	}
	if len(ids) != 1 {
		t.Fatalf("events of %d jobs on the topic, want one: %v", len(ids), ids)
	}
	// Its tasks follow (published again, if need be, by the planner's upkeep), all of the one job.
	waitUntil(t, "the job's tasks", func() bool { return len(r.count(t, "tasks")) >= 4 })
	tasks := map[string]bool{}
	for _, rec := range r.count(t, "tasks") {
		if !strings.HasPrefix(string(rec.Key), first.plan.jobID+"-t") {
			t.Fatalf("task %s is not of job %s", rec.Key, first.plan.jobID)
		}
		tasks[string(rec.Key)] = true
	}
	if len(tasks) != 4 {
		t.Fatalf("%d distinct tasks, want 4", len(tasks))
	}
}

// TestCancelDecidesOnTheEventsWrittenBefore: the job's tasks completed and their records loaded a
// moment ago, but the planner has not folded that in. A cancel waits for those events and finds
// the job succeeded; one that cannot wait for them answers that the planner is behind.
func TestCancelDecidesOnTheEventsWrittenBefore(t *testing.T) {
	r := newPlannerRig(t)
	p := r.start(t)
	ctx := context.Background()
	j, _, err := p.Submit(ctx, r.spec(t, "users"), "")
	if err != nil {
		t.Fatal(err)
	}
	tasks := r.count(t, "tasks")
	if len(tasks) != 4 {
		t.Fatalf("%d tasks, want 4", len(tasks))
	}
	p.cl.PauseFetchTopics(r.events)
	at := timestamppb.Now()
	var done []*sluicev1.JobEvent
	for i, rec := range tasks {
		id, first := string(rec.Key), int64(i*250)
		done = append(done,
			&sluicev1.JobEvent{JobId: j.ID, At: at, Event: &sluicev1.JobEvent_TaskExtracted{
				TaskExtracted: &sluicev1.TaskExtracted{TaskId: id, Records: 250, Run: "r1"}}},
			&sluicev1.JobEvent{JobId: j.ID, At: at, Event: &sluicev1.JobEvent_RecordsLoaded{
				RecordsLoaded: &sluicev1.RecordsLoaded{Records: 250, TaskId: id, Run: "r1", FirstOffset: first, LastOffset: first + 249,
					Offsets: []*sluicev1.OffsetSpan{{First: first, Last: first + 249}}}}})
	}
	for _, ev := range done {
		if err := events.Publish(ctx, r.client(t), r.events, ev); err != nil {
			t.Fatal(err)
		}
	}
	if got, _ := p.jobs.Get(j.ID, time.Now()); got.State != stateRunning {
		t.Fatalf("the job is %s although the planner reads no events", got.State)
	}
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	if _, err := p.Cancel(short, j.ID, "ops"); !errors.Is(err, errBehind) {
		t.Fatalf("a cancel that cannot wait for the events: %v, want errBehind", err)
	}
	if got, _ := p.jobs.Get(j.ID, time.Now()); got.State != stateRunning {
		t.Fatalf("the job is %s after a cancel the planner could not decide", got.State)
	}
	p.cl.ResumeFetchTopics(r.events)
	if _, err := p.Cancel(ctx, j.ID, "ops"); !errors.Is(err, errEnded) {
		t.Fatalf("a cancel after the job's last load: %v, want errEnded", err)
	}
	if got, _ := p.jobs.Get(j.ID, time.Now()); got.State != stateSucceeded || got.Records.Loaded != 1000 {
		t.Fatalf("the job is %s with %d records loaded, want succeeded with 1000", got.State, got.Records.Loaded)
	}
}

// TestLargeSourceTravelsOnce: a job whose source is large (100 KiB of headers) and whose slices
// make 2,000 tasks stores its source once, on the jobs topic, and its tasks name it: each task is
// small whatever the spec, and the tasks topic holds kilobytes, not 200 MB.
func TestLargeSourceTravelsOnce(t *testing.T) {
	r := newPlannerRig(t)
	p := r.start(t)
	var headers strings.Builder
	for i := range 10 {
		fmt.Fprintf(&headers, "    X-Pad-%d: %s\n", i, strings.Repeat("p", 10<<10))
	}
	spec, err := jobspec.Parse([]byte(`name: wide
source:
  type: http
  url: ` + r.srcURL + `/api/users
  records_path: data
  key: id
  pagination: {type: offset, offset_param: offset, limit_param: limit, page_size: 100}
  slices: {type: key_range, param_from: from, param_to: to, start: 0, end: 2000, step: 1}
  headers:
` + headers.String() + `sink: {table: wide}
`))
	if err != nil {
		t.Fatal(err)
	}
	job, _, err := p.Submit(context.Background(), spec, "")
	if err != nil {
		t.Fatal(err)
	}
	tasks := r.count(t, "tasks")
	if len(tasks) != 2000 {
		t.Fatalf("%d tasks, want 2000", len(tasks))
	}
	total := 0
	for _, rec := range tasks {
		total += len(rec.Value)
		var task sluicev1.Task
		if err := proto.Unmarshal(rec.Value, &task); err != nil {
			t.Fatal(err)
		}
		if task.Source != nil || task.SourceRef != "source/"+job.ID || len(rec.Value) > 1024 {
			t.Fatalf("task %s of %d bytes carries its source (%v) or names %q", task.TaskId, len(rec.Value), task.Source != nil, task.SourceRef)
		}
	}
	var stored *sluicev1.Source
	for _, rec := range r.count(t, "jobs") {
		if string(rec.Key) == "source/"+job.ID {
			stored = &sluicev1.Source{}
			if err := proto.Unmarshal(rec.Value, stored); err != nil {
				t.Fatal(err)
			}
		}
	}
	if stored == nil || len(stored.GetHttp().GetHeaders()) != 10 {
		t.Fatalf("the source on the jobs topic: %v", stored != nil)
	}
	t.Logf("2000 tasks in %d bytes, the source once in %d", total, proto.Size(stored))

	// A small source travels in its tasks, as before.
	small, _, err := p.Submit(context.Background(), r.spec(t, "small"), "")
	if err != nil {
		t.Fatal(err)
	}
	for _, rec := range r.count(t, "tasks")[2000:] {
		var task sluicev1.Task
		if err := proto.Unmarshal(rec.Value, &task); err != nil || task.JobId != small.ID || task.Source == nil || task.SourceRef != "" {
			t.Fatalf("a small source's task: %v %v", err, task.SourceRef)
		}
	}
}
