package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicedata/sluice/pkg/demosource"
	"github.com/sluicedata/sluice/pkg/dlq"
)

// TestTaskThatKilledMembersIsDeadLettered: the tasks topic's commit says that three members started
// the task at offset 0 and none finished or handed it over (each was killed by it). The next member
// dead-letters it as killed_members without asking the source anything, and commits past it.
func TestTaskThatKilledMembersIsDeadLettered(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "sluice.tasks"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	srcCfg := demosource.DefaultConfig()
	srcCfg.Records = 100
	src, err := demosource.New(srcCfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	var asked atomic.Int32
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked.Add(1)
		src.Handler().ServeHTTP(w, r)
	}))
	defer ts.Close()

	cl := publishTask(t, c.ListenAddrs(), ts.URL, 100, 10)
	adm := kadm.NewClient(cl)
	offs := kadm.Offsets{}
	offs.Add(kadm.Offset{Topic: "sluice.tasks", Partition: 0, At: 0, LeaderEpoch: -1, Metadata: "sluice-starts:0=3"})
	if _, err := adm.CommitOffsets(context.Background(), "extractor", offs); err != nil {
		t.Fatal(err)
	}
	logs := startExtractor(t, c.ListenAddrs()[0], nil)
	logs.Await(t, "service started", 30*time.Second)

	letters, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.ConsumeTopics("sluice.dlq"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer letters.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var rec *kgo.Record
	for rec == nil {
		fetches := letters.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatal("no dead letter within 30 s")
		}
		fetches.EachRecord(func(r *kgo.Record) { rec = r })
	}
	dl, err := dlq.Decode(rec)
	if err != nil {
		t.Fatal(err)
	}
	if dl.ErrorClass != "killed_members" || dl.TaskId != "held-t0000" || !strings.Contains(dl.ErrorMessage, "3 members started the task") {
		t.Fatalf("letter of class %s for %s: %s", dl.ErrorClass, dl.TaskId, dl.ErrorMessage)
	}
	if n := asked.Load(); n != 0 {
		t.Fatalf("the source was asked %d times for a task that killed three members", n)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := adm.FetchOffsets(context.Background(), "extractor")
		if err == nil {
			if o, ok := resp.Lookup("sluice.tasks", 0); ok && o.At == 1 && o.Metadata == "" {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the task's offset was not committed past it: %v %v", resp, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
