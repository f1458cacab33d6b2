package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sluicedata/sluice/pkg/chsink"
	"github.com/sluicedata/sluice/pkg/delivery"
	"github.com/sluicedata/sluice/pkg/events"
	"github.com/sluicedata/sluice/pkg/jobspec"
	"github.com/sluicedata/sluice/pkg/kafka"
	"github.com/sluicedata/sluice/pkg/pipeline"
	"github.com/sluicedata/sluice/pkg/source"
	sluicev1 "github.com/sluicedata/sluice/proto/sluice/v1"
)

// Planner accepts jobs, publishes their tasks and folds the job events into their progress.
type Planner struct {
	cl     *kgo.Client
	topics topics
	cfg    PlannerConfig
	// sources is what sources plan with: HTTP, secrets, retries.
	sources source.Env
	jobs    *Jobs
	log     *slog.Logger
	backoff pipeline.Backoff
	retry   *delivery.Retrier
	now     func() time.Time
	// states follows the jobs topic from its start until ctx ends (the final states that outlive
	// the events, the marks and the schedules): fn gets every record, and live is called once the
	// records the topic held at the start are read.
	states func(ctx context.Context, fn func(*kgo.Record), live func()) error
	// lease says whether this planner leads: only the leader writes. nil: it runs alone and leads.
	lease *lease
	// peers are where a follower may forward writes (SLUICE_PLANNER_PEERS); none: it forwards none.
	peers peers
	// unended are the ends of jobs this planner folded but has not seen recorded on the events
	// topic: a follower keeps them for when it leads, the leader publishes them.
	unendedMu sync.Mutex
	unended   map[string]*sluicev1.JobEvent
	// owed are the ids of the jobs this planner forgot while it followed, whose tombstones the
	// leader has not written yet: it writes them once it leads.
	owedMu sync.Mutex
	owed   map[string]bool
	// caughtUp is set once the events that existed at start are folded in: before that, progress
	// is incomplete and the planner does not finish jobs.
	caughtUp   atomic.Bool
	caughtUpAt time.Time
	// folded is how far the events are folded in, for a cancel to wait on; statesFolded how far
	// the jobs topic is, for a planner that takes the lead over to wait on.
	folded       *folded
	statesFolded *folded
	// submitMu makes the check of an idempotency key and the planning it guards one step.
	submitMu sync.Mutex
	// publishing are the jobs whose tasks this process is publishing now.
	publishing sync.Map
	// unsure are plans whose planned event got no acknowledgement, by idempotency key: the event
	// may be on the topic all the same, so a retry with the key publishes the same job again
	// rather than plan a second one. Guarded by submitMu.
	unsure map[string]unsurePlan
	// tables says why a job cannot write its sink table (columns that cannot take the rows, a
	// Buffer, another job's table), and records the job's claim on it; nil when ClickHouse cannot
	// be asked (the loaders hold the records of a table that refuses them). nil: no checks.
	tables sinkGuard
	// names are the marks of incremental jobs and the schedules, from the jobs topic.
	names *names
	// auth guards the jobs API; nil serves it to everyone (SLUICE_PLANNER_AUTH=none).
	auth *authorizer
	// submits holds a slot for each submit in progress.
	submits chan struct{}
	// groups measures the extractors' and the loaders' lag.
	groups *kafka.GroupMonitor
	// letters are the newest dead letters, for the status page.
	letters *letters
	// forgottenJobs counts the finished jobs forgotten past the retention; nil in tests that do
	// not count.
	forgottenJobs prometheus.Counter
}

type topics struct{ tasks, events, jobs, schemas string }

// sinkGuard checks a job's sink table at submit and records the job's claim to write it
// (sinkTables, in ClickHouse).
type sinkGuard interface {
	Check(ctx context.Context, table string, sink *chsink.Sink, c chsink.Claim) error
	Claim(ctx context.Context, table string, c chsink.Claim) error
}

// maxUnsure bounds the unacknowledged plans a planner remembers (a broker down for long refuses
// every submission): past it a retry may plan a second job, as it would without a key.
const maxUnsure = 10_000

// unsurePlan is a plan whose planned event may or may not be on the events topic.
type unsurePlan struct {
	plan    plan
	planned *sluicev1.JobEvent
	sum     []byte
}

// errDiscover is a source that could not be asked for its extent.
var errDiscover = errors.New("discover the extent of the source")

// errNotCaughtUp is a submission before the planner has read the job events written before it
// started.
var errNotCaughtUp = errors.New("the planner is still reading the job events written before it started; submit again shortly")

// errKeyReused is an idempotency key already used for another spec.
var errKeyReused = errors.New("the idempotency key was used for another job spec")

// Submit takes a parsed, valid spec: it discovers the extent, plans the job, and publishes its
// planned event, its tasks, and the event that says they are all out. The job exists in the
// planner's state when Submit returns. With a key, a job already submitted under it is returned
// instead (existing is true), or errKeyReused when its spec differs.
func (p *Planner) Submit(ctx context.Context, spec *jobspec.Spec, key string) (job Job, existing bool, err error) {
	return p.plan(ctx, spec, key, nil)
}

// plan is Submit; when still is set, it is asked under submitMu, just before the planned event
// goes out, whether the run is still wanted (its schedule was not deleted or replaced meanwhile).
func (p *Planner) plan(ctx context.Context, spec *jobspec.Spec, key string, still func() bool) (job Job, existing bool, err error) {
	if !p.caughtUp.Load() {
		// Before the replay ends an earlier submission with the same key may not be known yet.
		return Job{}, false, errNotCaughtUp
	}
	specJSON := spec.JSON()
	sum := sha256.Sum256(specJSON)
	if j, ok, err := p.byKey(key, sum[:]); ok || err != nil {
		return j, ok, err
	}
	schema := spec.Sink.Schema(spec.Name)
	var sink *chsink.Sink
	if schema != nil {
		var probs []chsink.Problem
		if sink, probs = chsink.NewSink(schema); len(probs) > 0 { // Parse checked it: a bug if not
			return Job{}, false, fmt.Errorf("sink schema: %v", probs)
		}
	}
	claim := chsink.Claim{Job: spec.Name, Shared: spec.Sink.Shared, Cluster: spec.Sink.Cluster}
	if p.tables != nil {
		if err := p.tables.Check(ctx, spec.Sink.Table, sink, claim); err != nil {
			return Job{}, false, err
		}
	}
	if err := p.overlaps(spec); err != nil {
		return Job{}, false, err
	}
	srcProto := spec.SourceProto()
	var from *sluicev1.Mark // the mark an incremental run starts from
	if in := srcProto.GetIncremental(); in != nil {
		if err := p.advanceMarks(ctx); err != nil {
			return Job{}, false, err
		}
		if from, err = p.incremental(spec, in); err != nil {
			return Job{}, false, err
		}
	}
	src, err := source.New(srcProto, p.sources)
	if err != nil {
		return Job{}, false, err
	}
	sp, err := src.Plan(ctx, spec.Tasks)
	if err != nil {
		return Job{}, false, fmt.Errorf("%w: %w", errDiscover, err)
	}
	// The table is claimed once the job is known to be plannable, so that a job refused for its
	// source does not keep a table from others; a claim lost to another job at the same time is
	// refused as the check would have.
	if p.tables != nil {
		if err := p.tables.Claim(ctx, spec.Sink.Table, claim); err != nil {
			return Job{}, false, err
		}
	}
	// The schema goes out before the tasks whose records carry its id: a loader that meets the id
	// finds it on the topic.
	schemaID, err := p.publishSchema(ctx, schema)
	if err != nil {
		return Job{}, false, err
	}
	p.submitMu.Lock()
	if j, ok, err := p.byKey(key, sum[:]); ok || err != nil {
		p.submitMu.Unlock()
		return j, ok, err
	}
	if err := p.overlaps(spec); err != nil { // again: a run may have been planned meanwhile
		p.submitMu.Unlock()
		return Job{}, false, err
	}
	if still != nil && !still() {
		p.submitMu.Unlock()
		return Job{}, false, errScheduleGone
	}
	// A mark set by hand, or moved by a run that succeeded, while the source was asked: the run
	// would read from the mark before.
	if srcProto.GetIncremental() != nil && p.names.mark(spec.Name) != from {
		p.submitMu.Unlock()
		return Job{}, false, errMarkMoved
	}
	if err := ctx.Err(); err != nil { // shutting down: plan nothing new
		p.submitMu.Unlock()
		return Job{}, false, err
	}
	// Once the planned event is out, the tasks must follow even if the client goes away.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	now := p.now()
	pl := planTasks(spec, srcProto, schemaID, events.NewJobID(spec.Name, now), sp, now)
	planned := &sluicev1.JobEvent{JobId: pl.jobID, At: timestamppb.New(now), Producer: "planner",
		Event: &sluicev1.JobEvent_Planned{Planned: &sluicev1.JobPlanned{
			Name: spec.Name, Table: spec.Sink.Table, Tasks: uint32(len(pl.tasks)),
			ExpectedRecords: uint64(max(pl.expected, 0)), ExpectedUnknown: pl.expected < 0,
			Spec: specJSON, Source: srcProto, IdempotencyKey: key, SpecSha256: sum[:], Extent: pl.extent,
		}}}
	if u, ok := p.unsure[key]; ok && key != "" {
		if !bytes.Equal(u.sum, sum[:]) {
			p.submitMu.Unlock()
			return Job{}, false, fmt.Errorf("%w: job %s", errKeyReused, u.plan.jobID)
		}
		// The same job again: its planned event and tasks are idempotent by job and task id.
		pl, planned = u.plan, u.planned
	}
	p.publishing.Store(pl.jobID, true)
	defer p.publishing.Delete(pl.jobID)
	// The planned event goes first, so that every task's events find their job; the job counts as
	// planned only once TasksPublished follows the tasks, and a planner publishes the tasks of a
	// job without it again.
	err = p.publishEvents(ctx, planned)
	switch {
	case err == nil:
		delete(p.unsure, key)
		if done := p.jobs.Apply(planned); done != nil { // nothing to extract
			p.publishFinished(ctx, done)
		}
	case key != "" && len(p.unsure) < maxUnsure:
		if p.unsure == nil {
			p.unsure = map[string]unsurePlan{}
		}
		p.unsure[key] = unsurePlan{plan: pl, planned: planned, sum: sum[:]}
	}
	p.submitMu.Unlock()
	if err != nil {
		return Job{}, false, err
	}
	if err := p.publishTasks(ctx, pl); err != nil {
		return Job{}, false, fmt.Errorf("job %s is planned but its tasks are not all out (a planner publishes them again): %w", pl.jobID, err)
	}
	p.log.Info("job planned", "job", pl.jobID, "tasks", len(pl.tasks), "expected", pl.expected, "table", spec.Sink.Table)
	j, _ := p.jobs.Get(pl.jobID, p.now())
	return j, false, nil
}

// byKey returns the job submitted under key, or errKeyReused when it had another spec.
func (p *Planner) byKey(key string, sum []byte) (Job, bool, error) {
	if key == "" {
		return Job{}, false, nil
	}
	j, hash, ok := p.jobs.ByKey(key, p.now())
	if ok && !bytes.Equal(hash, sum) {
		return Job{}, false, fmt.Errorf("%w: job %s", errKeyReused, j.ID)
	}
	return j, ok, nil
}

// taskBatch is how many tasks are encoded and produced at a time: what the planner holds of a
// plan's tasks on the wire, whatever the task count.
const taskBatch = 500

// publishTasks puts the plan's source on the jobs topic when the tasks name it, then the tasks on
// the tasks topic in batches, and then says so on the events topic. Publishing them twice is
// harmless: task ids are deterministic, and a task's first report counts.
func (p *Planner) publishTasks(ctx context.Context, pl plan) error {
	if len(pl.tasks) == 0 {
		return nil
	}
	if pl.sourceRef != "" {
		value, err := proto.Marshal(pl.source)
		if err != nil {
			return err
		}
		if err := p.produce(ctx, &kgo.Record{Topic: p.topics.jobs, Key: []byte(pl.sourceRef), Value: value}); err != nil {
			return fmt.Errorf("store the job's source: %w", err)
		}
	}
	for start := 0; start < len(pl.tasks); start += taskBatch {
		batch := pl.tasks[start:min(start+taskBatch, len(pl.tasks))]
		recs := make([]*kgo.Record, len(batch))
		for i, t := range batch {
			value, err := proto.Marshal(t)
			if err != nil {
				return err
			}
			recs[i] = &kgo.Record{Topic: p.topics.tasks, Key: []byte(t.TaskId), Value: value}
		}
		if err := p.produce(ctx, recs...); err != nil {
			return fmt.Errorf("publish tasks %d to %d of %d: %w", start, start+len(batch), len(pl.tasks), err)
		}
	}
	out := &sluicev1.JobEvent{JobId: pl.jobID, Producer: "planner",
		Event: &sluicev1.JobEvent_TasksPublished{TasksPublished: &sluicev1.TasksPublished{Tasks: uint32(len(pl.tasks))}}}
	if err := p.publishEvents(ctx, out); err != nil {
		return err
	}
	p.jobs.Apply(out)
	return nil
}

// Follow consumes the events topic from its start and folds every event in, finishing jobs once
// the events that existed at start are read. It follows the jobs topic beside it.
func (p *Planner) Follow(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	live := make(chan struct{})
	statesDone := make(chan error, 1)
	go func() { statesDone <- p.states(ctx, p.foldState, func() { close(live) }) }()
	defer func() { cancel(); <-statesDone }()
	select {
	case <-live:
	case err := <-statesDone:
		statesDone <- err // for the deferred wait
		if err != nil && ctx.Err() == nil {
			return fmt.Errorf("read the job states: %w", err)
		}
		return nil
	}
	p.log.Info("job states read", "jobs", p.jobs.Counts())
	remaining, err := kafka.ToRead(ctx, p.cl, p.topics.events)
	if err != nil {
		return err
	}
	p.markCaughtUp(ctx, remaining)
	for {
		fetches := p.cl.PollFetches(ctx)
		if ctx.Err() != nil || fetches.IsClientClosed() {
			return nil
		}
		fetches.EachError(func(topic string, partition int32, err error) {
			p.log.Warn("fetch job events failed", "topic", topic, "partition", partition, "error", err)
		})
		fetches.EachRecord(func(r *kgo.Record) {
			ev, err := events.Decode(r)
			if err != nil {
				p.log.Warn("skip undecodable job event", "partition", r.Partition, "offset", r.Offset, "error", err)
			} else {
				if ev.GetFinished() != nil {
					p.ended(ev.JobId)
				}
				if fin := p.jobs.Apply(ev); fin != nil {
					p.finish(ctx, fin)
				}
			}
			if end, ok := remaining[r.Partition]; ok && r.Offset+1 >= end {
				delete(remaining, r.Partition)
			}
		})
		fetches.EachPartition(func(fp kgo.FetchTopicPartition) {
			if n := len(fp.Records); n > 0 {
				p.folded.advance(fp.Partition, fp.Records[n-1].Offset+1)
			}
		})
		p.markCaughtUp(ctx, remaining)
	}
}

// foldState folds in one record of the jobs topic, and records how far the topic is folded.
func (p *Planner) foldState(r *kgo.Record) {
	p.applyState(r)
	p.statesFolded.advance(r.Partition, r.Offset+1)
}

// applyState folds in one record of the jobs topic: a mark, a schedule, a job's final state or its
// tombstone.
func (p *Planner) applyState(r *kgo.Record) {
	if ok, err := p.names.restore(r); ok {
		if err != nil {
			p.log.Warn("skip an undecodable mark or schedule", "key", string(r.Key), "offset", r.Offset, "error", err)
		}
		return
	}
	if strings.HasPrefix(string(r.Key), events.SourcePrefix) {
		return // a source that tasks name: the extractors read it
	}
	if len(r.Value) == 0 { // a forgotten job's tombstone
		p.jobs.Forgotten(string(r.Key))
		p.tombstoned(string(r.Key))
		return
	}
	var st sluicev1.JobState
	if err := proto.Unmarshal(r.Value, &st); err != nil {
		p.log.Warn("skip undecodable job state", "partition", r.Partition, "offset", r.Offset, "error", err)
		return
	}
	p.jobs.Restore(&st)
}

// finish records the end of a job that the events completed: the leader publishes it once caught
// up; otherwise it waits in unended until this planner leads or sees it recorded.
func (p *Planner) finish(ctx context.Context, fin *sluicev1.JobEvent) {
	if p.caughtUp.Load() && p.leads() {
		p.publishFinished(ctx, fin)
		return
	}
	p.unendedMu.Lock()
	defer p.unendedMu.Unlock()
	if p.unended == nil {
		p.unended = map[string]*sluicev1.JobEvent{}
	}
	p.unended[fin.JobId] = fin
}

// ended takes note that a job's end is on the events topic.
func (p *Planner) ended(id string) {
	p.unendedMu.Lock()
	defer p.unendedMu.Unlock()
	delete(p.unended, id)
}

// publishUnended publishes the ends of the jobs this planner folded but saw nobody record, once it
// leads and is caught up. A job ended twice (its end was on its way) folds to the same state.
func (p *Planner) publishUnended(ctx context.Context) {
	p.unendedMu.Lock()
	fins := make([]*sluicev1.JobEvent, 0, len(p.unended))
	for _, fin := range p.unended {
		fins = append(fins, fin)
	}
	p.unended = nil
	p.unendedMu.Unlock()
	for _, fin := range fins {
		if _, known := p.jobs.Get(fin.JobId, p.now()); known {
			p.finish(ctx, fin)
		}
	}
}

// markCaughtUp switches to deciding once every partition is read to where it ended at start, and
// records the end of the jobs that completed during the replay. A job finished twice (its end was
// also in the log) folds to the same state.
func (p *Planner) markCaughtUp(ctx context.Context, remaining map[int32]int64) {
	if len(remaining) > 0 || p.caughtUp.Load() {
		return
	}
	// Before it decides, the planner forgets the jobs past the retention: those that passed it while
	// no planner ran, and those folded in again from their events because compaction has dropped
	// their tombstones.
	p.forget(ctx)
	p.jobs.Replayed()
	p.caughtUpAt = p.now()
	p.jobs.Live()
	p.caughtUp.Store(true)
	if p.leads() {
		p.publishUnended(ctx)
	}
	p.log.Info("job events caught up")
}

// Maintain looks after the jobs every interval once the planner is caught up: it publishes again
// the tasks of jobs whose planning did not finish, fails jobs without news past the deadline, and
// puts the final state of finished jobs on the jobs topic.
func (p *Planner) Maintain(ctx context.Context) error {
	t := time.NewTicker(min(p.cfg.RepublishAfter/2, 5*time.Second))
	defer t.Stop()
	defer p.names.planning.Wait()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if !p.caughtUp.Load() {
			continue
		}
		if !p.leads() {
			p.forget(ctx) // what it keeps: a follower writes nothing
			continue
		}
		now := p.now()
		for _, u := range p.jobs.Unpublished(now.Add(-p.cfg.RepublishAfter)) {
			if _, busy := p.publishing.Load(u.id); !busy {
				p.republish(ctx, u)
			}
		}
		// News is counted from when this planner caught up at the earliest: a planner that was down
		// is no reason to fail a job.
		for _, fin := range p.jobs.Stalled(now.Add(-p.cfg.JobStallTimeout), p.caughtUpAt, p.cfg.JobStallTimeout) {
			if p.jobs.End(fin, now) {
				p.log.Warn("job without progress; failing it", "job", fin.JobId, "reason", fin.GetFinished().Reason)
				p.publishFinished(ctx, fin)
			}
		}
		_ = p.store(ctx) // logged; tried again at the next tick
		p.forget(ctx)
		p.payTombstones(ctx)
		if err := p.advanceMarks(ctx); err != nil {
			p.log.Warn("advance the marks of incremental jobs; trying again", "error", err)
		} else {
			p.runSchedules(ctx)
		}
	}
}

// publishSchema publishes a typed sink's schema and returns its id; "" for the raw landing table.
func (p *Planner) publishSchema(ctx context.Context, schema *sluicev1.SinkSchema) (string, error) {
	if schema == nil {
		return "", nil
	}
	id := chsink.SchemaID(schema)
	value, err := proto.Marshal(schema)
	if err != nil {
		return "", fmt.Errorf("encode sink schema: %w", err)
	}
	// Publishing the same schema again writes the same key and value (catalog.Publish's contract).
	if err := p.produce(ctx, &kgo.Record{Topic: p.topics.schemas, Key: []byte(id), Value: value}); err != nil {
		return "", fmt.Errorf("publish sink schema %s: %w", id, err)
	}
	return id, nil
}

// republish publishes the tasks of a job whose planner stopped before it said they were out.
func (p *Planner) republish(ctx context.Context, u unpublished) {
	sp, spec, src, err := p.replan(u)
	if err != nil {
		fin := &sluicev1.JobEvent{JobId: u.id, Producer: "planner", Event: &sluicev1.JobEvent_Finished{Finished: &sluicev1.JobFinished{
			State: sluicev1.JobFinished_STATE_FAILED, Reason: fmt.Sprintf("its tasks cannot be published again: %v", err)}}}
		if p.jobs.End(fin, p.now()) {
			p.publishFinished(ctx, fin)
		}
		return
	}
	schemaID, err := p.publishSchema(ctx, spec.Sink.Schema(spec.Name))
	if err == nil {
		err = p.publishTasks(ctx, planTasks(spec, src, schemaID, u.id, sp, u.at))
	}
	if err != nil {
		p.log.Warn("publish the tasks of a job again", "job", u.id, "error", err)
		return
	}
	p.log.Info("tasks of a job published again", "job", u.id)
}

// replan plans a job again from its stored spec, its planned source (an incremental run's start
// in it) and the extent its planning found.
func (p *Planner) replan(u unpublished) (source.Plan, *jobspec.Spec, *sluicev1.Source, error) {
	spec, err := jobspec.Parse(u.spec)
	if err != nil {
		return source.Plan{}, nil, nil, fmt.Errorf("the stored spec does not parse: %w", err)
	}
	srcProto := u.source
	if srcProto == nil {
		srcProto = spec.SourceProto()
	}
	src, err := source.New(srcProto, p.sources)
	if err != nil {
		return source.Plan{}, nil, nil, err
	}
	extent := u.extent
	if len(extent) == 0 {
		// Planned before planned events kept the extent: the HTTP sources of then had their total.
		extent = []byte(strconv.FormatInt(u.expected, 10))
	}
	sp, err := src.Replan(extent, spec.Tasks)
	return sp, spec, srcProto, err
}

// store puts the final state of finished jobs on the compacted jobs topic. A failure is logged,
// and the states are stored again at the next try.
func (p *Planner) store(ctx context.Context) error {
	states := p.jobs.Unstored()
	if len(states) == 0 {
		return nil
	}
	recs := make([]*kgo.Record, 0, len(states))
	for _, st := range states {
		v, err := proto.Marshal(st)
		if err != nil {
			p.log.Error("encode job state", "job", st.JobId, "error", err)
			continue
		}
		recs = append(recs, &kgo.Record{Topic: p.topics.jobs, Key: []byte(st.JobId), Value: v},
			// The source its tasks may have named goes with the job's end: compaction drops both.
			&kgo.Record{Topic: p.topics.jobs, Key: []byte(sourceRef(st.JobId))})
	}
	if err := p.produce(ctx, recs...); err != nil {
		p.log.Warn("store job states; trying again", "jobs", len(recs), "error", err)
		return err
	}
	p.jobs.Stored(states)
	return nil
}

// errBehind is a cancel asked while the planner had not folded in the events written before.
var errBehind = errors.New("the planner is still reading the job events written before the cancel; cancel again shortly")

// errNotStored is a cancel that this planner holds but could not yet put on the jobs topic.
var errNotStored = errors.New("the job is cancelled, but its state is not on the jobs topic yet, where the extractors learn it; the planner keeps trying, and cancelling again tries now")

// errCancelNotRecorded is a cancel that this planner's term ended under: the leader must record it.
var errCancelNotRecorded = errors.New("this planner's lead ended before the cancel was recorded; send it again, to the leader")

// Cancel ends a running job as cancelled by who, and puts its state on the jobs topic before it
// answers: the extractors learn it there and skip the job's tasks not yet done, and a planner that
// restarts keeps it. The records extracted before are loaded as usual; the job's counts stay as
// they were when it was cancelled. Cancelling a cancelled job stores its state again.
//
// It decides on every event written before it was asked: a job whose last task completed a moment
// ago has succeeded, even if the planner had not folded that in yet.
//
// It holds the term throughout (a leader that hands the lease over waits for it), and changes
// nothing when the term has ended before it decides: the answer is errNotLeader, and the client
// sends the cancel again, to the leader. A term that ends after (it lapsed) leaves the cancel here,
// for when this planner leads again, and answers errNotLeader as well.
func (p *Planner) Cancel(ctx context.Context, id, who string) (Job, error) {
	if !p.caughtUp.Load() {
		return Job{}, errNotCaughtUp
	}
	// A client that goes away does not stop what the cancel started; the term does.
	termCtx, release, err := p.hold(context.WithoutCancel(ctx))
	if err != nil {
		return Job{}, err
	}
	defer release()
	if err := p.readWritten(ctx); err != nil {
		return Job{}, err
	}
	if termCtx.Err() != nil || !p.leads() { // the term lapsed, or is being handed over
		return Job{}, errNotLeader
	}
	reason := "cancelled"
	if who != "" {
		reason = "cancelled by " + who
	}
	fin, err := p.jobs.Cancel(id, reason, p.now())
	if err != nil {
		return Job{}, err
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	job, _ := p.jobs.Get(id, p.now())
	if fin != nil {
		if err := p.publishFinished(ctx, fin); errors.Is(err, errNotLeader) {
			return job, fmt.Errorf("%w: %w", errCancelNotRecorded, err)
		}
	}
	switch err := p.store(ctx); {
	case errors.Is(err, errNotLeader):
		// The job's end is on the events topic: the leader holds the job cancelled, and stores its
		// state when the client cancels again.
		return job, fmt.Errorf("%w: %w", errCancelNotRecorded, err)
	case err != nil:
		return job, fmt.Errorf("%w (%v)", errNotStored, err)
	}
	return job, nil
}

// hold holds the term for a write of several steps: the context ends with the term, and release
// lets it go; errNotLeader when this planner does not lead. A planner without a lease always may.
func (p *Planner) hold(ctx context.Context) (context.Context, func(), error) {
	if p.lease == nil {
		return ctx, func() {}, nil
	}
	return p.lease.Hold(ctx)
}

// readWritten waits, ctx allowing, until every job event on the topic now is folded in.
func (p *Planner) readWritten(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	ends, err := kafka.ToRead(ctx, p.cl, p.topics.events)
	if err == nil {
		err = p.folded.wait(ctx, ends)
	}
	if err != nil {
		return fmt.Errorf("%w (%v)", errBehind, err)
	}
	return nil
}

// publishFinished records a job's end on the events topic, retrying until it is written or ctx
// ends; an end this planner cannot write as it does not lead is kept for when it leads again.
func (p *Planner) publishFinished(ctx context.Context, fin *sluicev1.JobEvent) error {
	fin.At = timestamppb.New(p.now())
	_, err := p.retry.Do(ctx, "event", delivery.Policy{Backoff: p.backoff}, func(int) error {
		err := p.publishEvents(ctx, fin)
		if errors.Is(err, errNotLeader) {
			return delivery.New(delivery.Fatal, "not_leader", err)
		}
		return delivery.ClassifyKafka(err)
	})
	if errors.Is(err, errNotLeader) {
		p.finish(ctx, fin) // kept for when this planner leads again
	}
	if err == nil {
		p.log.Info("job finished", "job", fin.JobId, "state", stateFromProto(fin.GetFinished().State),
			"reason", fin.GetFinished().Reason)
	}
	return err
}

// leads reports whether this planner may write now: it leads, or runs alone without a lease.
func (p *Planner) leads() bool { return p.lease == nil || p.lease.Leading() }

// produce writes records, and returns once the brokers have them, while this planner leads: it is
// the only way the planner writes to Kafka. The write's context ends with the term, so that a
// planner that lost the lease stops writing at once.
func (p *Planner) produce(ctx context.Context, recs ...*kgo.Record) error {
	if p.lease == nil {
		return p.cl.ProduceSync(ctx, recs...).FirstErr()
	}
	wctx, release, err := p.lease.Hold(ctx)
	if err != nil {
		return err
	}
	defer release()
	err = p.cl.ProduceSync(wctx, recs...).FirstErr()
	if err != nil && wctx.Err() != nil && ctx.Err() == nil {
		return fmt.Errorf("%w: %w", errNotLeader, err)
	}
	return err
}

// publishEvents publishes job events (produce's rules).
func (p *Planner) publishEvents(ctx context.Context, evs ...*sluicev1.JobEvent) error {
	recs := make([]*kgo.Record, 0, len(evs))
	for _, ev := range evs {
		r, err := events.Record(p.topics.events, ev)
		if err != nil {
			return err
		}
		recs = append(recs, r)
	}
	if err := p.produce(ctx, recs...); err != nil {
		return fmt.Errorf("publish %d job events: %w", len(recs), err)
	}
	return nil
}

// ready is the readiness check: the planner serves complete progress only once caught up.
func (p *Planner) ready(context.Context) error {
	if !p.caughtUp.Load() {
		return errors.New("still reading the job events written before start")
	}
	return nil
}
