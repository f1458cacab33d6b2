package kafka

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/plugin/kprom"
	"github.com/twmb/franz-go/plugin/kslog"
)

// NewClient returns a franz-go client for the configured brokers. It logs through log and, when reg
// is not nil, registers franz-go's client metrics (kafka_…) on it; a process makes one such client per
// registry. opts add to the base options and override them: consumer groups, producer settings.
func NewClient(cfg Config, clientID string, log *slog.Logger, reg prometheus.Registerer, opts ...kgo.Opt) (*kgo.Client, error) {
	if cfg.ClientID != "" {
		clientID = cfg.ClientID
	}
	base := []kgo.Opt{
		kgo.SeedBrokers(cfg.Brokers...),
		kgo.ClientID(clientID),
		kgo.DialTimeout(cfg.DialTimeout),
		kgo.RequestTimeoutOverhead(cfg.RequestTimeout),
		kgo.WithLogger(kslog.New(log.With(slog.String("component", "kafka")))),
	}
	if cfg.SessionTimeout > 0 {
		base = append(base, kgo.SessionTimeout(cfg.SessionTimeout))
	}
	if cfg.RebalanceTimeout > 0 {
		base = append(base, kgo.RebalanceTimeout(cfg.RebalanceTimeout))
	}
	if reg != nil {
		base = append(base, kgo.WithHooks(kprom.NewMetrics("kafka",
			kprom.Registerer(reg),
			kprom.FetchAndProduceDetail(kprom.ByTopic, kprom.Batches, kprom.Records, kprom.UncompressedBytes),
		)))
	}
	cl, err := kgo.NewClient(append(base, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("create kafka client: %w", err)
	}
	return cl, nil
}

// Ping asks a broker for its API versions: the readiness check of every service.
func Ping(ctx context.Context, cl *kgo.Client) error {
	if err := cl.Ping(ctx); err != nil {
		return fmt.Errorf("reach kafka: %w", err)
	}
	return nil
}
