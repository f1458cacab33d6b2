package main

import (
	"fmt"
	"slices"
	"sync"
	"time"

	sluicev1 "github.com/sluicedata/sluice/proto/sluice/v1"
)

// Job states.
const (
	stateRunning   = "running"
	stateSucceeded = "succeeded"
	stateFailed    = "failed"
)

// Job is what the planner knows of a job, folded from its events. It is what the API serves.
type Job struct {
	ID    string `json:"id"`
	Name  string `json:"name"`
	Table string `json:"table"`
	State string `json:"state"`
	// Reason says why a job failed.
	Reason           string      `json:"reason,omitempty"`
	Tasks            TaskCounts  `json:"tasks"`
	Records          RecordCount `json:"records"`
	RecordsPerSecond float64     `json:"records_per_second"`
	CreatedAt        time.Time   `json:"created_at"`
	FinishedAt       *time.Time  `json:"finished_at,omitempty"`

	tasks    map[string]bool // task id → dead-lettered
	ranges   map[loadRange]bool
	lastLoad time.Time
}

// TaskCounts are a job's tasks by outcome.
type TaskCounts struct {
	Planned      int `json:"planned"`
	Extracted    int `json:"extracted"`
	DeadLettered int `json:"dead_lettered"`
}

// RecordCount are a job's records at each stage. Expected is -1 when the source gave no extent.
type RecordCount struct {
	Expected     int64  `json:"expected"`
	Extracted    uint64 `json:"extracted"`
	Loaded       uint64 `json:"loaded"`
	DeadLettered uint64 `json:"dead_lettered"`
}

// loadRange identifies one loader report, so that a redelivered batch reported again counts once.
type loadRange struct {
	partition   int32
	first, last int64
	class       string
}

// Jobs folds job events into job states. Folding is idempotent per fact: a task reported twice, or
// the same loaded range reported twice, counts once.
type Jobs struct {
	mu   sync.Mutex
	jobs map[string]*Job
}

func newJobs() *Jobs { return &Jobs{jobs: map[string]*Job{}} }

// Apply folds one event in. It returns the job's JobFinished event when this event completed it.
func (js *Jobs) Apply(ev *sluicev1.JobEvent) *sluicev1.JobEvent {
	js.mu.Lock()
	defer js.mu.Unlock()
	at := ev.GetAt().AsTime()
	if p := ev.GetPlanned(); p != nil {
		if _, ok := js.jobs[ev.JobId]; !ok {
			expected := int64(p.ExpectedRecords)
			if p.ExpectedUnknown {
				expected = -1
			}
			js.jobs[ev.JobId] = &Job{ID: ev.JobId, Name: p.Name, Table: p.Table, State: stateRunning,
				Tasks: TaskCounts{Planned: int(p.Tasks)}, Records: RecordCount{Expected: expected},
				CreatedAt: at, tasks: map[string]bool{}, ranges: map[loadRange]bool{}}
		}
		return js.complete(js.jobs[ev.JobId], at)
	}
	j := js.jobs[ev.JobId]
	if j == nil {
		return nil // events of a job planned before the topic's retention
	}
	switch e := ev.Event.(type) {
	case *sluicev1.JobEvent_TaskExtracted:
		if _, seen := j.tasks[e.TaskExtracted.TaskId]; !seen {
			j.tasks[e.TaskExtracted.TaskId] = false
			j.Tasks.Extracted++
			j.Records.Extracted += e.TaskExtracted.Records
			j.Records.DeadLettered += e.TaskExtracted.DeadLettered
		}
	case *sluicev1.JobEvent_TaskDeadLettered:
		if _, seen := j.tasks[e.TaskDeadLettered.TaskId]; !seen {
			j.tasks[e.TaskDeadLettered.TaskId] = true
			j.Tasks.DeadLettered++
			j.Records.Extracted += e.TaskDeadLettered.Records
			j.Records.DeadLettered += e.TaskDeadLettered.DeadLettered
		}
	case *sluicev1.JobEvent_RecordsLoaded:
		r := e.RecordsLoaded
		k := loadRange{r.Partition, r.FirstOffset, r.LastOffset, ""}
		if !j.ranges[k] {
			j.ranges[k] = true
			j.Records.Loaded += r.Records
			j.lastLoad = at
		}
	case *sluicev1.JobEvent_RecordsDeadLettered:
		r := e.RecordsDeadLettered
		k := loadRange{r.Partition, r.FirstOffset, r.LastOffset, r.ErrorClass}
		if !j.ranges[k] {
			j.ranges[k] = true
			j.Records.DeadLettered += r.Records
			j.lastLoad = at
		}
	case *sluicev1.JobEvent_Finished:
		if j.State == stateRunning {
			j.State, j.Reason = stateFromProto(e.Finished.State), e.Finished.Reason
			j.FinishedAt = &at
		}
		return nil
	}
	return js.complete(j, at)
}

// complete finishes a running job whose tasks are all done and whose records are all loaded or
// dead-lettered, and returns the event that records it.
func (js *Jobs) complete(j *Job, at time.Time) *sluicev1.JobEvent {
	if j.State != stateRunning || j.Tasks.Extracted+j.Tasks.DeadLettered < j.Tasks.Planned {
		return nil
	}
	if j.Records.Loaded+j.Records.DeadLettered < j.Records.Extracted {
		return nil
	}
	state, reason := sluicev1.JobFinished_STATE_SUCCEEDED, ""
	if j.Tasks.DeadLettered > 0 {
		state = sluicev1.JobFinished_STATE_FAILED
		reason = fmt.Sprintf("%d of %d tasks dead-lettered after their retries; their records from the failing page on were not extracted (sluicectl dlq list --job %s)",
			j.Tasks.DeadLettered, j.Tasks.Planned, j.ID)
	}
	j.State, j.Reason, j.FinishedAt = stateFromProto(state), reason, &at
	return &sluicev1.JobEvent{JobId: j.ID, Producer: "planner",
		Event: &sluicev1.JobEvent_Finished{Finished: &sluicev1.JobFinished{State: state, Reason: reason}}}
}

// Get returns a copy of the job, with its rate computed at now.
func (js *Jobs) Get(id string, now time.Time) (Job, bool) {
	js.mu.Lock()
	defer js.mu.Unlock()
	j, ok := js.jobs[id]
	if !ok {
		return Job{}, false
	}
	return j.view(now), true
}

// List returns every job, newest first.
func (js *Jobs) List(now time.Time) []Job {
	js.mu.Lock()
	defer js.mu.Unlock()
	out := make([]Job, 0, len(js.jobs))
	for _, j := range js.jobs {
		out = append(out, j.view(now))
	}
	slices.SortFunc(out, func(a, b Job) int { return b.CreatedAt.Compare(a.CreatedAt) })
	return out
}

func (j *Job) view(now time.Time) Job {
	v := *j
	v.tasks, v.ranges = nil, nil
	end := now
	if j.FinishedAt != nil {
		end = *j.FinishedAt
	}
	if !j.lastLoad.IsZero() && j.lastLoad.Before(end) && j.FinishedAt != nil {
		end = j.lastLoad
	}
	if secs := end.Sub(j.CreatedAt).Seconds(); secs > 0 {
		v.RecordsPerSecond = float64(j.Records.Loaded) / secs
	}
	return v
}

func stateFromProto(s sluicev1.JobFinished_State) string {
	if s == sluicev1.JobFinished_STATE_SUCCEEDED {
		return stateSucceeded
	}
	return stateFailed
}
