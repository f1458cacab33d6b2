package kafka_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicedata/sluice/pkg/kafka"
	"github.com/sluicedata/sluice/pkg/stacktest"
)

// TestLagReporter joins a group on the real broker: before any commit the lag is everything the
// partition holds, after a commit what follows it.
func TestLagReporter(t *testing.T) {
	cfg := stacktest.Kafka(t)
	cfg.RawPartitions = 1
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	group := stacktest.Name(t, "group")

	lag := kafka.NewLagReporter(group, cfg.RawTopic, 50*time.Millisecond)
	lag.Watch(300*time.Millisecond, stacktest.Logger(t))
	lag.Doing("inserting into users")
	reg := prometheus.NewRegistry()
	reg.MustRegister(lag.Collector())
	cl, err := kafka.NewClient(cfg, "test", stacktest.Logger(t), nil,
		kgo.ConsumerGroup(group), kgo.ConsumeTopics(cfg.RawTopic), kgo.DisableAutoCommit(),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.OnPartitionsAssigned(lag.Assigned), kgo.OnPartitionsRevoked(lag.Revoked))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := kafka.Bootstrap(ctx, cl, cfg, stacktest.Logger(t)); err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		if err := cl.ProduceSync(ctx, &kgo.Record{Topic: cfg.RawTopic, Value: []byte(fmt.Sprint(i))}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	go lag.Run(ctx, cl, stacktest.Logger(t))

	want := func(n int) {
		t.Helper()
		expected := fmt.Sprintf("# HELP pipeline_consumer_lag_records Records not yet committed by this member's group, for the partitions this member owns.\n# TYPE pipeline_consumer_lag_records gauge\npipeline_consumer_lag_records{partition=\"0\",topic=%q} %d\n", cfg.RawTopic, n)
		var last error
		for ctx.Err() == nil {
			if last = testutil.CollectAndCompare(lag.Collector(), strings.NewReader(expected), "pipeline_consumer_lag_records"); last == nil {
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Fatalf("lag never %d: %v", n, last)
	}

	var polled []*kgo.Record
	for len(polled) < 4 {
		polled = append(polled, cl.PollRecords(ctx, 4-len(polled)).Records()...)
	}
	want(10) // joined, nothing committed
	// Lag without a commit or progress for the stall timeout: not ready, saying what it does.
	stalled := func(want bool) {
		t.Helper()
		gauge := fmt.Sprintf("# HELP pipeline_stalled_partitions Partitions this member owns that lag while neither their commit nor the member moved for the stall timeout.\n# TYPE pipeline_stalled_partitions gauge\npipeline_stalled_partitions{topic=%q} %d\n", cfg.RawTopic, map[bool]int{true: 1}[want])
		for ctx.Err() == nil {
			err := lag.Ready(ctx)
			if (err != nil) == want && testutil.CollectAndCompare(lag.Collector(), strings.NewReader(gauge), "pipeline_stalled_partitions") == nil {
				if want && !strings.Contains(err.Error(), "inserting into users") {
					t.Fatalf("Ready = %v, want what the member is doing", err)
				}
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Fatalf("stalled never %v", want)
	}
	stalled(true)
	if err := cl.CommitRecords(ctx, polled...); err != nil {
		t.Fatal(err)
	}
	want(6)
	stalled(false)
}
