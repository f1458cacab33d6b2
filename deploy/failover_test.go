package deploy

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicedata/sluice/pkg/demosource"
	"github.com/sluicedata/sluice/pkg/events"
	"github.com/sluicedata/sluice/pkg/kafka"
	"github.com/sluicedata/sluice/pkg/stacktest"
)

// leaderView is a planner's GET /v1/leader.
type leaderView struct {
	Leading bool   `json:"leading"`
	Known   bool   `json:"known"`
	Address string `json:"address"`
}

// leaseRecord is a record of the lease topic: the planner that led from then on.
type leaseRecord struct {
	Address string `json:"address"`
	Member  string `json:"member"`
}

// TestPlannerFailover runs two planners. The one that leads is SIGKILLed while a job it planned is
// being extracted: the other leads within 30 s, takes the job over and ends it succeeded, every
// record in ClickHouse once, no task published twice and the job planned once. A write sent to the
// follower reaches the leader, and while the leader is dead and the lease has not moved yet, a
// write is answered 503 with Retry-After.
func TestPlannerFailover(t *testing.T) {
	stacktest.Require(t)
	const n, tasks = 40_000, 40
	src := demosource.DefaultConfig()
	src.Records = n
	src.PageLatency = 100 * time.Millisecond
	p := newPipeline(t, src)
	planner := func(name string) (*proc, string) {
		port := strconv.Itoa(freePort(t))
		pr := start(t, name, p.with(map[string]string{
			"SLUICE_HTTP_ADDR":         "127.0.0.1:" + port,
			"SLUICE_PLANNER_ADVERTISE": "http://127.0.0.1:" + port,
			// The planners forward writes to each other, and to nothing else.
			"SLUICE_PLANNER_PEERS":        "127.0.0.1",
			"SLUICE_PLANNER_LAG_INTERVAL": "1s",
		}))
		return pr, pr.ready(t)
	}
	procA, urlA := planner("planner-a")
	procB, urlB := planner("planner-b")
	start(t, "extractor", p.with(map[string]string{"SLUICE_EXTRACTOR_CONCURRENCY": "2"})).ready(t)
	start(t, "loader", p.env).ready(t)

	// One leads, and the other knows where.
	var leader, follower string
	var leaderProc *proc
	waitFor(t, "planner leading and the other knowing it", 30*time.Second, func() bool {
		var a, b leaderView
		getJSON(t, urlA, "/v1/leader", &a)
		getJSON(t, urlB, "/v1/leader", &b)
		switch {
		case a.Leading && !b.Leading && b.Address == urlA:
			leader, follower, leaderProc = urlA, urlB, procA
		case b.Leading && !a.Leading && a.Address == urlB:
			leader, follower, leaderProc = urlB, urlA, procB
		default:
			return false
		}
		return true
	})
	t.Logf("%s leads, %s follows", leader, follower)
	before := leaseRecords(t, p)

	// Submitted to the follower, which forwards it; 40 tasks of 10 pages of 100 records, 2 at a
	// time: some 20 s of extraction.
	j := submit(t, follower, jobSpec("failover", p.srcURL, "failover", tasks, 100, 3))
	p.waitRows(t, "failover", 500, time.Minute)
	if got := poll(t, follower, j.ID); got.State != "running" {
		t.Fatalf("the follower sees the job %+v, want running", got)
	}

	killed := time.Now()
	leaderProc.stop(t, syscall.SIGKILL)
	// stop returned once the process was reaped: its exit is the proof the fault happened.
	if st := leaderProc.cmd.ProcessState; st == nil || st.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("the leader did not die of SIGKILL: %v", leaderProc.cmd.ProcessState)
	}
	// Before the lease moves, the follower cannot forward a write to the dead leader: 503 and
	// Retry-After. (A follower that leads already answers 404 for no such job.)
	var v leaderView
	getJSON(t, follower, "/v1/leader", &v)
	if !v.Leading {
		resp, err := apiDo(http.MethodPost, follower+"/v1/jobs/no-such-job/cancel", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		getJSON(t, follower, "/v1/leader", &v)
		if !v.Leading && (resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "") {
			t.Fatalf("a write while the leader is dead: %s, Retry-After %q; want 503 with Retry-After", resp.Status, resp.Header.Get("Retry-After"))
		}
		t.Logf("a write to the follower while the leader is dead: %s, Retry-After %q", resp.Status, resp.Header.Get("Retry-After"))
	}
	waitFor(t, "other planner leading after the SIGKILL", 30*time.Second-time.Since(killed), func() bool {
		getJSON(t, follower, "/v1/leader", &v)
		return v.Leading
	})
	t.Logf("the other planner leads %s after the SIGKILL", time.Since(killed).Round(100*time.Millisecond))
	// The lease moved: a record of the new leader, another member, after those of the old one.
	after := leaseRecords(t, p)
	if len(after) <= len(before) || after[len(after)-1].Address != follower || after[len(after)-1].Member == before[len(before)-1].Member {
		t.Fatalf("lease records before the kill %+v, after %+v: want a new one of %s", before, after, follower)
	}

	j = await(t, follower, j.ID, 3*time.Minute)
	if j.State != "succeeded" || j.Records.Loaded != n || j.Records.Extracted != n || j.Tasks.Planned != tasks {
		t.Fatalf("job ended %+v, want succeeded with all %d records", j, n)
	}
	checkExact(t, p, "failover", n, src.RecordSize)
	if rows, keys := p.count(t, "failover"); rows != n || keys != n {
		t.Fatalf("%d rows of %d keys in ClickHouse before deduplication, want each of the %d once", rows, keys, n)
	}
	// No task published twice, no job planned twice.
	published := map[string]int{}
	readTopic(t, p, p.kafka.TasksTopic, func(r *kgo.Record) {
		if strings.HasPrefix(string(r.Key), j.ID+"-t") {
			published[string(r.Key)]++
		}
	})
	if len(published) != tasks {
		t.Fatalf("%d tasks of the job on the tasks topic, want %d", len(published), tasks)
	}
	for id, times := range published {
		if times != 1 {
			t.Fatalf("task %s published %d times", id, times)
		}
	}
	planned, ended := 0, 0
	readTopic(t, p, p.kafka.EventsTopic, func(r *kgo.Record) {
		ev, err := events.Decode(r)
		if err != nil || ev.JobId != j.ID {
			return
		}
		if ev.GetPlanned() != nil {
			planned++
		}
		if ev.GetFinished() != nil {
			ended++
		}
	})
	if planned != 1 || ended < 1 {
		t.Fatalf("the job was planned %d times and ended %d times on the events topic, want planned once and ended", planned, ended)
	}
}

// readTopic calls fn for every record of topic.
func readTopic(t *testing.T, p *deployment, topic string, fn func(*kgo.Record)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl, err := kafka.NewClient(p.kafka, "test-read", stacktest.Logger(t), nil,
		kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := kafka.ReadToEnd(ctx, cl, topic, func(r *kgo.Record) bool { fn(r); return true }); err != nil {
		t.Fatalf("read %s: %v", topic, err)
	}
}

// leaseRecords reads the planners' lease records, oldest first.
func leaseRecords(t *testing.T, p *deployment) []leaseRecord {
	t.Helper()
	var out []leaseRecord
	readTopic(t, p, p.kafka.LeaseTopic, func(r *kgo.Record) {
		var rec leaseRecord
		if err := json.Unmarshal(r.Value, &rec); err != nil {
			t.Fatalf("lease record %q: %v", r.Value, err)
		}
		out = append(out, rec)
	})
	if len(out) == 0 {
		t.Fatal("no lease record")
	}
	return out
}

// waitLeads waits until the planner leads: a planner that starts after one was killed waits for the
// killed one's lease to expire (SLUICE_PLANNER_LEASE_TIMEOUT) before it takes writes.
func waitLeads(t *testing.T, planner string) {
	t.Helper()
	waitFor(t, "planner "+planner+" leading", 30*time.Second, func() bool {
		var v leaderView
		getJSON(t, planner, "/v1/leader", &v)
		return v.Leading
	})
}
