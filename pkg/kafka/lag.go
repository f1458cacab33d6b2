package kafka

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicedata/sluice/pkg/pipeline"
)

// LagReporter exports the consumer lag of the partitions this group member owns, so that summing
// over the members of a group counts each partition once. Lag is the end offset minus the committed
// offset, clamped at 0; a partition without a commit lags by everything it retains.
//
// It also judges progress: a partition that lags while its committed offset does not move, and the
// member reports no progress of its own, for the stall timeout is stalled; Ready then fails with
// what the member is doing, and pipeline_stalled_partitions counts it.
type LagReporter struct {
	group, topic string
	interval     time.Duration
	lag          *prometheus.GaugeVec
	stalledGauge *prometheus.GaugeVec
	stallAfter   time.Duration
	log          *slog.Logger
	now          func() time.Time

	mu    sync.Mutex
	owned map[int32]bool
	// moved is, per owned partition, its last committed offset and when it last moved.
	moved map[int32]*movement
	// progressed is the last time the member reported progress of its own.
	progressed time.Time
	doing      string
	stalled    []int32 // partitions stalled at the last measure, with their lag
	stalledLag int64
}

type movement struct {
	committed int64
	at        time.Time
}

// NewLagReporter measures the lag of group on topic. Its callbacks go into the consumer's client
// options, and Collector onto the process registry, which exists only once the client does.
func NewLagReporter(group, topic string, interval time.Duration) *LagReporter {
	return &LagReporter{
		group: group, topic: topic, interval: interval, owned: map[int32]bool{}, moved: map[int32]*movement{},
		lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "pipeline_consumer_lag_records",
			Help: "Records not yet committed by this member's group, for the partitions this member owns.",
		}, []string{"topic", "partition"}),
		stalledGauge: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "pipeline_stalled_partitions",
			Help: "Partitions this member owns that lag while neither their commit nor the member moved for the stall timeout.",
		}, []string{"topic"}),
		now: time.Now,
	}
}

// Watch turns on the judgement of progress: a lagging partition without progress for after is
// stalled, and log hears when that starts and ends.
func (r *LagReporter) Watch(after time.Duration, log *slog.Logger) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.stallAfter, r.log = after, log
	r.stalledGauge.WithLabelValues(r.topic).Set(0)
}

// Doing says what the member is doing now, for the stall report: "polling", "inserting into users".
func (r *LagReporter) Doing(what string) {
	r.mu.Lock()
	r.doing = what
	r.mu.Unlock()
}

// Progressed says that the member finished work (rows inserted, a task done) even if no commit
// moved: a table held back by a schema error holds the commit, not the member.
func (r *LagReporter) Progressed() {
	r.mu.Lock()
	r.progressed = r.now()
	r.mu.Unlock()
}

// Ready is a readiness check: it fails while partitions are stalled, saying what the member waits
// for.
func (r *LagReporter) Ready(context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.stalled) == 0 {
		return nil
	}
	return fmt.Errorf("no progress for %s on %d partition(s) of %s with %d records of lag; the member is %s",
		r.stallAfter, len(r.stalled), r.topic, r.stalledLag, r.doingText())
}

func (r *LagReporter) doingText() string {
	if r.doing == "" {
		return "idle"
	}
	return r.doing
}

// Collector is pipeline_consumer_lag_records and pipeline_stalled_partitions, to register on the
// process registry.
func (r *LagReporter) Collector() prometheus.Collector { return collectors{r.lag, r.stalledGauge} }

type collectors []prometheus.Collector

func (cs collectors) Describe(ch chan<- *prometheus.Desc) {
	for _, c := range cs {
		c.Describe(ch)
	}
}

func (cs collectors) Collect(ch chan<- prometheus.Metric) {
	for _, c := range cs {
		c.Collect(ch)
	}
}

// Assigned is a kgo.OnPartitionsAssigned callback.
func (r *LagReporter) Assigned(_ context.Context, _ *kgo.Client, assigned map[string][]int32) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range assigned[r.topic] {
		r.owned[p] = true
		r.moved[p] = &movement{committed: -1, at: r.now()}
	}
}

// Revoked is a kgo.OnPartitionsRevoked and OnPartitionsLost callback: another member reports those
// partitions now.
func (r *LagReporter) Revoked(_ context.Context, _ *kgo.Client, revoked map[string][]int32) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range revoked[r.topic] {
		delete(r.owned, p)
		delete(r.moved, p)
		r.lag.DeleteLabelValues(r.topic, pipeline.Partition(p))
	}
}

// Run measures the lag every interval until ctx ends.
func (r *LagReporter) Run(ctx context.Context, cl *kgo.Client, log *slog.Logger) error {
	adm := kadm.NewClient(cl)
	t := time.NewTicker(r.interval)
	defer t.Stop()
	for {
		if err := r.measure(ctx, adm); err != nil && ctx.Err() == nil {
			log.Debug("measure consumer lag", "error", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func (r *LagReporter) measure(ctx context.Context, adm *kadm.Client) error {
	r.mu.Lock()
	owned := make([]int32, 0, len(r.owned))
	for p := range r.owned {
		owned = append(owned, p)
	}
	r.mu.Unlock()
	if len(owned) == 0 {
		return nil
	}
	committed, err := adm.FetchOffsets(ctx, r.group)
	if err != nil {
		return err
	}
	ends, err := adm.ListEndOffsets(ctx, r.topic)
	if err != nil {
		return err
	}
	starts, err := adm.ListStartOffsets(ctx, r.topic)
	if err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	var stalled []int32
	var stalledLag int64
	for _, p := range owned {
		end, ok := ends.Lookup(r.topic, p)
		if !ok || end.Err != nil || !r.owned[p] {
			continue
		}
		from, at := int64(0), int64(-1)
		if c, ok := committed.Lookup(r.topic, p); ok && c.Err == nil && c.At >= 0 {
			from, at = c.At, c.At
		} else if s, ok := starts.Lookup(r.topic, p); ok && s.Err == nil {
			from = s.Offset
		}
		lag := max(end.Offset-from, 0)
		r.lag.WithLabelValues(r.topic, pipeline.Partition(p)).Set(float64(lag))
		m := r.moved[p]
		if m == nil {
			m = &movement{committed: at, at: now}
			r.moved[p] = m
		}
		if at != m.committed || lag == 0 {
			m.committed, m.at = at, now
		}
		if r.stallAfter > 0 && lag > 0 && now.Sub(m.at) >= r.stallAfter && now.Sub(r.progressed) >= r.stallAfter {
			stalled = append(stalled, p)
			stalledLag += lag
		}
	}
	r.judge(stalled, stalledLag)
	return nil
}

// judge records the stalled partitions and tells the log when stalling starts and ends. The caller
// holds mu.
func (r *LagReporter) judge(stalled []int32, lag int64) {
	if r.stallAfter == 0 {
		return
	}
	switch {
	case len(stalled) > 0 && len(r.stalled) == 0:
		r.log.Warn("no progress while partitions lag", "topic", r.topic, "partitions", stalled, "lag", lag,
			"for", r.stallAfter.String(), "doing", r.doingText())
	case len(stalled) == 0 && len(r.stalled) > 0:
		r.log.Info("progress again", "topic", r.topic)
	}
	r.stalled, r.stalledLag = stalled, lag
	r.stalledGauge.WithLabelValues(r.topic).Set(float64(len(stalled)))
}
