package events

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	"github.com/sluicedata/sluice/pkg/kafka"
	sluicev1 "github.com/sluicedata/sluice/proto/sluice/v1"
)

// SourcePrefix starts the key, on the jobs topic, of a job's source that is too large to travel in
// every task: source/<job id>. The planner writes it before the job's tasks, and a tombstone with
// the job's final state.
const SourcePrefix = "source/"

// Cancelled knows the jobs that ended before their tasks did, from the compacted jobs topic where
// the planner puts every job's final state: those cancelled, and those the planner failed with
// tasks not ended (no progress for its stall timeout). The extractors skip the tasks of those
// jobs: a job that ended does no more work, and the next run of a scheduled job never works
// beside a run that failed so.
// It also keeps the sources that tasks name instead of carrying (those of jobs not yet ended).
type Cancelled struct {
	mu       sync.RWMutex
	ids      map[string]bool
	sources  map[string][]byte
	removed  map[string]bool
	caughtUp chan struct{}
	once     sync.Once
}

// NewCancelled knows no cancelled job until Follow reads them.
func NewCancelled() *Cancelled {
	return &Cancelled{ids: map[string]bool{}, sources: map[string][]byte{}, removed: map[string]bool{}, caughtUp: make(chan struct{})}
}

// Removed reports whether the source stored under ref was read and then removed with its job's end.
func (c *Cancelled) Removed(ref string) bool {
	if c == nil {
		return false
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.removed[ref]
}

// Source returns the source stored under ref (source/<job id>), and whether it was read.
func (c *Cancelled) Source(ref string) (*sluicev1.Source, bool) {
	if c == nil {
		return nil, false
	}
	c.mu.RLock()
	b, ok := c.sources[ref]
	c.mu.RUnlock()
	if !ok {
		return nil, false
	}
	var src sluicev1.Source
	if proto.Unmarshal(b, &src) != nil {
		return nil, false
	}
	return &src, true
}

// Is says whether job ended before its tasks did. A nil Cancelled knows none.
func (c *Cancelled) Is(job string) bool {
	if c == nil {
		return false
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.ids[job]
}

// CaughtUp is closed once Follow read what the topic held when it started.
func (c *Cancelled) CaughtUp() <-chan struct{} { return c.caughtUp }

// Follow reads topic from its start with cl, which consumes it from there, until ctx ends. Fetch
// errors go to observe (a refused read fails readiness) and the log, each text once in a row; the
// client tries again by itself.
func (c *Cancelled) Follow(ctx context.Context, cl *kgo.Client, topic string, log *slog.Logger, observe func(error) bool) error {
	defer cl.Close()
	remaining, err := kafka.ToRead(ctx, cl, topic)
	for err != nil {
		if ctx.Err() != nil {
			return nil
		}
		log.Warn("list the jobs topic's offsets to learn the cancelled jobs; trying again", "topic", topic, "error", err)
		observe(err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(2 * time.Second):
		}
		remaining, err = kafka.ToRead(ctx, cl, topic)
	}
	if len(remaining) == 0 {
		c.once.Do(func() { close(c.caughtUp) })
	}
	var said string
	for {
		fetches := cl.PollFetches(ctx)
		if ctx.Err() != nil || fetches.IsClientClosed() {
			return nil
		}
		fetches.EachError(func(_ string, _ int32, err error) {
			observe(err)
			if err.Error() != said {
				said = err.Error()
				log.Warn("read the jobs topic to learn the cancelled jobs", "topic", topic, "error", err)
			}
		})
		fetches.EachRecord(func(r *kgo.Record) {
			c.apply(r, log)
			if end, ok := remaining[r.Partition]; ok && r.Offset+1 >= end {
				delete(remaining, r.Partition)
				if len(remaining) == 0 {
					c.once.Do(func() { close(c.caughtUp) })
				}
			}
		})
	}
}

// apply takes one record of the jobs topic: a job's state, keyed by its id. The topic also holds
// incremental jobs' marks and schedules, keyed mark/… and schedule/….
func (c *Cancelled) apply(r *kgo.Record, log *slog.Logger) {
	key := string(r.Key)
	if strings.HasPrefix(key, "mark/") || strings.HasPrefix(key, "schedule/") {
		return
	}
	if strings.HasPrefix(key, SourcePrefix) {
		c.mu.Lock()
		defer c.mu.Unlock()
		if len(r.Value) == 0 {
			// The job ended. Only a key that held a source is remembered (the planner writes the
			// tombstone with every job's end): a few bytes a job.
			if _, had := c.sources[key]; had {
				c.removed[key] = true
			}
			delete(c.sources, key)
		} else {
			c.sources[key] = r.Value
			delete(c.removed, key)
		}
		return
	}
	var st sluicev1.JobState
	if err := proto.Unmarshal(r.Value, &st); err != nil {
		log.Warn("skip an undecodable job state", "partition", r.Partition, "offset", r.Offset, "error", err)
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if endedEarly(&st) {
		c.ids[key] = true
	} else {
		delete(c.ids, key) // an empty value (a tombstone) too
	}
}

// endedEarly reports whether a job's final state leaves tasks of it that must not run: it was
// cancelled, or it failed before all its tasks ended. A job that failed once every task ended
// leaves none, and is not kept.
func endedEarly(st *sluicev1.JobState) bool {
	switch st.State {
	case "cancelled":
		return true
	case "failed":
		return st.TasksExtracted+st.TasksDeadLettered < st.TasksPlanned
	}
	return false
}
