package main

import (
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	"github.com/sluicedata/sluice/pkg/dlq"
	sluicev1 "github.com/sluicedata/sluice/proto/sluice/v1"
)

// TestPlanReplay puts a task's letter back on the tasks topic, a record's letter back together on
// the raw topic, and skips what cannot be replayed, each marked with the letter it replays.
func TestPlanReplay(t *testing.T) {
	topics := replayTopics{tasks: "tasks", raw: "raw"}
	at := &kgo.Record{Topic: "dlq", Partition: 2, Offset: 7}
	task, _ := proto.Marshal(&sluicev1.Task{JobId: "j", TaskId: "j-t0001"})
	rp := planReplay(at, &sluicev1.DeadLetter{Stage: sluicev1.DeadLetter_STAGE_EXTRACT, TaskId: "j-t0001", Payload: task, OriginalKey: []byte("k")}, topics)
	if rp.Action != actionTask || rp.rec.Topic != "tasks" || string(rp.rec.Value) != string(task) || string(rp.rec.Key) != "k" ||
		len(rp.rec.Headers) != 1 || rp.rec.Headers[0].Key != dlq.HeaderReplayOf || string(rp.rec.Headers[0].Value) != "dlq/2/7" {
		t.Fatalf("task letter: %+v %+v", rp, rp.rec)
	}
	rp = planReplay(at, &sluicev1.DeadLetter{Stage: sluicev1.DeadLetter_STAGE_LOAD, Payload: []byte(`{"id":1}`), OriginalKey: []byte("1"),
		Record: &sluicev1.Record{JobId: "j", TaskId: "j-t0001", Key: "1", Table: "users", Run: "r"}}, topics)
	var env sluicev1.Record
	if rp.Action != actionRaw || rp.rec.Topic != "raw" || proto.Unmarshal(rp.rec.Value, &env) != nil ||
		string(env.Payload) != `{"id":1}` || env.Run != "replay of dlq/2/7" || env.Table != "users" || env.Key != "1" || string(rp.rec.Key) != "1" {
		t.Fatalf("record letter: %+v, envelope %+v", rp, &env)
	}
	for name, dl := range map[string]*sluicev1.DeadLetter{
		"truncated":           {Stage: sluicev1.DeadLetter_STAGE_EXTRACT, TaskId: "j-t0001", Truncated: true},
		"load without record": {Stage: sluicev1.DeadLetter_STAGE_LOAD, Payload: []byte(`{}`)},
		"not the task":        {Stage: sluicev1.DeadLetter_STAGE_EXTRACT, TaskId: "j-t0002", Payload: task},
	} {
		if rp := planReplay(at, dl, topics); rp.Action != actionSkip || rp.Why == "" || rp.rec != nil {
			t.Fatalf("%s: %+v", name, rp)
		}
	}
}
