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
	"google.golang.org/protobuf/proto"

	"github.com/sluicedata/sluice/pkg/demosource"
	"github.com/sluicedata/sluice/pkg/dlq"
	"github.com/sluicedata/sluice/pkg/jobspec"
	sluicev1 "github.com/sluicedata/sluice/proto/sluice/v1"
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

	rec := readRecords(t, c.ListenAddrs(), "sluice.dlq", 1)[0]
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

// TestTaskNamesItsSource: a task that names its job's source (stored on the jobs topic) is read as
// one that carries it; one that names a source not there is dead-lettered as no_source.
func TestTaskNamesItsSource(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "sluice.tasks", "sluice.jobs"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	srcCfg := demosource.DefaultConfig()
	srcCfg.Records = 300
	src, err := demosource.New(srcCfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(src.Handler())
	defer ts.Close()
	spec, err := jobspec.Parse([]byte(`name: named
source:
  type: http
  url: ` + ts.URL + `/api/users
  records_path: data
  key: id
  pagination: {type: offset, offset_param: offset, limit_param: limit, page_size: 100}
sink: {table: named}
`))
	if err != nil {
		t.Fatal(err)
	}
	value, err := proto.Marshal(spec.SourceProto())
	if err != nil {
		t.Fatal(err)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	task := func(job, ref string) *kgo.Record {
		v, err := proto.Marshal(&sluicev1.Task{JobId: job, TaskId: job + "-t0000", SourceRef: ref, Table: "named",
			Slice: &sluicev1.Task_Offsets{Offsets: &sluicev1.OffsetRange{Start: 0, End: 300}}})
		if err != nil {
			t.Fatal(err)
		}
		return &kgo.Record{Topic: "sluice.tasks", Value: v}
	}
	bad := spec.SourceProto()
	bad.GetHttp().Url = ts.URL + "/nope" // answers 404: the task is dead-lettered
	badValue, err := proto.Marshal(bad)
	if err != nil {
		t.Fatal(err)
	}
	if err := cl.ProduceSync(context.Background(),
		&kgo.Record{Topic: "sluice.jobs", Key: []byte("source/named-1"), Value: value},
		&kgo.Record{Topic: "sluice.jobs", Key: []byte("source/bad-1"), Value: badValue},
		// A job that ended: its source removed, a copy of its task published again is skipped.
		&kgo.Record{Topic: "sluice.jobs", Key: []byte("source/old-1"), Value: value},
		&kgo.Record{Topic: "sluice.jobs", Key: []byte("source/old-1")},
		task("named-1", "source/named-1"), task("gone-1", "source/gone-1"), task("bad-1", "source/bad-1"),
		task("old-1", "source/old-1")).FirstErr(); err != nil {
		t.Fatal(err)
	}
	logs := startExtractor(t, c.ListenAddrs()[0], map[string]string{"SLUICE_EXTRACTOR_SOURCE_WAIT": "1s"})
	logs.Await(t, "service started", 30*time.Second)

	if got := readRecords(t, c.ListenAddrs(), "sluice.raw", 300); len(got) != 300 {
		t.Fatalf("%d records extracted", len(got))
	}
	letters := map[string]*sluicev1.DeadLetter{}
	for _, rec := range readRecords(t, c.ListenAddrs(), "sluice.dlq", 2) {
		dl, err := dlq.Decode(rec)
		if err != nil {
			t.Fatal(err)
		}
		letters[dl.JobId] = dl
	}
	if dl := letters["gone-1"]; dl == nil || dl.ErrorClass != "no_source" || !strings.Contains(dl.ErrorMessage, "source/gone-1") {
		t.Fatalf("the letter of the task whose source is not there: %v", dl)
	}
	// The letter of a task that named its source keeps the source, for a replay after the job's end.
	dl := letters["bad-1"]
	var kept sluicev1.Task
	if dl == nil || dl.ErrorClass != "http_4xx" || proto.Unmarshal(dl.Payload, &kept) != nil || kept.SourceRef != "" || kept.GetSource().GetHttp().GetUrl() != ts.URL+"/nope" {
		t.Fatalf("the letter of a failed task that named its source: %v, kept %v", dl, &kept)
	}
	// Every task is done (committed), the ended job's copy skipped without a letter.
	adm := kadm.NewClient(cl)
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := adm.FetchOffsets(context.Background(), "extractor")
		if err == nil {
			if o, ok := resp.Lookup("sluice.tasks", 0); ok && o.At == 4 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the tasks were not all committed: %v %v", resp, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	ends, err := adm.ListEndOffsets(context.Background(), "sluice.dlq")
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	ends.Each(func(o kadm.ListedOffset) { n += o.Offset })
	if n != 2 {
		t.Fatalf("%d dead letters, want 2: the ended job's task was lettered", n)
	}
}

// readRecords reads the first n records of topic, within 30 s.
func readRecords(t *testing.T, brokers []string, topic string, n int) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out []*kgo.Record
	for len(out) < n {
		fetches := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("%d of %d records on %s within 30 s", len(out), n, topic)
		}
		fetches.EachRecord(func(r *kgo.Record) { out = append(out, r) })
	}
	return out
}
