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
			if last = testutil.CollectAndCompare(lag.Collector(), strings.NewReader(expected)); last == nil {
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
	if err := cl.CommitRecords(ctx, polled...); err != nil {
		t.Fatal(err)
	}
	want(6)
}
