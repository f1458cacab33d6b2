package main

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sluicedata/sluice/pkg/source"
	sluicev1 "github.com/sluicedata/sluice/proto/sluice/v1"
)

// Job states.
const (
	stateRunning   = "running"
	stateSucceeded = "succeeded"
	stateFailed    = "failed"
	stateCancelled = "cancelled"
)

// Job is what the planner knows of a job, folded from its events. It is what the API serves.
type Job struct {
	ID    string `json:"id"`
	Name  string `json:"name"`
	Table string `json:"table"`
	State string `json:"state"`
	// Reason says why a job failed, or who cancelled it.
	Reason           string      `json:"reason,omitempty"`
	Tasks            TaskCounts  `json:"tasks"`
	Records          RecordCount `json:"records"`
	RecordsPerSecond float64     `json:"records_per_second"`
	// ETASeconds estimates the time a running job has left: the records it expects but has not
	// loaded or dead-lettered, at the rate it did so far. Absent when unknown.
	ETASeconds *float64   `json:"eta_seconds,omitempty"`
	CreatedAt  time.Time  `json:"created_at"`
	FinishedAt *time.Time `json:"finished_at,omitempty"`
	// Held says that a loader holds the job's records because their table refuses them.
	Held *Held `json:"held,omitempty"`
	// IdempotencyKey is the client's key of the submission, when it gave one.
	IdempotencyKey string `json:"idempotency_key,omitempty"`
	// Since is where an incremental run started reading; MaxCursor is the largest cursor among the
	// records it extracted, which becomes the job's mark when the run succeeds.
	Since     string `json:"since,omitempty"`
	MaxCursor string `json:"max_cursor,omitempty"`
	// CursorRejected counts the cursor values that could not count towards the mark: those the
	// extractors left out of max_cursor, and a max_cursor the planner refused.
	CursorRejected CursorRejected `json:"cursor_rejected,omitzero"`

	tasks    map[string]*taskState
	lastLoad time.Time
	// lastEvent is when the job last had news, for the progress deadline.
	lastEvent time.Time
	// cut is set once a crawl of the job reached its default bound of pages (class max_pages).
	cut bool
	// published is set once every task is on the tasks topic; spec and extent are kept until then,
	// so that a planner can publish them again.
	published bool
	// followers are the tasks that other tasks' ends published (a crawl's pages after its first).
	followers map[string]bool
	spec      []byte
	extent    []byte
	specHash  []byte
	// stored is set once the job's final state is on the jobs topic.
	stored bool
	// deadTasks are the dead-lettered tasks of a finished job, kept when it lets go of the rest.
	deadTasks []TaskView
	// schemaDead counts records dead-lettered because their table refused them: such a job fails.
	schemaDead uint64
	// source is the planned source (an incremental run's start in it), kept until the tasks are
	// out; markChecked is set once the planner compared the run's cursor with the job's mark.
	source      *sluicev1.Source
	markChecked bool
}

// Held is a table that refuses a job's records, as a loader reported it.
type Held struct {
	Table      string `json:"table"`
	ErrorClass string `json:"error_class"`
	Reason     string `json:"reason"`
	// Records the loader held when it reported.
	Records      uint64    `json:"records"`
	Since        time.Time `json:"since"`
	DeadLetterAt time.Time `json:"dead_letter_at"`
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

// taskState is one task: how its final run ended, and what the loaders reported of each run. A task
// that ran more than once (a rebalance, a failed produce) put the records of every run on the raw
// topic; only the final run's count.
type taskState struct {
	// started is set once an extractor took the task (TaskStarted): it is worked on until finished.
	started    bool
	finished   bool
	dead       bool // dead-lettered rather than extracted
	run        string
	records    uint64 // the final run's records, those the extractor dead-lettered included
	extractDLQ uint64 // the final run's records the raw topic refused
	runs       map[string]*runCount
}

// runCount is what the loaders reported of one run, by raw-topic partition and offset: a batch
// reported twice, or cut differently when redelivered, counts each record once.
type runCount struct {
	loaded, dead map[int32]*intervalSet
}

func (t *taskState) ofRun(run string) *runCount {
	rc := t.runs[run]
	if rc == nil {
		rc = &runCount{loaded: map[int32]*intervalSet{}, dead: map[int32]*intervalSet{}}
		t.runs[run] = rc
	}
	return rc
}

// counts returns the loaded and dead-lettered records of the task: of its final run once finished,
// else of its furthest run so far.
func (t *taskState) counts() (loaded, dead uint64) {
	if t.finished {
		if rc := t.runs[t.run]; rc != nil {
			loaded, dead = rc.total()
		}
		return loaded, dead + t.extractDLQ
	}
	for _, rc := range t.runs {
		l, d := rc.total()
		if l+d > loaded+dead {
			loaded, dead = l, d
		}
	}
	return loaded, dead
}

// done counts the run's records that are loaded or dead-lettered: the union of both, so that a record
// reported both ways (loaded by one member, dead-lettered by the next after a rebalance) counts once.
func (rc *runCount) done() uint64 {
	var n uint64
	for p, l := range rc.loaded {
		u := &intervalSet{spans: slices.Clone(l.spans)}
		if d := rc.dead[p]; d != nil {
			for _, sp := range d.spans {
				u.add(sp[0], sp[1])
			}
		}
		n += u.count()
	}
	for p, d := range rc.dead {
		if rc.loaded[p] == nil {
			n += d.count()
		}
	}
	return n
}

func (rc *runCount) total() (loaded, dead uint64) {
	for _, s := range rc.loaded {
		loaded += s.count()
	}
	for _, s := range rc.dead {
		dead += s.count()
	}
	return loaded, dead
}

// Jobs folds job events into job states. Folding is idempotent per fact: a task reported twice, or a
// record reported loaded twice, counts once.
type Jobs struct {
	mu    sync.Mutex
	jobs  map[string]*Job
	byKey map[string]string // idempotency key → job id
	// rejected counts the cursor values rejected, by reason, of the reports folded in once live is
	// set (the planner caught up): those of the replay were counted by the planner that folded
	// them first. Nil in tests that do not count.
	rejected *prometheus.CounterVec
	live     bool
	// forgotten are the jobs forgotten while the planner replays the events written before it
	// started (tombstones on the jobs topic, and jobs past the retention): their planned events are
	// passed over. Nil once replayed.
	forgotten map[string]bool
}

func newJobs() *Jobs {
	return &Jobs{jobs: map[string]*Job{}, byKey: map[string]string{}, forgotten: map[string]bool{}}
}

// Apply folds one event in. It returns the job's JobFinished event when this event completed it.
func (js *Jobs) Apply(ev *sluicev1.JobEvent) *sluicev1.JobEvent {
	js.mu.Lock()
	defer js.mu.Unlock()
	at := ev.GetAt().AsTime()
	if p := ev.GetPlanned(); p != nil {
		if js.forgotten[ev.JobId] {
			return nil
		}
		if _, ok := js.jobs[ev.JobId]; !ok {
			expected := int64(p.ExpectedRecords)
			if p.ExpectedUnknown {
				expected = -1
			}
			js.jobs[ev.JobId] = &Job{ID: ev.JobId, Name: p.Name, Table: p.Table, State: stateRunning,
				Tasks: TaskCounts{Planned: int(p.Tasks)}, Records: RecordCount{Expected: expected},
				CreatedAt: at, tasks: map[string]*taskState{}, IdempotencyKey: p.IdempotencyKey,
				spec: p.Spec, extent: p.Extent, specHash: p.SpecSha256, lastEvent: at, published: p.Tasks == 0,
				source: p.Source, Since: p.Source.GetIncremental().GetSince()}
			js.claim(p.IdempotencyKey, js.jobs[ev.JobId])
		}
		return js.complete(js.jobs[ev.JobId], at)
	}
	j := js.jobs[ev.JobId]
	if j == nil || j.tasks == nil {
		return nil // a job planned before the topic's retention, or finished and frozen
	}
	if at.After(j.lastEvent) {
		j.lastEvent = at
	}
	switch e := ev.Event.(type) {
	case *sluicev1.JobEvent_TasksPublished:
		j.published, j.spec, j.extent, j.source = true, nil, nil, nil
		return nil
	case *sluicev1.JobEvent_TaskStarted:
		x := e.TaskStarted
		j.follow(x.TaskId, x.Follows) // a crawl's page may start before its previous page's end is read
		j.task(x.TaskId).started = true
		return nil
	case *sluicev1.JobEvent_TaskExtracted:
		x := e.TaskExtracted
		j.follow(x.TaskId, x.Follows)
		j.follow(x.NextTaskId, x.TaskId)
		// The cursor of the run whose records the job waits for: the first reported.
		if first := j.finishTask(x.TaskId, x.Run, x.Records, x.DeadLettered, false); first {
			if c := x.MaxCursor; c != "" && (j.MaxCursor == "" || source.CompareCursors(c, j.MaxCursor) > 0) {
				j.MaxCursor = c
			}
			j.CursorRejected.add(x.CursorRejected)
			js.countRejected(x.CursorRejected)
		}
	case *sluicev1.JobEvent_TaskDeadLettered:
		x := e.TaskDeadLettered
		j.follow(x.TaskId, x.Follows)
		if j.finishTask(x.TaskId, x.Run, x.Records, x.DeadLettered, true) && x.ErrorClass == "max_pages" {
			j.cut = true
		}
	case *sluicev1.JobEvent_RecordsLoaded:
		r := e.RecordsLoaded
		rc := j.task(r.TaskId).ofRun(r.Run)
		rc.loaded[r.Partition] = addSpans(rc.loaded[r.Partition], r.Offsets)
		j.lastLoad = at
	case *sluicev1.JobEvent_RecordsDeadLettered:
		r := e.RecordsDeadLettered
		rc := j.task(r.TaskId).ofRun(r.Run)
		rc.dead[r.Partition] = addSpans(rc.dead[r.Partition], r.Offsets)
		j.lastLoad = at
		if r.ErrorClass == "schema" {
			j.schemaDead += r.Records
		}
	case *sluicev1.JobEvent_LoadHeld:
		h := e.LoadHeld
		if h.Cleared {
			j.Held = nil
		} else {
			j.Held = &Held{Table: h.Table, ErrorClass: h.ErrorClass, Reason: h.Reason, Records: h.Records,
				Since: h.Since.AsTime(), DeadLetterAt: h.DeadLetterAt.AsTime()}
		}
		return nil
	case *sluicev1.JobEvent_Finished:
		if j.State == stateRunning {
			j.end(e.Finished, at)
		}
		return nil
	}
	return js.complete(j, at)
}

func (j *Job) task(id string) *taskState {
	t := j.tasks[id]
	if t == nil {
		t = &taskState{runs: map[string]*runCount{}}
		j.tasks[id] = t
	}
	return t
}

// follow counts task id, which the end of task after published (a crawl's next page), among the
// job's tasks, once: the job is not complete before it ends too. Either event may come first.
func (j *Job) follow(id, after string) {
	if id == "" || after == "" {
		return
	}
	if j.followers == nil {
		j.followers = map[string]bool{}
	}
	if !j.followers[id] {
		j.followers[id] = true
		j.Tasks.Planned++
	}
}

// finishTask records how a task ended, reporting whether this was its first report: a task
// reported again (it ran again after a rebalance) keeps its first report.
func (j *Job) finishTask(id, run string, records, extractDLQ uint64, dead bool) bool {
	t := j.task(id)
	if t.finished {
		return false
	}
	t.finished, t.dead, t.run, t.records, t.extractDLQ = true, dead, run, records, extractDLQ
	if dead {
		j.Tasks.DeadLettered++
	} else {
		j.Tasks.Extracted++
	}
	j.Records.Extracted += records
	return true
}

// complete finishes a running job whose tasks all ended and whose final runs' records are all
// loaded or dead-lettered, and returns the event that records it.
func (js *Jobs) complete(j *Job, at time.Time) *sluicev1.JobEvent {
	if j.State != stateRunning || j.Tasks.Extracted+j.Tasks.DeadLettered < j.Tasks.Planned {
		return nil
	}
	for _, t := range j.tasks {
		if !t.finished {
			continue
		}
		done := t.extractDLQ
		if rc := t.runs[t.run]; rc != nil {
			done += rc.done()
		}
		if done < t.records {
			return nil
		}
	}
	state, reason := sluicev1.JobFinished_STATE_SUCCEEDED, ""
	switch {
	case j.Tasks.DeadLettered == 0 && j.Records.Expected >= 0 && j.Records.Extracted < uint64(j.Records.Expected):
		state = sluicev1.JobFinished_STATE_FAILED
		reason = fmt.Sprintf("the tasks extracted %d records where the source announced %d", j.Records.Extracted, j.Records.Expected)
	case j.Tasks.DeadLettered > 0 && j.cut:
		state = sluicev1.JobFinished_STATE_FAILED
		reason = fmt.Sprintf("the crawl was cut at its default bound of pages: the page past it is dead-lettered with class max_pages, "+
			"the records before it are loaded; set source.pagination.max_pages to read further (%d of %d tasks dead-lettered: sluicectl dlq list --job %s)",
			j.Tasks.DeadLettered, j.Tasks.Planned, j.ID)
	case j.Tasks.DeadLettered > 0:
		state = sluicev1.JobFinished_STATE_FAILED
		reason = fmt.Sprintf("%d of %d tasks dead-lettered after their retries; their records from the failing page on were not extracted (sluicectl dlq list --job %s)",
			j.Tasks.DeadLettered, j.Tasks.Planned, j.ID)
	case j.schemaDead > 0:
		state = sluicev1.JobFinished_STATE_FAILED
		reason = fmt.Sprintf("table %s refused records; they were dead-lettered with class schema (sluicectl dlq list --job %s)", j.Table, j.ID)
		if j.Held != nil {
			reason = fmt.Sprintf("table %s refused records (%s); they were dead-lettered with class schema (sluicectl dlq list --job %s)",
				j.Table, j.Held.Reason, j.ID)
		}
	}
	j.State, j.Reason, j.FinishedAt = stateFromProto(state), reason, &at
	j.freeze()
	return &sluicev1.JobEvent{JobId: j.ID, Producer: "planner",
		Event: &sluicev1.JobEvent_Finished{Finished: &sluicev1.JobFinished{State: state, Reason: reason}}}
}

// Errors of a job that cannot be cancelled.
var (
	errNoJob = errors.New("no job")
	errEnded = errors.New("the job has ended")
)

// Cancel ends the running job id as cancelled, for reason, and returns the event that records it;
// nil for a job cancelled already (cancelling again is no error). A job that failed can be
// cancelled too: a failure the planner decided (no progress) leaves its tasks on the tasks topic,
// and only a cancel makes the extractors skip them (one that kills every member it lands on, say).
// It keeps its counts and says why it failed.
func (js *Jobs) Cancel(id, reason string, at time.Time) (*sluicev1.JobEvent, error) {
	js.mu.Lock()
	defer js.mu.Unlock()
	j := js.jobs[id]
	switch {
	case j == nil:
		return nil, fmt.Errorf("%w %s", errNoJob, id)
	case j.State == stateCancelled:
		return nil, nil
	case j.State == stateFailed:
		j.State, j.Reason, j.stored = stateCancelled, reason+" after it failed: "+j.Reason, false
		return &sluicev1.JobEvent{JobId: id, Producer: "planner", Event: &sluicev1.JobEvent_Finished{
			Finished: &sluicev1.JobFinished{State: sluicev1.JobFinished_STATE_CANCELLED, Reason: j.Reason}}}, nil
	case j.State != stateRunning:
		return nil, fmt.Errorf("%w: job %s %s", errEnded, id, j.State)
	}
	fin := &sluicev1.JobEvent{JobId: id, Producer: "planner", Event: &sluicev1.JobEvent_Finished{
		Finished: &sluicev1.JobFinished{State: sluicev1.JobFinished_STATE_CANCELLED, Reason: reason}}}
	j.end(fin.GetFinished(), at)
	return fin, nil
}

// End ends the running job of fin, an end the planner decided (no progress, tasks that cannot be
// published), at at, and reports whether it did: false when the job ended meanwhile (it completed,
// or someone cancelled it), and fin must then not be published.
func (js *Jobs) End(fin *sluicev1.JobEvent, at time.Time) bool {
	js.mu.Lock()
	defer js.mu.Unlock()
	j := js.jobs[fin.JobId]
	if j == nil || j.State != stateRunning {
		return false
	}
	j.end(fin.GetFinished(), at)
	return true
}

// end records the job's final state and lets go of its detail.
func (j *Job) end(f *sluicev1.JobFinished, at time.Time) {
	j.State, j.Reason, j.FinishedAt = stateFromProto(f.GetState()), f.GetReason(), &at
	j.freeze()
}

// Get returns a copy of the job, with its counts and rate computed at now.
func (js *Jobs) Get(id string, now time.Time) (Job, bool) {
	js.mu.Lock()
	defer js.mu.Unlock()
	j, ok := js.jobs[id]
	if !ok {
		return Job{}, false
	}
	return j.view(now), true
}

// freeze keeps a finished job's counts and lets go of its per-task detail, so that a planner that
// has seen many jobs holds a few numbers for each.
func (j *Job) freeze() {
	j.Records.Loaded, j.Records.DeadLettered = j.counts()
	for _, v := range j.taskViews() {
		if v.State == "dead_lettered" {
			j.deadTasks = append(j.deadTasks, v)
		}
	}
	j.tasks, j.spec, j.followers, j.source = nil, nil, nil, nil
}

// Advancing returns the incremental runs that succeeded with a cursor and whose cursor was not yet
// compared with their job's mark, oldest first.
func (js *Jobs) Advancing() []Job {
	js.mu.Lock()
	defer js.mu.Unlock()
	var out []Job
	for _, j := range js.jobs {
		if j.State == stateSucceeded && j.MaxCursor != "" && !j.markChecked {
			out = append(out, *j)
		}
	}
	slices.SortFunc(out, func(a, b Job) int { return a.CreatedAt.Compare(b.CreatedAt) })
	return out
}

// MarksChecked records that the runs' cursors were compared with their marks.
func (js *Jobs) MarksChecked(ids []string) {
	js.mu.Lock()
	defer js.mu.Unlock()
	for _, id := range ids {
		if j := js.jobs[id]; j != nil {
			j.markChecked = true
		}
	}
}

// Latest returns the newest run of the job name.
func (js *Jobs) Latest(name string) (Job, bool) {
	js.mu.Lock()
	defer js.mu.Unlock()
	var latest *Job
	for _, j := range js.jobs {
		if j.Name == name && (latest == nil || j.CreatedAt.After(latest.CreatedAt)) {
			latest = j
		}
	}
	if latest == nil {
		return Job{}, false
	}
	return *latest, true
}

// Running reports whether a run of the job name is running.
func (js *Jobs) Running(name string) bool {
	js.mu.Lock()
	defer js.mu.Unlock()
	for _, j := range js.jobs {
		if j.Name == name && j.State == stateRunning {
			return true
		}
	}
	return false
}

// ByKey returns the job submitted with an idempotency key, and the sha256 of its spec.
func (js *Jobs) ByKey(key string, now time.Time) (Job, []byte, bool) {
	js.mu.Lock()
	defer js.mu.Unlock()
	j, ok := js.jobs[js.byKey[key]]
	if !ok {
		return Job{}, nil, false
	}
	return j.view(now), j.specHash, true
}

// unpublished is a running job whose tasks may not all be on the tasks topic.
type unpublished struct {
	id       string
	spec     []byte
	source   *sluicev1.Source
	extent   []byte
	expected int64
	at       time.Time
}

// Unpublished returns the running jobs planned before cutoff whose tasks were never reported
// published.
func (js *Jobs) Unpublished(cutoff time.Time) []unpublished {
	js.mu.Lock()
	defer js.mu.Unlock()
	var out []unpublished
	for _, j := range js.jobs {
		if j.State == stateRunning && !j.published && j.CreatedAt.Before(cutoff) {
			out = append(out, unpublished{id: j.ID, spec: j.spec, source: j.source, extent: j.extent, expected: j.Records.Expected, at: j.CreatedAt})
		}
	}
	return out
}

// Stalled returns the end of every running job that had no news since cutoff, news counted from
// floor at the earliest, unless all its work waits in the queue (see queued).
func (js *Jobs) Stalled(cutoff, floor time.Time, timeout time.Duration) []*sluicev1.JobEvent {
	js.mu.Lock()
	defer js.mu.Unlock()
	var out []*sluicev1.JobEvent
	for _, j := range js.jobs {
		if j.State != stateRunning || !j.lastEvent.Before(cutoff) || !floor.Before(cutoff) || j.queued() {
			continue
		}
		loaded, dead := j.counts()
		reason := fmt.Sprintf("no progress for %s while it was worked on: %d of %d tasks extracted or dead-lettered, %d records loaded and %d dead-lettered of %d extracted",
			timeout, j.Tasks.Extracted+j.Tasks.DeadLettered, j.Tasks.Planned, loaded, dead, j.Records.Extracted)
		out = append(out, &sluicev1.JobEvent{JobId: j.ID, Producer: "planner",
			Event: &sluicev1.JobEvent_Finished{Finished: &sluicev1.JobFinished{State: sluicev1.JobFinished_STATE_FAILED, Reason: reason}}})
	}
	return out
}

// queued reports whether the job's work all waits on the tasks topic: its tasks are out, some
// have not ended, and no extractor works on one (none started, or with records loading, and not
// ended: the loaders' news shows a run whose start was not heard of). Such a job waits
// behind other jobs' tasks, and its time without news is no stall; the clock runs again from the
// news that one started. A job whose tasks all ended and whose records are not all loaded is not
// queued: the loaders owe it news.
func (j *Job) queued() bool {
	if !j.published || j.Tasks.Extracted+j.Tasks.DeadLettered >= j.Tasks.Planned {
		return false
	}
	for _, t := range j.tasks {
		if (t.started || len(t.runs) > 0) && !t.finished {
			return false
		}
	}
	return true
}

// Unstored returns the states of the finished jobs that are not yet on the jobs topic.
func (js *Jobs) Unstored() []*sluicev1.JobState {
	js.mu.Lock()
	defer js.mu.Unlock()
	var out []*sluicev1.JobState
	for _, j := range js.jobs {
		if j.State != stateRunning && !j.stored {
			out = append(out, j.state())
		}
	}
	return out
}

// Stored marks jobs whose states are on the jobs topic.
func (js *Jobs) Stored(states []*sluicev1.JobState) {
	js.mu.Lock()
	defer js.mu.Unlock()
	for _, s := range states {
		if j := js.jobs[s.JobId]; j != nil {
			j.stored = true
		}
	}
}

// Restore takes a job's state from the jobs topic; a job restored so is final, and its events are
// not folded again. A job that ended here too keeps what it holds, and takes the stored end.
func (js *Jobs) Restore(s *sluicev1.JobState) {
	js.mu.Lock()
	defer js.mu.Unlock()
	if s.State == stateRunning {
		return
	}
	if j := js.jobs[s.JobId]; j != nil && j.State != stateRunning {
		// Ended here too: the state is this end stored, or a later one (a failed job cancelled).
		j.State, j.Reason, j.stored = s.State, s.Reason, true
		if s.FinishedAt != nil {
			at := s.FinishedAt.AsTime()
			j.FinishedAt = &at
		}
		return
	}
	j := &Job{ID: s.JobId, Name: s.Name, Table: s.Table, State: s.State, Reason: s.Reason,
		Tasks:          TaskCounts{Planned: int(s.TasksPlanned), Extracted: int(s.TasksExtracted), DeadLettered: int(s.TasksDeadLettered)},
		Records:        RecordCount{Expected: s.RecordsExpected, Extracted: s.RecordsExtracted, Loaded: s.RecordsLoaded, DeadLettered: s.RecordsDeadLettered},
		CreatedAt:      s.CreatedAt.AsTime(),
		IdempotencyKey: s.IdempotencyKey, specHash: s.SpecSha256, stored: true, published: true, MaxCursor: s.MaxCursor}
	j.CursorRejected.add(s.CursorRejected)
	if s.FinishedAt != nil {
		at := s.FinishedAt.AsTime()
		j.FinishedAt = &at
	}
	if s.LastLoadAt != nil {
		j.lastLoad = s.LastLoadAt.AsTime()
	}
	js.jobs[s.JobId] = j
	js.claim(s.IdempotencyKey, j)
}

// state is the job's record for the jobs topic; the caller holds the lock.
func (j *Job) state() *sluicev1.JobState {
	s := &sluicev1.JobState{JobId: j.ID, Name: j.Name, Table: j.Table, State: j.State, Reason: j.Reason,
		TasksPlanned: uint32(j.Tasks.Planned), TasksExtracted: uint32(j.Tasks.Extracted), TasksDeadLettered: uint32(j.Tasks.DeadLettered),
		RecordsExpected: j.Records.Expected, RecordsExtracted: j.Records.Extracted, RecordsLoaded: j.Records.Loaded,
		RecordsDeadLettered: j.Records.DeadLettered, CreatedAt: timestamppb.New(j.CreatedAt),
		IdempotencyKey: j.IdempotencyKey, SpecSha256: j.specHash, MaxCursor: j.MaxCursor, CursorRejected: j.CursorRejected.proto()}
	if j.FinishedAt != nil {
		s.FinishedAt = timestamppb.New(*j.FinishedAt)
	}
	if !j.lastLoad.IsZero() {
		s.LastLoadAt = timestamppb.New(j.lastLoad)
	}
	return s
}

// counts adds up the tasks' loaded and dead-lettered records.
func (j *Job) counts() (loaded, dead uint64) {
	for _, t := range j.tasks {
		l, d := t.counts()
		loaded += l
		dead += d
	}
	return loaded, dead
}

func (j *Job) view(now time.Time) Job {
	v := *j
	if j.tasks != nil {
		v.Records.Loaded, v.Records.DeadLettered = j.counts()
		v.tasks = nil
	}
	end := now
	if j.FinishedAt != nil && !j.lastLoad.IsZero() && j.lastLoad.Before(*j.FinishedAt) {
		end = j.lastLoad
	} else if j.FinishedAt != nil {
		end = *j.FinishedAt
	}
	if secs := end.Sub(j.CreatedAt).Seconds(); secs > 0 {
		v.RecordsPerSecond = float64(v.Records.Loaded) / secs
		done := v.Records.Loaded + v.Records.DeadLettered
		if j.State == stateRunning && j.Records.Expected >= 0 && done > 0 {
			eta := float64(max(j.Records.Expected-int64(done), 0)) / (float64(done) / secs)
			v.ETASeconds = &eta
		}
	}
	return v
}

func stateFromProto(s sluicev1.JobFinished_State) string {
	switch s {
	case sluicev1.JobFinished_STATE_SUCCEEDED:
		return stateSucceeded
	case sluicev1.JobFinished_STATE_CANCELLED:
		return stateCancelled
	}
	return stateFailed
}

// intervalSet is a set of offsets kept as sorted, disjoint, non-adjacent spans.
type intervalSet struct {
	spans [][2]int64
}

// addSpans adds spans to s, creating it when nil.
func addSpans(s *intervalSet, spans []*sluicev1.OffsetSpan) *intervalSet {
	if s == nil {
		s = &intervalSet{}
	}
	for _, sp := range spans {
		if sp.Last >= sp.First {
			s.add(sp.First, sp.Last)
		}
	}
	return s
}

// add inserts [first, last], merging every span it overlaps or touches.
func (s *intervalSet) add(first, last int64) {
	i, _ := slices.BinarySearchFunc(s.spans, first, func(sp [2]int64, v int64) int {
		switch {
		case sp[1]+1 < v:
			return -1
		default:
			return 1
		}
	})
	j := i
	for j < len(s.spans) && s.spans[j][0] <= last+1 {
		first, last = min(first, s.spans[j][0]), max(last, s.spans[j][1])
		j++
	}
	s.spans = slices.Replace(s.spans, i, j, [2]int64{first, last})
}

func (s *intervalSet) count() uint64 {
	var n uint64
	for _, sp := range s.spans {
		n += uint64(sp[1] - sp[0] + 1)
	}
	return n
}

// Counts returns how many jobs are in each state.
func (js *Jobs) Counts() map[string]int {
	js.mu.Lock()
	defer js.mu.Unlock()
	out := map[string]int{stateRunning: 0, stateSucceeded: 0, stateFailed: 0, stateCancelled: 0}
	for _, j := range js.jobs {
		out[j.State]++
	}
	return out
}

// jobsCollector exports sluice_jobs{state}: the jobs the planner knows, by state.
type jobsCollector struct {
	jobs *Jobs
	desc *prometheus.Desc
}

func newJobsCollector(js *Jobs) jobsCollector {
	return jobsCollector{jobs: js, desc: prometheus.NewDesc("sluice_jobs", "Jobs the planner knows, by state.", []string{"state"}, nil)}
}

func (c jobsCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c jobsCollector) Collect(ch chan<- prometheus.Metric) {
	for state, n := range c.jobs.Counts() {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(n), state)
	}
}

// TaskView is one task of a job as the API serves it: how far it got, from the job's events.
type TaskView struct {
	ID string `json:"id"`
	// State is waiting (on the tasks topic: nothing of it seen yet), extracting (an extractor took
	// it, or records of a run loaded, the run not ended), extracted or dead_lettered.
	State string `json:"state"`
	// Runs counts the runs that reported records (a task runs again after a rebalance or a crash).
	Runs         int    `json:"runs"`
	Records      uint64 `json:"records"`
	Loaded       uint64 `json:"loaded"`
	DeadLettered uint64 `json:"dead_lettered"`
	// Follows says the task is a crawl's page that another task's end published.
	Follows bool `json:"follows,omitempty"`

	order taskKey
}

// Tasks returns the job's tasks in order: the planned ones by index, then those their ends published.
// A finished job keeps only its dead-lettered tasks; all says whether the list is every task.
func (js *Jobs) Tasks(id string) (tasks []TaskView, all, ok bool) {
	js.mu.Lock()
	defer js.mu.Unlock()
	j, ok := js.jobs[id]
	if !ok {
		return nil, false, false
	}
	if j.tasks == nil {
		return slices.Clone(j.deadTasks), false, true
	}
	return j.taskViews(), true, true
}

// taskViews are the views of the job's tasks while it holds their detail.
func (j *Job) taskViews() []TaskView {
	var keys []taskKey
	seen := map[string]bool{}
	for i := range max(j.Tasks.Planned-len(j.followers), 0) {
		tid := taskID(j.ID, i)
		keys, seen[tid] = append(keys, taskKey{index: i, id: tid}), true
	}
	var later []string
	for tid := range j.followers {
		later = append(later, tid)
	}
	for tid := range j.tasks {
		if !seen[tid] && !j.followers[tid] {
			later = append(later, tid)
		}
	}
	slices.Sort(later)
	for _, tid := range later {
		keys = append(keys, taskKey{later: true, id: tid})
	}
	out := make([]TaskView, 0, len(keys))
	for _, k := range keys {
		tid := k.id
		v := TaskView{ID: tid, State: "waiting", Follows: j.followers[tid], order: k}
		if t := j.tasks[tid]; t != nil {
			v.Runs, v.Records = len(t.runs), t.records
			v.Loaded, v.DeadLettered = t.counts()
			switch {
			case t.finished && t.dead:
				v.State = "dead_lettered"
			case t.finished:
				v.State = "extracted"
			case t.started || len(t.runs) > 0: // taken, or the loaders have its records: a run is at work
				v.State = "extracting"
			}
		}
		out = append(out, v)
	}
	return out
}
