package delivery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/kversion"

	"github.com/sluicedata/sluice/pkg/kafkatest"
	"github.com/sluicedata/sluice/pkg/pipeline"
	sluicev1 "github.com/sluicedata/sluice/proto/sluice/v1"
)

// harness is a core on a kfake cluster that records, in order, which of the dead-letter topic, the
// events topic and the commit took a write.
type harness struct {
	cluster *kfake.Cluster
	cl      *kgo.Client
	core    *Core

	mu    sync.Mutex
	order []string
	// failDLQ makes that many produce requests to the dead-letter topic fail, -1 for ever.
	failDLQ atomic.Int64
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "dlq", "tasks", "events"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	h := &harness{cluster: c}
	c.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		pr := req.(*kmsg.ProduceRequest)
		topic := pr.Topics[0].Topic
		if topic == "dlq" && h.failDLQ.Load() != 0 {
			h.failDLQ.Add(-1)
			if h.failDLQ.Load() < -1 {
				h.failDLQ.Store(-1)
			}
			// Not retried by franz-go itself: each failure reaches the core.
			return kafkatest.Refuse(pr, kerr.PolicyViolation.Code), nil, true
		}
		h.record(topic)
		return nil, nil, false
	})
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.RecordRetries(1),
		kgo.MaxVersions(kversion.V3_8_0())) // produce requests that name their topics, not topic ids
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	h.cl = cl
	log := slog.New(slog.DiscardHandler)
	r := NewRetrier(prometheus.NewRegistry(), log)
	h.core = NewCore(cl, r, "events", 1<<20, pipeline.Backoff{Base: time.Millisecond, Max: 5 * time.Millisecond})
	return h
}

func (h *harness) record(what string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if n := len(h.order); n == 0 || h.order[n-1] != what {
		h.order = append(h.order, what)
	}
}

func (h *harness) steps() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.order...)
}

func outcome(h *harness, committed *atomic.Bool) *Outcome {
	return &Outcome{
		Letters: []*kgo.Record{{Topic: "dlq", Value: []byte("letter")}},
		Follow:  []*kgo.Record{{Topic: "tasks", Value: []byte("next page"), Offset: -1}},
		Events:  []*sluicev1.JobEvent{{JobId: "job", Producer: "test"}},
		Commit: func(context.Context) error {
			h.record("commit")
			committed.Store(true)
			return nil
		},
	}
}

// TestFinishOrder: the dead letters are acknowledged before the follow-up work, that before the
// events, and the events before the commit, also when the dead-letter topic refuses writes for a
// while. The follow-up record holds where it was written.
func TestFinishOrder(t *testing.T) {
	h := newHarness(t)
	h.failDLQ.Store(3)
	var committed atomic.Bool
	out := outcome(h, &committed)
	follow := out.Follow[0]
	if err := h.core.Finish(context.Background(), out); err != nil {
		t.Fatal(err)
	}
	if follow.Offset != 0 {
		t.Fatalf("the follow-up record says offset %d, want 0: where it was written", follow.Offset)
	}
	got := h.steps()
	want := []string{"dlq", "tasks", "events", "commit"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("steps %v, want %v", got, want)
	}
}

// TestFinishNeverCommitsPastAnUnwrittenDeadLetter: while the dead-letter topic refuses every write,
// nothing is published and nothing committed; when ctx ends, Finish returns its error.
func TestFinishNeverCommitsPastAnUnwrittenDeadLetter(t *testing.T) {
	h := newHarness(t)
	h.failDLQ.Store(-1)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	var committed atomic.Bool
	err := h.core.Finish(ctx, outcome(h, &committed))
	if !errors.Is(err, context.DeadlineExceeded) || committed.Load() {
		t.Fatalf("Finish = %v, committed %v; want the deadline and no commit", err, committed.Load())
	}
	for _, s := range h.steps() {
		if s != "dlq" {
			t.Fatalf("step %q ran while the dead letter was not written", s)
		}
	}
}

// TestHandle drives work through its classes: transient errors are retried, a data error becomes
// the dead-letter outcome, a fatal one stops with nothing committed.
func TestHandle(t *testing.T) {
	pol := Policy{Backoff: pipeline.Backoff{Base: time.Millisecond, Max: time.Millisecond}, MaxAttempts: 5}
	tests := []struct {
		name       string
		errs       []error // work's error per attempt; nil succeeds
		wantErr    Class
		wantFailed bool
		wantCommit bool
	}{
		{"transient then ok", []error{New(Transient, "network", errors.New("reset")), nil}, 0, false, true},
		{"data", []error{New(Data, "http_4xx", errors.New("404"))}, 0, true, true},
		{"transient exhausted", []error{errors.New("a"), errors.New("b"), errors.New("c"), errors.New("d"), errors.New("e")}, 0, true, true},
		{"fatal", []error{New(Fatal, "kafka_unknown_topic", errors.New("no topic"))}, Fatal, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			var committed, failed atomic.Bool
			calls := 0
			err := h.core.Handle(context.Background(), "task", pol,
				func(context.Context, int) (Outcome, error) {
					err := tt.errs[calls]
					calls++
					return Outcome{Commit: func(context.Context) error { committed.Store(true); return nil }}, err
				},
				func(err error, attempts int) (Outcome, error) {
					failed.Store(true)
					return *outcome(h, &committed), nil
				})
			if (err != nil) != (tt.wantErr == Fatal) || (err != nil && ClassOf(err) != tt.wantErr) {
				t.Fatalf("Handle = %v", err)
			}
			if calls != len(tt.errs) || failed.Load() != tt.wantFailed || committed.Load() != tt.wantCommit {
				t.Fatalf("%d calls, failed %v, committed %v", calls, failed.Load(), committed.Load())
			}
		})
	}
}

func TestClassifyKafka(t *testing.T) {
	tests := []struct {
		err  error
		want Class
	}{
		{kerr.MessageTooLarge, Data},
		{kerr.UnknownTopicOrPartition, Fatal},
		{kerr.TopicAuthorizationFailed, Fatal},
		{kerr.NotEnoughReplicas, Transient},
		{kerr.RequestTimedOut, Transient},
		{errors.New("dial tcp: connection refused"), Transient},
	}
	for _, tt := range tests {
		t.Run(tt.err.Error(), func(t *testing.T) {
			if got := ClassOf(ClassifyKafka(tt.err)); got != tt.want {
				t.Fatalf("ClassifyKafka(%v) is %s, want %s", tt.err, got, tt.want)
			}
		})
	}
}
