package main

import (
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	sluicev1 "github.com/sluicedata/sluice/proto/sluice/v1"
)

func planned(job string, tasks uint32, expected uint64) *sluicev1.JobEvent {
	return &sluicev1.JobEvent{JobId: job, Event: &sluicev1.JobEvent_Planned{Planned: &sluicev1.JobPlanned{
		Name: "users", Table: "users", Tasks: tasks, ExpectedRecords: expected}}}
}

func extracted(job, task, run string, records uint64) *sluicev1.JobEvent {
	return &sluicev1.JobEvent{JobId: job, Event: &sluicev1.JobEvent_TaskExtracted{TaskExtracted: &sluicev1.TaskExtracted{
		TaskId: task, Run: run, Records: records}}}
}

// loaded reports offsets [first, last] of one partition loaded for a task run.
func loaded(job, task, run string, partition int32, first, last int64) *sluicev1.JobEvent {
	return &sluicev1.JobEvent{JobId: job, Event: &sluicev1.JobEvent_RecordsLoaded{RecordsLoaded: &sluicev1.RecordsLoaded{
		TaskId: task, Run: run, Partition: partition, Records: uint64(last - first + 1),
		Offsets: []*sluicev1.OffsetSpan{{First: first, Last: last}}}}}
}

// TestFoldCountsEachRecordOnce replays events as redelivery and re-runs produce them: the same batch
// reported twice, a batch cut differently, a task reported twice, and records of an abandoned run.
func TestFoldCountsEachRecordOnce(t *testing.T) {
	steps := []*sluicev1.JobEvent{
		planned("j", 2, 100),
		loaded("j", "t0", "old", 0, 0, 29),   // a run abandoned in a rebalance: never counted
		loaded("j", "t0", "r1", 0, 100, 129), // the final run, partition 0
		loaded("j", "t0", "r1", 0, 100, 129), // the same batch reported again
		loaded("j", "t0", "r1", 0, 110, 139), // redelivered after a crash, cut differently
		extracted("j", "t0", "r1", 60),
		extracted("j", "t0", "other", 60), // the task ran again and reported again: the first report stands
		loaded("j", "t0", "r1", 1, 0, 19),
		extracted("j", "t1", "r2", 40),
		loaded("j", "t1", "r2", 2, 0, 38),
	}
	js := newJobs()
	for _, ev := range steps {
		if fin := js.Apply(ev); fin != nil {
			t.Fatalf("job finished early, after %v", ev)
		}
	}
	fin := js.Apply(loaded("j", "t1", "r2", 2, 38, 39))
	if fin.GetFinished().GetState() != sluicev1.JobFinished_STATE_SUCCEEDED {
		t.Fatalf("the last record did not finish the job: %v", fin)
	}
	j, _ := js.Get("j", fin.GetAt().AsTime())
	if j.State != stateSucceeded || j.Records.Extracted != 100 || j.Records.Loaded != 100 || j.Tasks.Extracted != 2 {
		t.Fatalf("job %+v", j)
	}
	if again := js.Apply(loaded("j", "t1", "r2", 2, 0, 39)); again != nil {
		t.Fatal("a finished job finished again")
	}
}

func TestFoldDeadLetteredTaskFailsJob(t *testing.T) {
	js := newJobs()
	js.Apply(planned("j", 2, 100))
	js.Apply(extracted("j", "t0", "r", 50))
	js.Apply(&sluicev1.JobEvent{JobId: "j", Event: &sluicev1.JobEvent_TaskDeadLettered{TaskDeadLettered: &sluicev1.TaskDeadLettered{
		TaskId: "t1", Run: "s", ErrorClass: "http_5xx", Records: 10}}})
	js.Apply(loaded("j", "t0", "r", 0, 0, 49))
	fin := js.Apply(loaded("j", "t1", "s", 1, 0, 9))
	j, _ := js.Get("j", fin.GetAt().AsTime())
	if fin.GetFinished().GetState() != sluicev1.JobFinished_STATE_FAILED || j.State != stateFailed || j.Reason == "" ||
		j.Tasks.DeadLettered != 1 || j.Records.Loaded != 60 {
		t.Fatalf("job %+v, finished %v", j, fin)
	}
}

func TestFoldFinishedEventFromLog(t *testing.T) {
	js := newJobs()
	js.Apply(planned("j", 1, 10))
	js.Apply(&sluicev1.JobEvent{JobId: "j", Event: &sluicev1.JobEvent_Finished{Finished: &sluicev1.JobFinished{
		State: sluicev1.JobFinished_STATE_FAILED, Reason: "stopped"}}})
	if j, _ := js.Get("j", js.jobs["j"].CreatedAt); j.State != stateFailed || j.Reason != "stopped" {
		t.Fatalf("job %+v", j)
	}
	if fin := js.Apply(extracted("j", "t0", "r", 10)); fin != nil {
		t.Fatalf("a finished job finished again: %v", fin)
	}
}

func TestIntervalSet(t *testing.T) {
	tests := []struct {
		name  string
		spans [][2]int64
		want  uint64
		parts int
	}{
		{"disjoint", [][2]int64{{0, 9}, {20, 29}}, 20, 2},
		{"overlapping", [][2]int64{{0, 9}, {5, 14}}, 15, 1},
		{"adjacent merge", [][2]int64{{0, 9}, {10, 19}}, 20, 1},
		{"inside", [][2]int64{{0, 99}, {10, 19}}, 100, 1},
		{"bridging", [][2]int64{{0, 9}, {20, 29}, {5, 25}}, 30, 1},
		{"out of order", [][2]int64{{50, 59}, {0, 9}, {30, 39}}, 30, 3},
		{"repeated", [][2]int64{{7, 7}, {7, 7}, {7, 7}}, 1, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var s intervalSet
			for _, sp := range tt.spans {
				s.add(sp[0], sp[1])
			}
			if s.count() != tt.want || len(s.spans) != tt.parts {
				t.Fatalf("count %d in %d spans %v, want %d in %d", s.count(), len(s.spans), s.spans, tt.want, tt.parts)
			}
		})
	}
}

// TestFoldHeldTable: a loader's report that the table refuses the records shows on the job, its
// clearing removes it, and a job whose records were dead-lettered for their table fails with why.
func TestFoldHeldTable(t *testing.T) {
	held := func(cleared bool) *sluicev1.JobEvent {
		return &sluicev1.JobEvent{JobId: "j", Event: &sluicev1.JobEvent_LoadHeld{LoadHeld: &sluicev1.LoadHeld{
			Table: "users", ErrorClass: "schema", Reason: "No such column key", Records: 10, Cleared: cleared}}}
	}
	js := newJobs()
	js.Apply(planned("j", 1, 10))
	js.Apply(held(false))
	if j, _ := js.Get("j", time.Now()); j.Held == nil || j.Held.Reason != "No such column key" || j.State != stateRunning {
		t.Fatalf("job %+v, want it held", j)
	}
	js.Apply(held(true))
	if j, _ := js.Get("j", time.Now()); j.Held != nil {
		t.Fatalf("job still held after the table was cleared: %+v", j.Held)
	}
	js.Apply(held(false))
	js.Apply(extracted("j", "t0", "r1", 10))
	fin := js.Apply(&sluicev1.JobEvent{JobId: "j", Event: &sluicev1.JobEvent_RecordsDeadLettered{RecordsDeadLettered: &sluicev1.RecordsDeadLettered{
		TaskId: "t0", Run: "r1", ErrorClass: "schema", Records: 10, Offsets: []*sluicev1.OffsetSpan{{First: 0, Last: 9}}}}})
	if fin.GetFinished().GetState() != sluicev1.JobFinished_STATE_FAILED || !strings.Contains(fin.GetFinished().Reason, "No such column key") {
		t.Fatalf("job finished with %v, want failed with the table's reason", fin)
	}
}

// TestFoldFewerRecordsThanAnnouncedFailsJob: tasks that extracted fewer records than the source
// announced never make a job succeed, however complete their loading.
func TestFoldFewerRecordsThanAnnouncedFailsJob(t *testing.T) {
	js := newJobs()
	js.Apply(planned("j", 2, 100))
	js.Apply(extracted("j", "t0", "r0", 60))
	js.Apply(extracted("j", "t1", "r1", 30))
	js.Apply(loaded("j", "t0", "r0", 0, 0, 59))
	fin := js.Apply(loaded("j", "t1", "r1", 1, 0, 29))
	if fin.GetFinished().GetState() != sluicev1.JobFinished_STATE_FAILED || !strings.Contains(fin.GetFinished().Reason, "90 records where the source announced 100") {
		t.Fatalf("job finished with %v", fin)
	}
}

// TestFoldCountsLoadedAndDeadLetteredAsAUnion: a record reported loaded and dead-lettered (two
// members after a rebalance) counts once towards completion.
func TestFoldCountsLoadedAndDeadLetteredAsAUnion(t *testing.T) {
	js := newJobs()
	js.Apply(planned("j", 1, 10))
	js.Apply(extracted("j", "t0", "r0", 10))
	js.Apply(loaded("j", "t0", "r0", 0, 0, 5))
	dead := func(first, last int64) *sluicev1.JobEvent {
		return &sluicev1.JobEvent{JobId: "j", Event: &sluicev1.JobEvent_RecordsDeadLettered{RecordsDeadLettered: &sluicev1.RecordsDeadLettered{
			TaskId: "t0", Run: "r0", ErrorClass: "data", Records: uint64(last - first + 1), Offsets: []*sluicev1.OffsetSpan{{First: first, Last: last}}}}}
	}
	if fin := js.Apply(dead(3, 8)); fin != nil {
		t.Fatalf("offsets 0-8 finished a job of 10 records: %v", fin)
	}
	if fin := js.Apply(dead(9, 9)); fin.GetFinished().GetState() != sluicev1.JobFinished_STATE_SUCCEEDED {
		t.Fatalf("the tenth record did not finish the job: %v", fin)
	}
}

// TestCrawlChainCompletesAtItsLastPage: a crawl's pages are tasks that each page's end publishes;
// their events may come in any order, and the job completes only once the page that names no next
// one has ended and every page's records are loaded.
func TestCrawlChainCompletesAtItsLastPage(t *testing.T) {
	link := func(task, follows, next string) *sluicev1.JobEvent {
		return &sluicev1.JobEvent{JobId: "c", Event: &sluicev1.JobEvent_TaskExtracted{TaskExtracted: &sluicev1.TaskExtracted{
			TaskId: task, Run: "r-" + task, Records: 10, Follows: follows, NextTaskId: next}}}
	}
	ev := &sluicev1.JobEvent{JobId: "c", Event: &sluicev1.JobEvent_Planned{Planned: &sluicev1.JobPlanned{
		Name: "c", Table: "c", Tasks: 1, ExpectedUnknown: true}}}
	steps := []*sluicev1.JobEvent{
		ev,
		link("t0", "", "t0-p1"),
		loaded("c", "t0", "r-t0", 0, 0, 9),
		link("t0-p2", "t0-p1", ""), // the last page's end reported before its predecessor's
		loaded("c", "t0-p2", "r-t0-p2", 0, 20, 29),
		loaded("c", "t0-p1", "r-t0-p1", 0, 10, 19),
	}
	js := newJobs()
	for _, e := range steps {
		if fin := js.Apply(e); fin != nil {
			t.Fatalf("job finished early, after %v", e)
		}
	}
	if j, _ := js.Get("c", time.Now()); j.Tasks.Planned != 3 || j.Tasks.Extracted != 2 {
		t.Fatalf("tasks %+v, want 3 known and 2 ended", j.Tasks)
	}
	fin := js.Apply(link("t0-p1", "t0", "t0-p2"))
	if fin.GetFinished().GetState() != sluicev1.JobFinished_STATE_SUCCEEDED {
		t.Fatalf("the middle page's end did not finish the job: %v", fin)
	}
	if j, _ := js.Get("c", time.Now()); j.Records.Extracted != 30 || j.Records.Loaded != 30 || j.Tasks.Planned != 3 {
		t.Fatalf("job %+v", j)
	}
}

// TestTasksView lists a job's tasks in order with their states: waiting, extracting, extracted,
// dead-lettered, and
// a crawl's page that another task published.
func TestTasksView(t *testing.T) {
	js := newJobs()
	js.Apply(planned("j", 4, 100))
	js.Apply(extracted("j", taskID("j", 0), "r1", 60))
	js.Apply(loaded("j", taskID("j", 3), "r3", 0, 100, 109))
	js.Apply(loaded("j", taskID("j", 0), "r1", 0, 0, 59))
	js.Apply(&sluicev1.JobEvent{JobId: "j", Event: &sluicev1.JobEvent_TaskDeadLettered{TaskDeadLettered: &sluicev1.TaskDeadLettered{
		TaskId: taskID("j", 2), Run: "r9"}}})
	tasks, all, ok := js.Tasks("j")
	if !ok || !all || len(tasks) != 4 {
		t.Fatalf("tasks %+v", tasks)
	}
	want := []struct {
		state          string
		records, loads uint64
	}{{"extracted", 60, 60}, {"waiting", 0, 0}, {"dead_lettered", 0, 0}, {"extracting", 0, 10}}
	for i, w := range want {
		if tasks[i].ID != taskID("j", i) || tasks[i].State != w.state || tasks[i].Records != w.records || tasks[i].Loaded != w.loads {
			t.Errorf("task %d: %+v, want %s with %d records, %d loaded", i, tasks[i], w.state, w.records, w.loads)
		}
	}
	if _, _, ok := js.Tasks("nope"); ok {
		t.Fatal("tasks of an unknown job")
	}
	// Finished, the job keeps its dead-lettered task only.
	js.Apply(extracted("j", taskID("j", 1), "r2", 40))
	js.Apply(extracted("j", taskID("j", 3), "r3", 10))
	if fin := js.Apply(loaded("j", taskID("j", 1), "r2", 1, 0, 39)); fin == nil {
		t.Fatal("the job did not finish")
	}
	tasks, all, _ = js.Tasks("j")
	if all || len(tasks) != 1 || tasks[0].ID != taskID("j", 2) || tasks[0].State != "dead_lettered" {
		t.Fatalf("a finished job's tasks: %+v (all %v)", tasks, all)
	}
}

// TestTimeLeft estimates a running job's time left from the rate it loaded at, and none once it ended
// or when the source gave no extent.
func TestTimeLeft(t *testing.T) {
	start := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	at := func(ev *sluicev1.JobEvent, when time.Time) *sluicev1.JobEvent {
		ev.At = timestamppb.New(when)
		return ev
	}
	js := newJobs()
	js.Apply(at(planned("j", 2, 100), start))
	if j, _ := js.Get("j", start.Add(time.Second)); j.ETASeconds != nil {
		t.Fatalf("a time left of %v before any record loaded", *j.ETASeconds)
	}
	js.Apply(at(loaded("j", "t0", "r", 0, 0, 24), start.Add(5*time.Second)))
	// 25 records in 10 s: the other 75 take 30 s more.
	if j, _ := js.Get("j", start.Add(10*time.Second)); j.ETASeconds == nil || *j.ETASeconds != 30 {
		t.Fatalf("time left %v, want 30 s", j.ETASeconds)
	}
	unknown := planned("u", 1, 0)
	unknown.GetPlanned().ExpectedUnknown = true
	js.Apply(at(unknown, start))
	js.Apply(at(loaded("u", "t0", "r", 0, 0, 24), start.Add(5*time.Second)))
	if j, _ := js.Get("u", start.Add(10*time.Second)); j.ETASeconds != nil {
		t.Fatalf("a time left of %v for a source without an extent", *j.ETASeconds)
	}
}

// TestCancel ends a running job as cancelled once: its later events change nothing, a second cancel
// or a cancel of an ended job is refused, and the cancel read back from the log folds the same.
func TestCancel(t *testing.T) {
	js := newJobs()
	js.Apply(planned("j", 2, 100))
	js.Apply(extracted("j", "t0", "r", 50))
	js.Apply(loaded("j", "t0", "r", 0, 0, 49))
	at := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	fin, err := js.Cancel("j", "cancelled by ops", at)
	if err != nil || fin.GetFinished().GetState() != sluicev1.JobFinished_STATE_CANCELLED {
		t.Fatalf("cancel: %v, %v", fin, err)
	}
	if fin := js.Apply(extracted("j", "t1", "r", 50)); fin != nil {
		t.Fatalf("a cancelled job finished again: %v", fin)
	}
	j, _ := js.Get("j", at)
	if j.State != stateCancelled || j.Reason != "cancelled by ops" || j.Records.Loaded != 50 || j.Tasks.Extracted != 1 || j.ETASeconds != nil {
		t.Fatalf("job %+v, want cancelled with the 50 records loaded before", j)
	}
	if fin, err := js.Cancel("j", "again", at); fin != nil || err != nil {
		t.Fatalf("a second cancel: %v, %v; want nothing to publish and no error", fin, err)
	}
	if j, _ := js.Get("j", at); j.Reason != "cancelled by ops" {
		t.Fatalf("a second cancel changed the reason: %q", j.Reason)
	}
	js.Apply(planned("done", 0, 0)) // a job without tasks succeeds at once
	if _, err := js.Cancel("done", "", at); !errors.Is(err, errEnded) {
		t.Fatalf("cancel of a succeeded job: %v, want errEnded", err)
	}
	// An end the planner decided (no progress) does not end a cancelled job again.
	stalled := &sluicev1.JobEvent{JobId: "j", Event: &sluicev1.JobEvent_Finished{Finished: &sluicev1.JobFinished{State: sluicev1.JobFinished_STATE_FAILED}}}
	if js.End(stalled, at) {
		t.Fatal("a cancelled job was failed for want of progress")
	}
	if _, err := js.Cancel("nope", "", at); !errors.Is(err, errNoJob) {
		t.Fatalf("cancel of no job: %v, want errNoJob", err)
	}
	// A job the planner failed (no progress) can be cancelled still, so that the extractors skip
	// its tasks left on the topic; it keeps its counts, its state goes on the jobs topic again.
	js.Apply(planned("f", 2, 100))
	js.Apply(loaded("f", "t0", "r", 0, 0, 9))
	failed := &sluicev1.JobEvent{JobId: "f", Event: &sluicev1.JobEvent_Finished{Finished: &sluicev1.JobFinished{State: sluicev1.JobFinished_STATE_FAILED, Reason: "no progress for 30m"}}}
	if !js.End(failed, at) {
		t.Fatal("the stalled job did not fail")
	}
	js.Stored(js.Unstored())
	fin2, err := js.Cancel("f", "cancelled by ops", at)
	if err != nil || fin2.GetFinished().GetState() != sluicev1.JobFinished_STATE_CANCELLED {
		t.Fatalf("cancel of a failed job: %v, %v", fin2, err)
	}
	if f, _ := js.Get("f", at); f.State != stateCancelled || f.Reason != "cancelled by ops after it failed: no progress for 30m" || f.Records.Loaded != 10 {
		t.Fatalf("job %+v", f)
	}
	if st := js.Unstored(); len(st) != 1 || st[0].JobId != "f" || st[0].State != stateCancelled {
		t.Fatalf("states to store %v, want the failed job's, cancelled", st)
	}
	if js.Counts()[stateCancelled] != 2 {
		t.Fatalf("counts %v", js.Counts())
	}
	// A planner that reads the log again folds the cancel the same.
	again := newJobs()
	again.Apply(planned("j", 2, 100))
	fin.At = timestamppb.New(at)
	again.Apply(fin)
	if j, _ := again.Get("j", at); j.State != stateCancelled || j.Reason != "cancelled by ops" {
		t.Fatalf("folded from the log: %+v", j)
	}
}

func started(job, task, follows string) *sluicev1.JobEvent {
	return &sluicev1.JobEvent{JobId: job, Event: &sluicev1.JobEvent_TaskStarted{TaskStarted: &sluicev1.TaskStarted{
		TaskId: task, Run: "r", Follows: follows}}}
}

// TestStallCountsOnlyWorkedOnTime: an hour without news fails a job only when it is worked on (a
// task taken and not ended, or every task ended and records owed by the loaders), or its tasks are
// not all out; a job whose work all waits on the tasks topic runs on.
func TestStallCountsOnlyWorkedOnTime(t *testing.T) {
	published := &sluicev1.JobEvent{JobId: "j", Event: &sluicev1.JobEvent_TasksPublished{TasksPublished: &sluicev1.TasksPublished{Tasks: 2}}}
	nextPage := &sluicev1.JobEvent{JobId: "j", Event: &sluicev1.JobEvent_TaskExtracted{TaskExtracted: &sluicev1.TaskExtracted{
		TaskId: "t0", Run: "r", Records: 10, NextTaskId: "t0-p00000001"}}}
	for _, tt := range []struct {
		name    string
		events  []*sluicev1.JobEvent
		stalled bool
	}{
		{"every task queued", []*sluicev1.JobEvent{published}, false},
		{"one task taken", []*sluicev1.JobEvent{published, started("j", "t0", "")}, true},
		{"one task done, the other queued", []*sluicev1.JobEvent{published, started("j", "t0", ""), extracted("j", "t0", "r", 10)}, false},
		{"one task done, the other taken", []*sluicev1.JobEvent{published, extracted("j", "t0", "r", 10), started("j", "t1", "")}, true},
		{"a crawl's next page queued", []*sluicev1.JobEvent{published, extracted("j", "t1", "r", 0), nextPage}, false},
		{"a crawl's next page taken before the page's end is read", []*sluicev1.JobEvent{published, extracted("j", "t1", "r", 0),
			started("j", "t0-p00000001", "t0"), nextPage}, true},
		{"every task done, records not loaded", []*sluicev1.JobEvent{published, extracted("j", "t0", "r", 10), extracted("j", "t1", "r", 10)}, true},
		{"records of a task loading, its start not heard of", []*sluicev1.JobEvent{published, loaded("j", "t0", "r", 0, 0, 4)}, true},
		{"tasks not all out", nil, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			at := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
			js := newJobs()
			for _, ev := range append([]*sluicev1.JobEvent{planned("j", 2, 0)}, tt.events...) {
				ev.At = timestamppb.New(at)
				js.Apply(ev)
			}
			now := at.Add(time.Hour)
			got := js.Stalled(now.Add(-30*time.Minute), at.Add(-time.Minute), 30*time.Minute)
			if (len(got) == 1) != tt.stalled {
				t.Fatalf("stalled: %v, want %v", got, tt.stalled)
			}
		})
	}
}

// TestCrawlCutAtItsBoundFailsSayingSo: a crawl whose page past the default bound is dead-lettered
// (class max_pages) fails with a reason that says it was cut and how to read further; the records
// before it count as loaded.
func TestCrawlCutAtItsBoundFailsSayingSo(t *testing.T) {
	js := newJobs()
	js.Apply(planned("j", 1, 0))
	js.Apply(&sluicev1.JobEvent{JobId: "j", Event: &sluicev1.JobEvent_TaskExtracted{TaskExtracted: &sluicev1.TaskExtracted{
		TaskId: "t0", Run: "r", Records: 10, NextTaskId: "t0-p00000001"}}})
	js.Apply(loaded("j", "t0", "r", 0, 0, 9))
	fin := js.Apply(&sluicev1.JobEvent{JobId: "j", Event: &sluicev1.JobEvent_TaskDeadLettered{TaskDeadLettered: &sluicev1.TaskDeadLettered{
		TaskId: "t0-p00000001", Follows: "t0", Run: "s", ErrorClass: "max_pages"}}})
	j, _ := js.Get("j", time.Now())
	if fin.GetFinished().GetState() != sluicev1.JobFinished_STATE_FAILED || j.Records.Loaded != 10 ||
		!strings.Contains(j.Reason, "cut at its default bound of pages") || !strings.Contains(j.Reason, "max_pages") {
		t.Fatalf("job %+v, finished %v", j, fin)
	}
}
