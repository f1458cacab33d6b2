package main

import (
	"context"
	"fmt"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sethvargo/go-envconfig"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"google.golang.org/protobuf/proto"

	"github.com/sluicedata/sluice/pkg/demosource"
	"github.com/sluicedata/sluice/pkg/jobspec"
	"github.com/sluicedata/sluice/pkg/stacktest"
	sluicev1 "github.com/sluicedata/sluice/proto/sluice/v1"
)

// TestTaskCommittedOnlyAfterItsRecordsAreAcknowledged runs the extractor on a kfake cluster that
// holds the first produce request of the task's records: while it is held the task's offset is not
// committed; once the broker answers, it is, and every record is on the raw topic.
func TestTaskCommittedOnlyAfterItsRecordsAreAcknowledged(t *testing.T) {
	const n = 500
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	gate, held := make(chan struct{}), make(chan struct{})
	var requests atomic.Int64
	c.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		// The first produce request is the test's task; until the task's records are acknowledged,
		// the extractor's only produce requests are of its records: the first of them is held.
		if requests.Add(1) == 2 {
			close(held)
			c.SleepControl(func() { <-gate })
		}
		c.KeepControl()
		return nil, nil, false
	})

	srcCfg := demosource.DefaultConfig()
	srcCfg.Records = n
	src, err := demosource.New(srcCfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(src.Handler())
	defer ts.Close()

	logs := startExtractor(t, c.ListenAddrs()[0], nil)
	logs.Await(t, "service started", 30*time.Second)
	cl := publishTask(t, c.ListenAddrs(), ts.URL, n, 100)
	select {
	case <-held:
	case <-time.After(30 * time.Second):
		t.Fatal("the extractor produced no record within 30 s")
	}
	adm := kadm.NewClient(cl)
	committed := func() int64 {
		offs, err := adm.FetchOffsets(context.Background(), "extractor")
		if err != nil {
			return -1
		}
		o, ok := offs.Lookup("sluice.tasks", 0)
		if !ok {
			return 0
		}
		return o.At
	}
	// A commit made before the records are acknowledged has every chance to land meanwhile.
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		if at := committed(); at > 0 {
			t.Fatalf("task committed (offset %d) while its records were not acknowledged", at)
		}
		time.Sleep(20 * time.Millisecond)
	}
	close(gate)
	for at := committed(); at != 1; at = committed() {
		if time.Now().After(deadline.Add(30 * time.Second)) {
			t.Fatalf("task offset %d 30 s after its records were released, want 1", at)
		}
		time.Sleep(20 * time.Millisecond)
	}
	ends, err := adm.ListEndOffsets(context.Background(), "sluice.raw")
	if err != nil {
		t.Fatal(err)
	}
	if end, _ := ends.Lookup("sluice.raw", 0); end.Offset != n {
		t.Fatalf("raw topic holds %d records, want %d", end.Offset, n)
	}
}

// startExtractor runs the extractor on brokers with the test's variables added until the test ends;
// its log lines are printed when the test fails.
func startExtractor(t *testing.T, brokers string, extra map[string]string) *stacktest.LogWriter {
	t.Helper()
	env := map[string]string{
		"SLUICE_KAFKA_BROKERS": brokers, "SLUICE_HTTP_ADDR": "127.0.0.1:0", "SLUICE_SOURCE_ALLOW": "127.0.0.1",
		"SLUICE_KAFKA_TASKS_PARTITIONS": "1", "SLUICE_KAFKA_RAW_PARTITIONS": "1",
		"SLUICE_KAFKA_SESSION_TIMEOUT": "6s", "SLUICE_EXTRACTOR_GROUP": "extractor",
	}
	for k, v := range extra {
		env[k] = v
	}
	logs := &stacktest.LogWriter{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, envconfig.MapLookuper(env), logs) }()
	t.Cleanup(func() {
		cancel()
		<-done
		if t.Failed() {
			for _, l := range logs.Lines() {
				t.Log(l)
			}
		}
	})
	return logs
}

// publishTask publishes one task of the first n records of the demo source at url, in pages of
// pageSize, and returns the client it used.
func publishTask(t *testing.T, brokers []string, url string, n, pageSize int) *kgo.Client {
	t.Helper()
	return publish(t, brokers, fmt.Sprintf(`name: held
source:
  type: http
  url: %s/api/users
  records_path: data
  key: id
  pagination: {type: offset, offset_param: offset, limit_param: limit, page_size: %d}
sink: {table: held}
`, url, pageSize), nil, &sluicev1.Task{JobId: "held", TaskId: "held-t0000", Table: "held",
		Slice: &sluicev1.Task_Offsets{Offsets: &sluicev1.OffsetRange{Start: 0, End: uint64(n)}}})
}

// publish publishes task, with the source of the job spec, to the tasks topic under key, and returns
// the client it used.
func publish(t *testing.T, brokers []string, spec string, key []byte, task *sluicev1.Task) *kgo.Client {
	t.Helper()
	js, err := jobspec.Parse([]byte(spec))
	if err != nil {
		t.Fatal(err)
	}
	task.Source = js.SourceProto()
	value, err := proto.Marshal(task)
	if err != nil {
		t.Fatal(err)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	if err := cl.ProduceSync(context.Background(), &kgo.Record{Topic: "sluice.tasks", Key: key, Value: value}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	return cl
}
