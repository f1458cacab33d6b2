package kafka

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
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
	security, err := cfg.securityOpts()
	if err != nil {
		return nil, err
	}
	base = append(base, security...)
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

// RecordBytes is about what a record takes in a produce batch: its key, value and headers with
// their framing. Compare it with a topic's max.message.bytes before producing.
func RecordBytes(r *kgo.Record) int {
	n := len(r.Key) + len(r.Value) + 64
	for _, h := range r.Headers {
		n += len(h.Key) + len(h.Value) + 8
	}
	return n
}

// CommitSync commits offsets for the client's group and returns the first error, of the request or
// of any partition: franz-go reports partition errors only to the callback.
func CommitSync(ctx context.Context, cl *kgo.Client, offsets map[string]map[int32]kgo.EpochOffset) error {
	var failed error
	cl.CommitOffsetsSync(ctx, offsets, func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, resp *kmsg.OffsetCommitResponse, err error) {
		if err != nil {
			failed = err
			return
		}
		for _, t := range resp.Topics {
			for _, p := range t.Partitions {
				if perr := kerr.ErrorForCode(p.ErrorCode); perr != nil && failed == nil {
					failed = fmt.Errorf("commit %s/%d: %w", t.Topic, p.Partition, perr)
				}
			}
		}
	})
	return failed
}

// DefaultMaxMessageBytes is the largest record a topic takes unless it says otherwise: Kafka's
// default max.message.bytes.
const DefaultMaxMessageBytes = 1048588
