package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sluicedata/sluice/pkg/delivery"
	"github.com/sluicedata/sluice/pkg/dlq"
	"github.com/sluicedata/sluice/pkg/events"
	"github.com/sluicedata/sluice/pkg/pipeline"
	"github.com/sluicedata/sluice/pkg/source"
	sluicev1 "github.com/sluicedata/sluice/proto/sluice/v1"
)

// taskError is why a run of a task failed, with what the source last said: the dead letter's
// context. Its class decides: transient failures run the task again, data failures dead-letter it.
type taskError struct {
	err      *delivery.Error
	attempts int
	status   int
	head     []byte
	page     uint64
	// records the task's earlier pages held; tooLarge of them were dead-lettered, not produced.
	records  uint64
	tooLarge uint64
	run      string
}

func (e *taskError) Error() string { return e.err.Error() }
func (e *taskError) Unwrap() error { return e.err }

// process runs one task through the delivery core: a run that fails transiently (a produce) runs
// again after a backoff; a run that fails for good is dead-lettered with its context; the task's
// offset becomes committable only once its records or its dead letter are acknowledged and its
// event published. It returns nil when the task is done, ctx's error when it was abandoned, and a
// fatal error that must stop the member.
func (x *Extractor) process(ctx context.Context, r *kgo.Record, s *slot, markDone func(context.Context) error,
	run func(context.Context, *kgo.Record, *slot) (delivery.Outcome, error)) error {
	return x.core.Handle(ctx, "task", delivery.Policy{Backoff: x.backoff},
		func(ctx context.Context, _ int) (delivery.Outcome, error) {
			out, err := run(ctx, r, s)
			out.Commit = markDone
			return out, err
		},
		func(err error, attempts int) (delivery.Outcome, error) {
			out, ferr := x.taskDeadLetter(r, err)
			out.Commit = markDone
			return out, ferr
		})
}

// runTask makes one run of a task: it reads its slice page by page and produces the records,
// stopping at the first failure. It returns the task's event once every record is acknowledged.
func (x *Extractor) runTask(ctx context.Context, r *kgo.Record, s *slot, ch *chain) (delivery.Outcome, error) {
	began := x.now()
	run := newRun()
	var task sluicev1.Task
	if err := proto.Unmarshal(r.Value, &task); err != nil {
		return delivery.Outcome{}, &taskError{err: delivery.New(delivery.Data, "bad_task", fmt.Errorf("task is not a sluice.v1.Task: %w", err)), run: run}
	}
	if x.cancelled.Is(task.JobId) {
		return x.skipCancelled(&task, 0), nil
	}
	spec := task.GetSource()
	if spec == nil && task.SourceRef != "" {
		var err error
		spec, err = x.namedSource(ctx, task.JobId, task.SourceRef, replayed(r))
		switch {
		case errors.Is(err, errEnded):
			return x.skipCancelled(&task, 0), nil
		case err != nil:
			return delivery.Outcome{}, &taskError{err: asDelivery(err), run: run}
		}
		task.Source = spec // what the task's follow-up and the cursor rule read; the follow-up names it again
	}
	var (
		src source.Source
		rd  source.Reader
		// leave lets the job's next task in at the run's end, unless the run passes its slot of
		// the job's cap on to the page its chain read ahead.
		leave func()
	)
	if a := ch.take(r); a != nil { // a crawl's page, read while the page before was produced
		src, rd, leave = a.src, a.reader(), a.leave
	} else {
		var err error
		if src, err = source.New(spec, x.sources); err != nil {
			return delivery.Outcome{}, &taskError{err: delivery.New(delivery.Data, source.AsError(err, "bad_task").Class, err), run: run}
		}
		if rd, err = src.Open(&task); err != nil {
			return delivery.Outcome{}, &taskError{err: delivery.New(delivery.Data, source.AsError(err, "bad_task").Class, err), run: run}
		}
	}
	if c, ok := rd.(io.Closer); ok {
		// A reader that streams its slice (a postgres COPY) holds a connection until its end: a run
		// that stops before the end gives it back.
		defer c.Close()
	}
	limits := src.Limits()
	if leave == nil {
		var err error
		if leave, err = x.admit(ctx, s, task.JobId, limits.Concurrency); err != nil {
			return delivery.Outcome{}, err
		}
	}
	defer func() { leave() }()
	x.announce(ctx, &task, run)

	prod := newTaskProducer(x, ctx, r)
	var (
		records uint64
		acked   uint64
		pages   uint32
		attempt int
		// An incremental job's largest cursor among the task's records, of those the planner's rule
		// takes: a value it rejects would become a mark that no run can go on from.
		incremental = task.GetSource().GetIncremental()
		cursorField = incremental.GetCursorField()
		maxCursor   = source.MaxCursor{Rule: source.CursorRule{Kind: incremental.GetKind(), MaxSkew: incremental.GetMaxSkew().AsDuration()}}
	)
	// failure waits for the records in flight and describes the run's end.
	failure := func(e *delivery.Error, page uint64, status int, head []byte, attempts int) error {
		if perr := prod.wait(); perr != nil {
			e = asDelivery(perr)
		}
		return &taskError{err: e, attempts: attempts, status: status, head: head, page: page, records: records,
			tooLarge: prod.tooLarge.Load(), run: run}
	}
	for rd.More() {
		if x.cancelled.Is(task.JobId) {
			// The records produced so far stay: they are loaded as usual.
			if perr := prod.wait(); perr != nil {
				x.log.Warn("records of a cancelled job's task were not all produced", "job", task.JobId, "task", task.TaskId, "error", perr)
			}
			return x.skipCancelled(&task, pages), nil
		}
		if perr := prod.failed(); perr != nil {
			return delivery.Outcome{}, failure(asDelivery(perr), 0, 0, nil, attempt)
		}
		if !pending(rd) { // a page read ahead waited for the rate limit before its request
			if err := x.wait(ctx, s, limits); err != nil {
				prod.wait()
				return delivery.Outcome{}, ctx.Err()
			}
		}
		p, more, err := rd.Next(ctx)
		if err != nil {
			if ctx.Err() != nil {
				prod.wait()
				return delivery.Outcome{}, ctx.Err()
			}
			// The page's own retries are spent: the task is dead-lettered, not run again.
			fe := source.AsError(err, "bad_task")
			return delivery.Outcome{}, failure(delivery.New(delivery.Data, fe.Class, fe.Err), fe.At, fe.Status, fe.Head, max(attempt, fe.Attempts))
		}
		if !more {
			break
		}
		attempt = max(attempt, p.Attempts)
		pages++
		last := !rd.More()
		if last {
			prod.collect()
		}
		now := x.now()
		extractedAt := timestamppb.New(now)
		for i, rec := range p.Records {
			key, keyErr := rd.Key(rec)
			prod.produce(&sluicev1.Record{JobId: task.JobId, TaskId: task.TaskId, Key: key, Payload: rec,
				ExtractedAt: extractedAt, Page: p.At, IndexInPage: uint32(i), Table: task.Table, KeyError: keyErr, Run: run, SchemaId: task.SchemaId, Checked: p.Checked})
			if cursorField != "" {
				if c, ok := source.CursorValue(rec, cursorField); ok {
					maxCursor.Add(c, now)
				}
			}
		}
		if last {
			prod.flush()
		}
		records += uint64(len(p.Records))
		// A long task commits only at its end; records acknowledged since the last page are progress.
		if a := prod.acked.Load(); a > acked {
			acked = a
			x.lag.Progressed()
		}
	}
	// The slice goes on in a task of its own (a crawl's next page), published once this task's
	// records are acknowledged, before its end is reported and committed, on this task's partition.
	// Its page is read meanwhile when the member goes on with it in process.
	var (
		next   *sluicev1.Task
		follow *kgo.Record
	)
	if then := rd.Then(); then != nil {
		next = &sluicev1.Task{JobId: task.JobId, TaskId: then.TaskId, Index: task.Index, Count: task.Count, Source: task.Source,
			Slice: then.Slice, Table: task.Table, SchemaId: task.SchemaId, PlannedAt: task.PlannedAt, Follows: task.TaskId, Query: task.Query,
			SourceRef: task.SourceRef}
		if next.SourceRef != "" {
			next.Source = nil // named, as the planner named it: a crawl's pages stay small too
		}
		value, err := proto.Marshal(next)
		if err != nil {
			prod.wait()
			return delivery.Outcome{}, delivery.New(delivery.Fatal, "bad_task", err)
		}
		follow = &kgo.Record{Topic: x.topics.tasks, Key: r.Key, Value: value, Offset: -1}
		ch.readAhead(&task, next, follow, src)
	}
	goesOn := false
	defer func() {
		if !goesOn {
			ch.drop()
		}
	}()
	if perr := prod.wait(); perr != nil {
		return delivery.Outcome{}, failure(asDelivery(perr), 0, 0, nil, attempt)
	}
	if ctx.Err() != nil {
		return delivery.Outcome{}, ctx.Err()
	}
	out := delivery.Outcome{}
	extracted := &sluicev1.TaskExtracted{TaskId: task.TaskId, Records: records, Pages: pages, Attempts: uint32(attempt),
		DeadLettered: prod.tooLarge.Load(), Run: run, Follows: task.Follows, MaxCursor: maxCursor.Value()}
	if rj := maxCursor.Rejected; rj != (source.Rejected{}) {
		extracted.CursorRejected = &sluicev1.CursorRejected{Unparseable: rj.Unparseable, Future: rj.Future}
		x.log.Warn("cursor values left out of the task's largest", "job", task.JobId, "task", task.TaskId,
			"unparseable", rj.Unparseable, "future", rj.Future)
	}
	if follow != nil {
		ch.goesOn()
		goesOn = true
		leave = ch.keep(leave)
		out.Follow = []*kgo.Record{follow}
		extracted.NextTaskId = next.TaskId
	}
	x.observe(r, prod, began)
	out.Events = []*sluicev1.JobEvent{{JobId: task.JobId, Producer: "extractor",
		Event: &sluicev1.JobEvent_TaskExtracted{TaskExtracted: extracted}}}
	return out, nil
}

// announce tells the planner that the task is worked on from now (TaskStarted): until then it
// waited on the tasks topic, which is no stall of its job. The event is produced without waiting
// for it, ahead of the task's end on the same client and partition: a run is not held up by a
// broker's round trip, and an event lost costs only the planner's telling a wait from a stall.
func (x *Extractor) announce(ctx context.Context, task *sluicev1.Task, run string) {
	rec, err := events.Record(x.topics.events, &sluicev1.JobEvent{JobId: task.JobId, At: timestamppb.New(x.now()), Producer: "extractor",
		Event: &sluicev1.JobEvent_TaskStarted{TaskStarted: &sluicev1.TaskStarted{TaskId: task.TaskId, Run: run, Follows: task.Follows}}})
	if err != nil {
		x.log.Warn("encode the event of a task's start", "job", task.JobId, "task", task.TaskId, "error", err)
		return
	}
	x.cl.Produce(ctx, rec, func(_ *kgo.Record, err error) {
		if err != nil && ctx.Err() == nil {
			x.log.Warn("publish the event of a task's start; its job's stall is told from its end alone", "job", task.JobId, "task", task.TaskId, "error", err)
		}
	})
}

// skipCancelled is the outcome of a task whose job was cancelled (or failed before its tasks all
// ended), after pages of it: nothing to report (the job has ended), the task's offset to commit.
func (x *Extractor) skipCancelled(task *sluicev1.Task, pages uint32) delivery.Outcome {
	x.log.Info("skipped a task of a job that ended", "job", task.JobId, "task", task.TaskId, "pages_read", pages)
	x.metrics.tasksDone.WithLabelValues("cancelled").Inc()
	return delivery.Outcome{}
}

// asDelivery returns err's delivery error, or a transient one around it.
func asDelivery(err error) *delivery.Error {
	var e *delivery.Error
	if errors.As(err, &e) {
		return e
	}
	return delivery.New(delivery.Transient, delivery.ReasonOf(err), err)
}

// errEnded is a task whose job ended: cancelled while the task waited for its source, or ended
// with its source removed (a copy of a task published again). It is skipped.
var errEnded = errors.New("the task's job ended")

// namedSource returns the source a task of job names instead of carrying (a large one, on the
// jobs topic). The planner stores it before the tasks, so it is there once this member has read
// the topic up to them: a while is waited for that. A job that ended meanwhile, or whose source
// was removed with its end, is errEnded unless the task is a replay, which must run: then, and
// when the source is not there after the wait (this member may not read the topic), the task is
// dead-lettered with class no_source.
func (x *Extractor) namedSource(ctx context.Context, job, ref string, replay bool) (*sluicev1.Source, error) {
	wait := time.NewTimer(x.cfg.SourceWait)
	defer wait.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		if src, ok := x.cancelled.Source(ref); ok {
			return src, nil
		}
		if !replay && (x.cancelled.Is(job) || x.cancelled.Removed(ref)) {
			return nil, errEnded
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-wait.C:
			return nil, delivery.New(delivery.Data, "no_source", fmt.Errorf(
				"the task names its job's source (%s), which is not on the jobs topic: the job ended, or this member may not read the topic (READ on it)", ref))
		case <-tick.C:
		}
	}
}

// replayed reports whether the task at r was put back by a replay of its dead letter.
func replayed(r *kgo.Record) bool {
	for _, h := range r.Headers {
		if h.Key == dlq.HeaderReplayOf {
			return true
		}
	}
	return false
}

// taskDeadLetter is the outcome of a task that failed for good: its dead letter, with what the
// source last said, and the event that tells the planner.
func (x *Extractor) taskDeadLetter(r *kgo.Record, err error) (delivery.Outcome, error) {
	var te *taskError
	if !errors.As(err, &te) {
		te = &taskError{err: asDelivery(err)}
	}
	var task sluicev1.Task
	_ = proto.Unmarshal(r.Value, &task) // a task that does not decode is dead-lettered as it is
	// A task that names its source keeps it in the letter, so that a replay can run it after the
	// job's end removed the source from the jobs topic.
	var payload []byte
	if task.Source == nil && task.SourceRef != "" {
		if src, ok := x.cancelled.Source(task.SourceRef); ok {
			inlined := proto.Clone(&task).(*sluicev1.Task)
			inlined.Source, inlined.SourceRef = src, ""
			payload, _ = proto.Marshal(inlined)
		}
	}
	class := te.err.Reason
	cause := error(te.err)
	if te.page > 0 || te.status > 0 {
		cause = fmt.Errorf("page at %d: %w", te.page, te.err)
	}
	letter, lerr := dlq.Record(x.topics.dlq, dlq.Letter{
		Stage: sluicev1.DeadLetter_STAGE_EXTRACT, ErrorClass: class, Err: cause, Attempts: te.attempts,
		Original: r, Payload: payload, JobID: task.JobId, TaskID: task.TaskId, HTTPStatus: te.status, ResponseHead: te.head,
		FailedAt: x.now(),
	}, x.cfg.MaxRecordBytes)
	if lerr != nil {
		return delivery.Outcome{}, delivery.New(delivery.Fatal, "bad_letter", lerr)
	}
	var se *source.Error
	diagnostic := ""
	if errors.As(err, &se) {
		diagnostic = se.Diagnostic // what the letter leaves out, such as a database's DETAIL
	}
	x.log.Warn("task dead-lettered", "job", task.JobId, "task", task.TaskId, "class", class,
		"attempts", te.attempts, "status", te.status, "error", cause, "diagnostic", diagnostic)
	x.metrics.DeadLetters.WithLabelValues("extract", class).Inc()
	x.metrics.tasksDone.WithLabelValues("dead_lettered").Inc()
	ev := &sluicev1.JobEvent{JobId: task.JobId, Producer: "extractor", Event: &sluicev1.JobEvent_TaskDeadLettered{
		TaskDeadLettered: &sluicev1.TaskDeadLettered{TaskId: task.TaskId, ErrorClass: class, Records: te.records,
			DeadLettered: te.tooLarge, Run: te.run, Follows: task.Follows}}}
	return delivery.Outcome{Letters: []*kgo.Record{letter}, Events: []*sluicev1.JobEvent{ev}}, nil
}

// observe counts a run whose records are all acknowledged.
func (x *Extractor) observe(r *kgo.Record, prod *taskProducer, began time.Time) {
	label := pipeline.Partition(r.Partition)
	if n := prod.tooLarge.Load(); n > 0 {
		x.metrics.DeadLetters.WithLabelValues("extract", "too_large").Add(float64(n))
		x.metrics.Processed.WithLabelValues(label, pipeline.StatusDeadLettered).Add(float64(n))
	}
	x.metrics.Processed.WithLabelValues(label, pipeline.StatusProduced).Add(float64(prod.acked.Load()))
	x.metrics.produced.Add(float64(prod.acked.Load()))
	x.metrics.tasksDone.WithLabelValues("extracted").Inc()
	x.metrics.Processing.Observe(time.Since(began).Seconds())
}

// newRun names one attempt at a task.
func newRun() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// admit waits, without the member's slot, until the job has fewer than limit tasks at work on this
// member (0: no cap), and returns the function that lets the next one in.
func (x *Extractor) admit(ctx context.Context, s *slot, job string, limit int) (func(), error) {
	if limit <= 0 {
		return func() {}, nil
	}
	x.mu.Lock()
	sem := x.jobSlots[job]
	if sem == nil || cap(sem) != limit {
		sem = make(chan struct{}, limit)
		x.jobSlots[job] = sem
	}
	x.mu.Unlock()
	select {
	case sem <- struct{}{}:
	default:
		admitted := false
		err := x.park(ctx, s, func(ctx context.Context) error {
			select {
			case sem <- struct{}{}:
				admitted = true
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
		if err != nil {
			if admitted { // let in, then cancelled while taking its slot back
				<-sem
			}
			return nil, err
		}
	}
	return func() { <-sem }, nil
}

// wait blocks for the job's rate limit, when it has one, with the task's slot given back meanwhile.
func (x *Extractor) wait(ctx context.Context, s *slot, limits source.Limits) error {
	if limits.RateLimit <= 0 {
		return nil
	}
	p := x.pacers.get(limits.Host, limits.RateLimit)
	x.metrics.ratePerSecond.WithLabelValues(limits.Host).Set(p.perSecond())
	if !p.allow(time.Now()) {
		x.metrics.rateLimitWaits.Inc()
		return x.park(ctx, s, p.wait)
	}
	return nil
}

// paced reports whether the job's rate limit lets a request go now, and takes it when it does.
func (x *Extractor) paced(limits source.Limits) bool {
	if limits.RateLimit <= 0 {
		return true
	}
	return x.pacers.get(limits.Host, limits.RateLimit).allow(time.Now())
}

// hear gives a response's status and headers to the pacers of its host.
func (x *Extractor) hear(host string, status int, h http.Header) {
	for _, p := range x.pacers.forHost(host) {
		if p.observe(time.Now(), status, h) {
			x.metrics.throttles.WithLabelValues(host).Inc()
		}
		x.metrics.ratePerSecond.WithLabelValues(host).Set(p.perSecond())
	}
}
