package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sluicedata/sluice/pkg/pipeline"
)

// Watched is a consumer group and the topic it consumes.
type Watched struct {
	Group, Topic string
}

// GroupStates are the states a group's state gauge knows.
var GroupStates = []string{"Stable", "PreparingRebalance", "CompletingRebalance", "Empty", "Dead", "Unknown"}

// PartitionLag is one partition's lag: records behind the end, and how old the oldest of them is.
type PartitionLag struct {
	Partition int32 `json:"partition"`
	// Committed is the group's committed offset; -1 when the group committed none on it.
	Committed int64 `json:"committed"`
	End       int64 `json:"end"`
	Records   int64 `json:"lag_records"`
	// Seconds is the age of the record at the committed offset (now minus its timestamp), 0 when
	// caught up.
	Seconds float64 `json:"lag_seconds"`
}

// GroupLag is a group's lag on its topic, from outside the group: it is measured whether the group
// has members or not.
type GroupLag struct {
	Group      string         `json:"group"`
	Topic      string         `json:"topic"`
	State      string         `json:"state"`
	Members    int            `json:"members"`
	Partitions []PartitionLag `json:"partitions"`
	// Records and Seconds are the sum of the partitions' lag and the oldest partition's age.
	Records int64   `json:"lag_records"`
	Seconds float64 `json:"lag_seconds"`
	// Uncommitted counts the partitions the group has committed nothing on (they lag by what they
	// retain).
	Uncommitted int `json:"uncommitted_partitions"`
	// DrainSeconds is Records over the rate the group committed at recently; -1 when it did not
	// move (unknown), 0 when caught up.
	DrainSeconds float64   `json:"drain_seconds"`
	MeasuredAt   time.Time `json:"measured_at"`
}

// MeasureGroup asks the brokers for w's lag: the group's state and members, its committed offsets, the
// topic's end offsets, and the timestamp of the record at each lagging partition's committed offset.
func MeasureGroup(ctx context.Context, cl *kgo.Client, w Watched, now time.Time) (GroupLag, error) {
	adm := kadm.NewClient(cl)
	g := GroupLag{Group: w.Group, Topic: w.Topic, State: "Unknown", MeasuredAt: now}
	described, err := adm.DescribeGroups(ctx, w.Group)
	if err != nil {
		return g, fmt.Errorf("describe group %s: %w", w.Group, err)
	}
	if d, ok := described[w.Group]; ok && d.Err == nil {
		g.Members = len(d.Members)
		if d.State != "" {
			g.State = d.State
		}
	}
	committed, err := adm.FetchOffsets(ctx, w.Group)
	if err != nil && !errors.Is(err, kerr.GroupIDNotFound) {
		return g, fmt.Errorf("fetch the offsets of %s: %w", w.Group, err)
	}
	ends, err := adm.ListEndOffsets(ctx, w.Topic)
	if err != nil {
		return g, fmt.Errorf("list the end offsets of %s: %w", w.Topic, err)
	}
	starts, err := adm.ListStartOffsets(ctx, w.Topic)
	if err != nil {
		return g, fmt.Errorf("list the start offsets of %s: %w", w.Topic, err)
	}
	from := map[int32]int64{}
	ends.Each(func(o kadm.ListedOffset) {
		if o.Topic != w.Topic || o.Err != nil {
			return
		}
		p := PartitionLag{Partition: o.Partition, Committed: -1, End: o.Offset}
		start := int64(0)
		if s, ok := starts.Lookup(w.Topic, o.Partition); ok && s.Err == nil {
			start = s.Offset
		}
		at := start
		if c, ok := committed.Lookup(w.Topic, o.Partition); ok && c.Err == nil && c.At >= 0 {
			p.Committed, at = c.At, max(c.At, start)
		} else {
			g.Uncommitted++
		}
		p.Records = max(o.Offset-at, 0)
		if p.Records > 0 {
			from[o.Partition] = at
		}
		g.Partitions = append(g.Partitions, p)
	})
	sort.Slice(g.Partitions, func(i, j int) bool { return g.Partitions[i].Partition < g.Partitions[j].Partition })
	stamps, err := firstTimestamps(ctx, cl, w.Topic, from)
	if err != nil {
		return g, err
	}
	for i := range g.Partitions {
		p := &g.Partitions[i]
		if ts, ok := stamps[p.Partition]; ok && p.Records > 0 {
			p.Seconds = math.Max(now.Sub(ts).Seconds(), 0)
		}
		g.Records += p.Records
		g.Seconds = math.Max(g.Seconds, p.Seconds)
	}
	g.DrainSeconds = -1
	if g.Records == 0 {
		g.DrainSeconds = 0
	}
	return g, nil
}

// firstTimestamps fetches, from each partition's leader, the record at the given offset and returns
// its timestamp.
func firstTimestamps(ctx context.Context, cl *kgo.Client, topic string, offsets map[int32]int64) (map[int32]time.Time, error) {
	out := map[int32]time.Time{}
	if len(offsets) == 0 {
		return out, nil
	}
	meta, err := kadm.NewClient(cl).Metadata(ctx, topic)
	if err != nil {
		return nil, fmt.Errorf("metadata of %s: %w", topic, err)
	}
	td, ok := meta.Topics[topic]
	if !ok || td.Err != nil {
		return nil, fmt.Errorf("metadata of %s: %v", topic, td.Err)
	}
	byLeader := map[int32][]int32{}
	for p := range offsets {
		if pd, ok := td.Partitions[p]; ok && pd.Err == nil {
			byLeader[pd.Leader] = append(byLeader[pd.Leader], p)
		}
	}
	for leader, parts := range byLeader {
		req := kmsg.NewPtrFetchRequest()
		req.ReplicaID, req.MaxWaitMillis, req.MinBytes, req.MaxBytes = -1, 0, 1, 4<<20
		rt := kmsg.NewFetchRequestTopic()
		rt.Topic, rt.TopicID = topic, td.ID
		for _, p := range parts {
			rp := kmsg.NewFetchRequestTopicPartition()
			rp.Partition, rp.FetchOffset, rp.PartitionMaxBytes, rp.CurrentLeaderEpoch, rp.LogStartOffset = p, offsets[p], 256<<10, -1, -1
			rt.Partitions = append(rt.Partitions, rp)
		}
		req.Topics = append(req.Topics, rt)
		resp, err := req.RequestWith(ctx, cl.Broker(int(leader)))
		if err != nil {
			return nil, fmt.Errorf("fetch the oldest lagging records of %s: %w", topic, err)
		}
		for _, t := range resp.Topics {
			for i := range t.Partitions {
				rp := &t.Partitions[i]
				fp, _ := kgo.ProcessFetchPartition(kgo.ProcessFetchPartitionOpts{Offset: offsets[rp.Partition], Topic: topic, Partition: rp.Partition},
					rp, kgo.DefaultDecompressor(), nil)
				if fp.Err == nil && len(fp.Records) > 0 {
					out[rp.Partition] = fp.Records[0].Timestamp
				}
			}
		}
	}
	return out, nil
}

// GroupMonitor exports the lag of sluice's consumer groups, measured from outside them every
// interval: it works when a group has no member at all (all crashed, or scaled to zero).
type GroupMonitor struct {
	watched  []Watched
	interval time.Duration
	now      func() time.Time

	lagRecords, lagSeconds, drain, members, state, uncommitted *prometheus.GaugeVec

	mu      sync.Mutex
	last    map[Watched]GroupLag
	history map[Watched][]sample // committed offsets summed, over the last few minutes
	trail   map[Watched][]LagPoint
}

// LagPoint is one measure of a group's lag: the sum over its partitions and the oldest's age.
type LagPoint struct {
	At      time.Time `json:"at"`
	Records int64     `json:"records"`
	Seconds float64   `json:"seconds"`
}

// LagHistory is a group's lag over the last TrailWindow, one point per measure, oldest first.
type LagHistory struct {
	Group   string     `json:"group"`
	Topic   string     `json:"topic"`
	Samples []LagPoint `json:"samples"`
}

// TrailWindow is how far back History goes: what a status page charts.
const TrailWindow = 30 * time.Minute

type sample struct {
	at        time.Time
	committed int64
}

// drainWindow is how far back the consume rate of the drain estimate looks.
const drainWindow = 2 * time.Minute

// NewGroupMonitor watches the groups every interval.
func NewGroupMonitor(watched []Watched, interval time.Duration) *GroupMonitor {
	gv := func(name, help string, labels ...string) *prometheus.GaugeVec {
		return prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, labels)
	}
	return &GroupMonitor{
		watched: watched, interval: interval, now: time.Now,
		lagRecords: gv("sluice_consumer_group_lag_records", "Records of the topic the group has not committed, per partition (0 or more).", "group", "topic", "partition"),
		lagSeconds: gv("sluice_consumer_group_lag_seconds", "Age of the oldest record the group has not committed, per partition: now minus its timestamp; 0 when caught up.", "group", "topic", "partition"),
		drain:      gv("sluice_consumer_group_drain_seconds", "The group's lag over the rate it committed at in the last two minutes; absent while it did not move.", "group", "topic"),
		members:    gv("sluice_consumer_group_members", "Members of the group (0 when none runs).", "group"),
		state:      gv("sluice_consumer_group_state", "1 for the group's state (Stable, PreparingRebalance, CompletingRebalance, Empty, Dead, Unknown), 0 for the others.", "group", "state"),
		uncommitted: gv("sluice_consumer_group_uncommitted_partitions",
			"Partitions the group has committed nothing on: they lag by all they retain.", "group", "topic"),
		last: map[Watched]GroupLag{}, history: map[Watched][]sample{}, trail: map[Watched][]LagPoint{},
	}
}

// Describe and Collect make the monitor a prometheus.Collector.
func (m *GroupMonitor) Describe(ch chan<- *prometheus.Desc) {
	for _, g := range m.gauges() {
		g.Describe(ch)
	}
}

func (m *GroupMonitor) Collect(ch chan<- prometheus.Metric) {
	for _, g := range m.gauges() {
		g.Collect(ch)
	}
}

func (m *GroupMonitor) gauges() []*prometheus.GaugeVec {
	return []*prometheus.GaugeVec{m.lagRecords, m.lagSeconds, m.drain, m.members, m.state, m.uncommitted}
}

// Lags returns the last measure of every group, in the order they are watched.
func (m *GroupMonitor) Lags() []GroupLag {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]GroupLag, 0, len(m.watched))
	for _, w := range m.watched {
		if g, ok := m.last[w]; ok {
			out = append(out, g)
		}
	}
	return out
}

// History returns every group's lag over the last TrailWindow, in the order they are watched.
func (m *GroupMonitor) History() []LagHistory {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]LagHistory, 0, len(m.watched))
	for _, w := range m.watched {
		out = append(out, LagHistory{Group: w.Group, Topic: w.Topic, Samples: append([]LagPoint{}, m.trail[w]...)})
	}
	return out
}

// Run measures every interval until ctx ends.
func (m *GroupMonitor) Run(ctx context.Context, cl *kgo.Client, log *slog.Logger) error {
	t := time.NewTicker(m.interval)
	defer t.Stop()
	for {
		for _, w := range m.watched {
			if err := m.Measure(ctx, cl, w); err != nil && ctx.Err() == nil {
				log.Warn("measure a consumer group's lag", "group", w.Group, "topic", w.Topic, "error", err)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Measure measures one group and updates its metrics.
func (m *GroupMonitor) Measure(ctx context.Context, cl *kgo.Client, w Watched) error {
	g, err := MeasureGroup(ctx, cl, w, m.now())
	if err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	var committed int64
	for _, p := range g.Partitions {
		if p.Committed >= 0 {
			committed += p.Committed
		}
	}
	h := append(m.history[w], sample{at: g.MeasuredAt, committed: committed})
	for len(h) > 1 && g.MeasuredAt.Sub(h[0].at) > drainWindow {
		h = h[1:]
	}
	m.history[w] = h
	if g.Records > 0 && len(h) > 1 {
		if span, moved := h[len(h)-1].at.Sub(h[0].at).Seconds(), h[len(h)-1].committed-h[0].committed; span > 0 && moved > 0 {
			g.DrainSeconds = float64(g.Records) / (float64(moved) / span)
		}
	}
	m.last[w] = g
	t := append(m.trail[w], LagPoint{At: g.MeasuredAt, Records: g.Records, Seconds: g.Seconds})
	for len(t) > 1 && g.MeasuredAt.Sub(t[0].At) > TrailWindow {
		t = t[1:]
	}
	m.trail[w] = t

	for _, p := range g.Partitions {
		part := pipeline.Partition(p.Partition)
		m.lagRecords.WithLabelValues(w.Group, w.Topic, part).Set(float64(p.Records))
		m.lagSeconds.WithLabelValues(w.Group, w.Topic, part).Set(p.Seconds)
	}
	if g.DrainSeconds >= 0 {
		m.drain.WithLabelValues(w.Group, w.Topic).Set(g.DrainSeconds)
	} else {
		m.drain.DeleteLabelValues(w.Group, w.Topic)
	}
	m.members.WithLabelValues(w.Group).Set(float64(g.Members))
	for _, s := range GroupStates {
		v := 0.0
		if strings.EqualFold(s, g.State) {
			v = 1
		}
		m.state.WithLabelValues(w.Group, s).Set(v)
	}
	m.uncommitted.WithLabelValues(w.Group, w.Topic).Set(float64(g.Uncommitted))
	return nil
}
