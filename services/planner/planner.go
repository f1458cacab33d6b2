package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sluicedata/sluice/pkg/events"
	"github.com/sluicedata/sluice/pkg/jobspec"
	"github.com/sluicedata/sluice/pkg/pipeline"
	"github.com/sluicedata/sluice/pkg/source"
	sluicev1 "github.com/sluicedata/sluice/proto/sluice/v1"
)

// Planner accepts jobs, publishes their tasks and folds the job events into their progress.
type Planner struct {
	cl      *kgo.Client
	topics  topics
	fetch   *source.Fetcher
	lookup  func(string) (string, bool)
	jobs    *Jobs
	log     *slog.Logger
	backoff pipeline.Backoff
	now     func() time.Time
	// caughtUp is set once the events that existed at start are folded in: before that, progress
	// is incomplete and the planner does not finish jobs.
	caughtUp atomic.Bool
}

type topics struct{ tasks, events string }

// errDiscover is a source that could not be asked for its extent.
var errDiscover = errors.New("discover the extent of the source")

// Submit takes a parsed, valid spec: it discovers the extent, plans the job and publishes its
// planned event and tasks. The job exists in the planner's state when Submit returns.
func (p *Planner) Submit(ctx context.Context, spec *jobspec.Spec) (Job, error) {
	total, err := p.discover(ctx, spec)
	if err != nil {
		return Job{}, err
	}
	// Once the planned event is out, the tasks must follow even if the client goes away.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	now := p.now()
	pl := planJob(spec, newJobID(spec.Name, now), total, now)
	planned := &sluicev1.JobEvent{JobId: pl.jobID, At: timestamppb.New(now), Producer: "planner",
		Event: &sluicev1.JobEvent_Planned{Planned: &sluicev1.JobPlanned{
			Name: spec.Name, Table: spec.Sink.Table, Tasks: uint32(len(pl.tasks)),
			ExpectedRecords: uint64(max(pl.expected, 0)), ExpectedUnknown: pl.expected < 0,
			Spec: spec.JSON(), Source: spec.SourceProto(),
		}}}
	// The planned event goes first, so that every task's events find their job.
	if err := events.Publish(ctx, p.cl, p.topics.events, planned); err != nil {
		return Job{}, err
	}
	recs := make([]*kgo.Record, len(pl.tasks))
	for i, t := range pl.tasks {
		value, err := proto.Marshal(t)
		if err != nil {
			return Job{}, err
		}
		recs[i] = &kgo.Record{Topic: p.topics.tasks, Key: []byte(t.TaskId), Value: value}
	}
	done := p.jobs.Apply(planned) // not nil when there is nothing to extract
	if err := p.cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		// Some tasks may be out: the job cannot complete, so say so rather than leave it running.
		err = fmt.Errorf("publish %d tasks: %w", len(recs), err)
		p.publishFinished(ctx, &sluicev1.JobEvent{JobId: pl.jobID, Producer: "planner", Event: &sluicev1.JobEvent_Finished{
			Finished: &sluicev1.JobFinished{State: sluicev1.JobFinished_STATE_FAILED, Reason: err.Error()}}})
		return Job{}, err
	}
	if done != nil {
		p.publishFinished(ctx, done)
	}
	p.log.Info("job planned", "job", pl.jobID, "tasks", len(pl.tasks), "expected", pl.expected, "table", spec.Sink.Table)
	j, _ := p.jobs.Get(pl.jobID, p.now())
	return j, nil
}

// discover reads the total from the first page when the spec names where it is; -1 otherwise.
func (p *Planner) discover(ctx context.Context, spec *jobspec.Spec) (int64, error) {
	if spec.Source.Pagination.TotalPath == "" {
		return -1, nil
	}
	src := spec.SourceProto().GetHttp()
	headers, err := jobspec.ExpandHeaders(src.Headers, p.lookup)
	if err != nil {
		return 0, fmt.Errorf("%w: %v", errDiscover, err)
	}
	start := uint64(0)
	if spec.Source.Pagination.Type == "page" {
		start = uint64(spec.Source.Pagination.FirstPage)
	}
	u, err := source.PageURL(src, start, uint64(spec.Source.Pagination.PageSize))
	if err != nil {
		return 0, fmt.Errorf("%w: %v", errDiscover, err)
	}
	pol := source.Policy{MaxRetries: spec.Source.MaxRetries, Backoff: p.backoff, Deadline: time.Minute, Timeout: spec.Source.Timeout}
	page, _, ferr := p.fetch.FetchPage(ctx, u, headers, spec.Source.RecordsPath, spec.Source.Pagination.TotalPath, pol)
	if ferr != nil {
		return 0, fmt.Errorf("%w: %v", errDiscover, ferr)
	}
	if page.Total < 0 {
		return 0, fmt.Errorf("%w: the first page has no integer at %q", errDiscover, spec.Source.Pagination.TotalPath)
	}
	return page.Total, nil
}

// Follow consumes the events topic from its start and folds every event in, finishing jobs once
// the events that existed at start are read.
func (p *Planner) Follow(ctx context.Context) error {
	adm := kadm.NewClient(p.cl)
	ends, err := adm.ListEndOffsets(ctx, p.topics.events)
	if err != nil {
		return fmt.Errorf("list end offsets of %s: %w", p.topics.events, err)
	}
	starts, err := adm.ListStartOffsets(ctx, p.topics.events)
	if err != nil {
		return fmt.Errorf("list start offsets of %s: %w", p.topics.events, err)
	}
	remaining := map[int32]int64{}
	ends.Each(func(o kadm.ListedOffset) {
		if s, ok := starts.Lookup(p.topics.events, o.Partition); o.Offset > 0 && (!ok || s.Offset < o.Offset) {
			remaining[o.Partition] = o.Offset // a partition that retention emptied has nothing to read
		}
	})
	var pending []*sluicev1.JobEvent // jobs completed while replaying, finished once caught up
	p.markCaughtUp(ctx, remaining, &pending)
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
			} else if fin := p.jobs.Apply(ev); fin != nil && p.caughtUp.Load() {
				p.publishFinished(ctx, fin)
			} else if fin != nil {
				pending = append(pending, fin)
			}
			if end, ok := remaining[r.Partition]; ok && r.Offset+1 >= end {
				delete(remaining, r.Partition)
			}
		})
		p.markCaughtUp(ctx, remaining, &pending)
	}
}

// markCaughtUp switches to deciding once every partition is read to where it ended at start, and
// records the end of the jobs that completed during the replay. A job finished twice (its end was
// also in the log) folds to the same state.
func (p *Planner) markCaughtUp(ctx context.Context, remaining map[int32]int64, pending *[]*sluicev1.JobEvent) {
	if len(remaining) > 0 || p.caughtUp.Load() {
		return
	}
	p.caughtUp.Store(true)
	for _, fin := range *pending {
		p.publishFinished(ctx, fin)
	}
	*pending = nil
	p.log.Info("job events caught up")
}

// publishFinished records a job's end on the events topic, retrying until it is written.
func (p *Planner) publishFinished(ctx context.Context, fin *sluicev1.JobEvent) {
	fin.At = timestamppb.New(p.now())
	err := pipeline.Retry(ctx, p.backoff, p.log, "publish job finished", func() error {
		return events.Publish(ctx, p.cl, p.topics.events, fin)
	})
	if err == nil {
		p.log.Info("job finished", "job", fin.JobId, "state", stateFromProto(fin.GetFinished().State),
			"reason", fin.GetFinished().Reason)
	}
}

// ready is the readiness check: the planner serves complete progress only once caught up.
func (p *Planner) ready(context.Context) error {
	if !p.caughtUp.Load() {
		return errors.New("still reading the job events written before start")
	}
	return nil
}
