package kafka

import (
	"context"
	"log/slog"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Bootstrap creates the pipeline's missing topics when cfg.CreateTopics is set, and logs what it
// created and which existing topics have fewer partitions than configured.
func Bootstrap(ctx context.Context, cl *kgo.Client, cfg Config, log *slog.Logger) error {
	if !cfg.CreateTopics {
		return nil
	}
	report, err := EnsureTopics(ctx, cl, int16(cfg.ReplicationFactor), cfg.Topics())
	if err != nil {
		return err
	}
	for _, t := range report.Created {
		log.Info("created topic", "topic", t.Name, "partitions", t.Partitions)
	}
	for _, t := range report.Fewer {
		log.Warn("topic has fewer partitions than configured; group members beyond that stay idle",
			"topic", t.Name, "partitions", t.Partitions)
	}
	return nil
}
