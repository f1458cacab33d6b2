package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicedata/sluice/pkg/demosource"
	"github.com/sluicedata/sluice/pkg/events"
	sluicev1 "github.com/sluicedata/sluice/proto/sluice/v1"
)

// TestTaskStartIsAnnounced: once a member takes a task, the events topic says so (TaskStarted,
// with the run) while the task's first page is still being fetched, and before the task's end
// (TaskExtracted of the same run): the planner tells a task at work from one that waits.
func TestTaskStartIsAnnounced(t *testing.T) {
	const n = 200
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	srcCfg := demosource.DefaultConfig()
	srcCfg.Records = n
	src, err := demosource.New(srcCfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	// The first request is held until the test saw the start.
	held, gate := make(chan struct{}), make(chan struct{})
	var once sync.Once
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		once.Do(func() { close(held); <-gate })
		src.Handler().ServeHTTP(w, r)
	}))
	defer ts.Close()
	release := sync.OnceFunc(func() { close(gate) })
	defer release() // before the server closes: it waits for the held request

	logs := startExtractor(t, c.ListenAddrs()[0], nil)
	logs.Await(t, "service started", 30*time.Second)
	publishTask(t, c.ListenAddrs(), ts.URL, n, 100)
	select {
	case <-held:
	case <-time.After(30 * time.Second):
		t.Fatal("the extractor fetched nothing within 30 s")
	}
	evs := followEvents(t, c.ListenAddrs())
	first := evs.next(t)
	s := first.GetTaskStarted()
	if first.JobId != "held" || s.GetTaskId() != "held-t0000" || s.GetRun() == "" {
		t.Fatalf("the first event while the page is fetched is %v, want the task's start", first)
	}
	release()
	end := evs.next(t).GetTaskExtracted()
	if end.GetTaskId() != "held-t0000" || end.GetRun() != s.GetRun() || end.GetRecords() != n {
		t.Fatalf("the event after the start is %v, want the end of run %s with %d records", end, s.GetRun(), n)
	}
}

// eventReader reads the events topic from its start.
type eventReader struct {
	cl      *kgo.Client
	pending []*kgo.Record
}

func followEvents(t *testing.T, brokers []string) *eventReader {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics("sluice.events"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return &eventReader{cl: cl}
}

// next returns the next event on the topic, waiting for it at most 30 s.
func (r *eventReader) next(t *testing.T) *sluicev1.JobEvent {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for len(r.pending) == 0 {
		fetches := r.cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatal("no job event within 30 s")
		}
		r.pending = append(r.pending, fetches.Records()...)
	}
	rec := r.pending[0]
	r.pending = r.pending[1:]
	ev, err := events.Decode(rec)
	if err != nil {
		t.Fatal(err)
	}
	return ev
}
