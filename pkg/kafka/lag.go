package kafka

import (
	"context"
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
type LagReporter struct {
	group, topic string
	interval     time.Duration
	lag          *prometheus.GaugeVec

	mu    sync.Mutex
	owned map[int32]bool
}

// NewLagReporter measures the lag of group on topic. Its callbacks go into the consumer's client
// options, and Collector onto the process registry, which exists only once the client does.
func NewLagReporter(group, topic string, interval time.Duration) *LagReporter {
	return &LagReporter{
		group: group, topic: topic, interval: interval, owned: map[int32]bool{},
		lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "pipeline_consumer_lag_records",
			Help: "Records not yet committed by this member's group, for the partitions this member owns.",
		}, []string{"topic", "partition"}),
	}
}

// Collector is pipeline_consumer_lag_records, to register on the process registry.
func (r *LagReporter) Collector() prometheus.Collector { return r.lag }

// Assigned is a kgo.OnPartitionsAssigned callback.
func (r *LagReporter) Assigned(_ context.Context, _ *kgo.Client, assigned map[string][]int32) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range assigned[r.topic] {
		r.owned[p] = true
	}
}

// Revoked is a kgo.OnPartitionsRevoked and OnPartitionsLost callback: another member reports those
// partitions now.
func (r *LagReporter) Revoked(_ context.Context, _ *kgo.Client, revoked map[string][]int32) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range revoked[r.topic] {
		delete(r.owned, p)
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
	for _, p := range owned {
		end, ok := ends.Lookup(r.topic, p)
		if !ok || end.Err != nil || !r.owned[p] {
			continue
		}
		from := int64(0)
		if c, ok := committed.Lookup(r.topic, p); ok && c.Err == nil && c.At >= 0 {
			from = c.At
		} else if s, ok := starts.Lookup(r.topic, p); ok && s.Err == nil {
			from = s.Offset
		}
		r.lag.WithLabelValues(r.topic, pipeline.Partition(p)).Set(float64(max(end.Offset-from, 0)))
	}
	return nil
}
