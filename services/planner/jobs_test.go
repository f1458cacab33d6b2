package main

import (
	"testing"

	sluicev1 "github.com/sluicedata/sluice/proto/sluice/v1"
)

func planned(job string, tasks uint32, expected uint64) *sluicev1.JobEvent {
	return &sluicev1.JobEvent{JobId: job, Event: &sluicev1.JobEvent_Planned{Planned: &sluicev1.JobPlanned{
		Name: "users", Table: "users", Tasks: tasks, ExpectedRecords: expected}}}
}

func extracted(job, task string, records uint64) *sluicev1.JobEvent {
	return &sluicev1.JobEvent{JobId: job, Event: &sluicev1.JobEvent_TaskExtracted{TaskExtracted: &sluicev1.TaskExtracted{TaskId: task, Records: records}}}
}

func loaded(job string, partition int32, first, last int64, records uint64) *sluicev1.JobEvent {
	return &sluicev1.JobEvent{JobId: job, Event: &sluicev1.JobEvent_RecordsLoaded{RecordsLoaded: &sluicev1.RecordsLoaded{
		Records: records, Partition: partition, FirstOffset: first, LastOffset: last}}}
}

// TestFoldCountsEachFactOnce replays a job's events with duplicates, as redelivery produces them.
func TestFoldCountsEachFactOnce(t *testing.T) {
	evs := []*sluicev1.JobEvent{
		planned("j", 2, 100),
		extracted("j", "j-t0000", 60),
		extracted("j", "j-t0000", 60), // the task ran again after a rebalance
		loaded("j", 0, 0, 59, 60),
		loaded("j", 0, 0, 59, 60), // the same batch reported again
		extracted("j", "j-t0001", 40),
	}
	js := newJobs()
	for _, ev := range evs {
		if fin := js.Apply(ev); fin != nil {
			t.Fatalf("job finished early after %v", ev)
		}
	}
	fin := js.Apply(loaded("j", 1, 0, 39, 40))
	if fin.GetFinished().GetState() != sluicev1.JobFinished_STATE_SUCCEEDED {
		t.Fatalf("last load did not finish the job: %v", fin)
	}
	j, _ := js.Get("j", fin.GetAt().AsTime())
	if j.State != stateSucceeded || j.Records.Extracted != 100 || j.Records.Loaded != 100 || j.Tasks.Extracted != 2 {
		t.Fatalf("job %+v", j)
	}
	if again := js.Apply(loaded("j", 1, 0, 39, 40)); again != nil {
		t.Fatal("a finished job finished again")
	}
}

func TestFoldDeadLetteredTaskFailsJob(t *testing.T) {
	js := newJobs()
	js.Apply(planned("j", 2, 100))
	js.Apply(extracted("j", "j-t0000", 50))
	js.Apply(&sluicev1.JobEvent{JobId: "j", Event: &sluicev1.JobEvent_TaskDeadLettered{TaskDeadLettered: &sluicev1.TaskDeadLettered{
		TaskId: "j-t0001", ErrorClass: "http_5xx", Records: 10}}})
	fin := js.Apply(loaded("j", 0, 0, 59, 60))
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
	if fin := js.Apply(extracted("j", "j-t0000", 10)); fin != nil {
		t.Fatalf("a finished job finished again: %v", fin)
	}
}
