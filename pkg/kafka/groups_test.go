package kafka_test

import (
	"context"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicedata/sluice/pkg/kafka"
	"github.com/sluicedata/sluice/pkg/stacktest"
)

// TestGroupMonitor measures a group with no member from outside it, on the real broker: records and
// seconds behind per partition (the age of the record at the committed offset), a partition without
// a commit reported as such, the group's state and members, and a drain estimate once it moves.
func TestGroupMonitor(t *testing.T) {
	cfg := stacktest.Kafka(t)
	cfg.RawPartitions = 3
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cl, err := kafka.NewClient(cfg, "test-lag", stacktest.Logger(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := kafka.Bootstrap(ctx, cl, cfg, stacktest.Logger(t)); err != nil {
		t.Fatal(err)
	}
	// 10 records a partition, created an hour ago and later, one a minute.
	hourAgo := time.Now().Add(-time.Hour).Truncate(time.Millisecond)
	var recs []*kgo.Record
	for p := range int32(3) {
		for i := range 10 {
			recs = append(recs, &kgo.Record{Topic: cfg.RawTopic, Partition: p, Timestamp: hourAgo.Add(time.Duration(i) * time.Minute), Value: []byte(fmt.Sprint(i))})
		}
	}
	producer, err := kafka.NewClient(cfg, "test-lag-producer", stacktest.Logger(t), nil, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer producer.Close()
	if err := producer.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	group := stacktest.Name(t, "lagged")
	adm := kadm.NewClient(cl)
	commit := func(offsets map[int32]int64) {
		t.Helper()
		os := kadm.Offsets{}
		for p, at := range offsets {
			os.Add(kadm.Offset{Topic: cfg.RawTopic, Partition: p, At: at, LeaderEpoch: -1})
		}
		resp, err := adm.CommitOffsets(ctx, group, os)
		if err == nil {
			err = resp.Error()
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	// Partition 0 caught up, partition 1 four records in (the fifth made 56 minutes ago is the
	// oldest not committed), partition 2 never committed.
	commit(map[int32]int64{0: 10, 1: 4})

	watched := kafka.Watched{Group: group, Topic: cfg.RawTopic}
	m := kafka.NewGroupMonitor([]kafka.Watched{watched}, time.Second)
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(m)
	if err := m.Measure(ctx, cl, watched); err != nil {
		t.Fatal(err)
	}
	g := m.Lags()[0]
	if g.Members != 0 || g.State != "Empty" || g.Uncommitted != 1 || g.Records != 16 {
		t.Fatalf("group %+v: want no members, Empty, 1 partition without commit, 16 records behind", g)
	}
	want := []struct {
		committed, records int64
		age                time.Duration
	}{{10, 0, 0}, {4, 6, time.Since(hourAgo.Add(4 * time.Minute))}, {-1, 10, time.Since(hourAgo)}}
	for i, p := range g.Partitions {
		if p.Committed != want[i].committed || p.Records != want[i].records || math.Abs(p.Seconds-want[i].age.Seconds()) > 5 {
			t.Errorf("partition %d: %+v, want committed %d, %d records, %.0f s behind", i, p, want[i].committed, want[i].records, want[i].age.Seconds())
		}
	}
	if g.DrainSeconds != -1 {
		t.Fatalf("drain %v before the group moved, want unknown (-1)", g.DrainSeconds)
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(fmt.Sprintf(`
# HELP sluice_consumer_group_lag_records Records of the topic the group has not committed, per partition (0 or more).
# TYPE sluice_consumer_group_lag_records gauge
sluice_consumer_group_lag_records{group=%[1]q,partition="0",topic=%[2]q} 0
sluice_consumer_group_lag_records{group=%[1]q,partition="1",topic=%[2]q} 6
sluice_consumer_group_lag_records{group=%[1]q,partition="2",topic=%[2]q} 10
# HELP sluice_consumer_group_members Members of the group (0 when none runs).
# TYPE sluice_consumer_group_members gauge
sluice_consumer_group_members{group=%[1]q} 0
# HELP sluice_consumer_group_uncommitted_partitions Partitions the group has committed nothing on: they lag by all they retain.
# TYPE sluice_consumer_group_uncommitted_partitions gauge
sluice_consumer_group_uncommitted_partitions{group=%[1]q,topic=%[2]q} 1
`, group, cfg.RawTopic)), "sluice_consumer_group_lag_records", "sluice_consumer_group_members", "sluice_consumer_group_uncommitted_partitions"); err != nil {
		t.Fatal(err)
	}
	if n := testutil.CollectAndCount(m, "sluice_consumer_group_drain_seconds"); n != 0 {
		t.Fatalf("a drain estimate before the group moved: %d series", n)
	}
	if v := testutil.ToFloat64(gaugeOf(t, reg, "sluice_consumer_group_state", "Empty")); v != 1 {
		t.Fatalf("state Empty = %v", v)
	}

	// The group moves 8 records; the estimate is the lag left over that rate.
	time.Sleep(1100 * time.Millisecond)
	commit(map[int32]int64{1: 8, 2: 4})
	if err := m.Measure(ctx, cl, watched); err != nil {
		t.Fatal(err)
	}
	g = m.Lags()[0]
	if g.Records != 8 || g.Uncommitted != 0 || g.DrainSeconds <= 0 || g.DrainSeconds > 5 {
		t.Fatalf("after the group moved 8 records: %+v, want 8 behind and a drain of about one second", g)
	}
	// The history holds both measures, oldest first: what the status page charts.
	h := m.History()
	if len(h) != 1 || len(h[0].Samples) != 2 || h[0].Samples[0].Records != 16 || h[0].Samples[1].Records != 8 ||
		!h[0].Samples[0].At.Before(h[0].Samples[1].At) || h[0].Samples[0].Seconds < h[0].Samples[1].Seconds {
		t.Fatalf("history %+v, want 16 then 8 records behind", h)
	}
}

// gaugeOf returns the gathered sample of name with the state label, as a collector for ToFloat64.
func gaugeOf(t *testing.T, reg *prometheus.Registry, name, state string) prometheus.Collector {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.Metric {
			for _, l := range m.Label {
				if l.GetName() == "state" && l.GetValue() == state {
					g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "x"})
					g.Set(m.GetGauge().GetValue())
					return g
				}
			}
		}
	}
	t.Fatalf("no %s{state=%q}", name, state)
	return nil
}
