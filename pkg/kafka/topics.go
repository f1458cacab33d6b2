package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"

	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// TopicReport says what CheckTopics found and EnsureTopics did.
type TopicReport struct {
	// Created are the topics that were missing and now exist, with the partitions they got.
	Created []TopicSpec
	// Existing are the topics that were there already, with the partitions they have.
	Existing []TopicSpec
	// Fewer names existing topics with fewer partitions than configured: a consumer group on such a
	// topic cannot use more members than it has partitions.
	Fewer []TopicSpec
	// Missing are the topics that do not exist (CheckTopics only; EnsureTopics creates them).
	Missing []TopicSpec
}

// CheckTopics reports which of the topics in want exist, with how many partitions, and which are
// missing. It changes nothing. It asks the broker every time: franz-go's admin helpers answer from
// a metadata cache that does not yet know a topic created a moment ago.
func CheckTopics(ctx context.Context, cl *kgo.Client, want []TopicSpec) (TopicReport, error) {
	var report TopicReport
	req := kmsg.NewPtrMetadataRequest()
	for _, t := range want {
		rt := kmsg.NewMetadataRequestTopic()
		rt.Topic = kmsg.StringPtr(t.Name)
		req.Topics = append(req.Topics, rt)
	}
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		return report, fmt.Errorf("request topic metadata: %w", err)
	}
	partitions := make(map[string]int32, len(resp.Topics))
	for _, t := range resp.Topics {
		if t.Topic == nil {
			continue
		}
		err := kerr.ErrorForCode(t.ErrorCode)
		switch {
		case errors.Is(err, kerr.UnknownTopicOrPartition):
		case err != nil:
			return report, fmt.Errorf("describe topic %s: %w", *t.Topic, err)
		default:
			partitions[*t.Topic] = int32(len(t.Partitions))
		}
	}
	for _, t := range want {
		if n, ok := partitions[t.Name]; ok {
			report.addExisting(t, n)
		} else {
			report.Missing = append(report.Missing, t)
		}
	}
	return report, nil
}

// EnsureTopics creates the topics in want that do not exist, with their partition counts and the
// given replication factor (-1: the broker's default). It is idempotent and safe to run from several
// processes at once; it never changes an existing topic.
func EnsureTopics(ctx context.Context, cl *kgo.Client, replication int16, want []TopicSpec) (TopicReport, error) {
	report, err := CheckTopics(ctx, cl, want)
	if err != nil {
		return report, err
	}
	missing := report.Missing
	report.Missing = nil
	adm := kadm.NewClient(cl)
	var raced []TopicSpec
	for _, t := range missing {
		resp, err := adm.CreateTopic(ctx, t.Partitions, replication, t.Configs, t.Name)
		if err == nil {
			err = resp.Err
		}
		switch {
		case err == nil:
			report.Created = append(report.Created, t)
		case errors.Is(err, kerr.TopicAlreadyExists):
			raced = append(raced, t) // another process created it between our list and create
		default:
			return report, fmt.Errorf("create topic %s: %w", t.Name, err)
		}
	}
	if len(raced)+len(report.Created) == 0 {
		return report, nil
	}
	// The controller knows a topic just created, here or by another process, a moment before the
	// broker serves its metadata: ask again for a few seconds, so that every topic can be used once
	// this returns.
	wait := append(slices.Clone(report.Created), raced...)
	for attempt := 0; ; attempt++ {
		again, err := CheckTopics(ctx, cl, wait)
		if err != nil {
			return report, err
		}
		if len(again.Missing) == 0 {
			// Existing follows wait, and the raced topics come after the created ones.
			for i := len(report.Created); i < len(wait); i++ {
				report.addExisting(wait[i], again.Existing[i].Partitions)
			}
			return report, nil
		}
		if attempt == 50 {
			return report, fmt.Errorf("topic %s was created but its metadata did not appear", again.Missing[0].Name)
		}
		select {
		case <-ctx.Done():
			return report, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (r *TopicReport) addExisting(want TopicSpec, partitions int32) {
	have := TopicSpec{Name: want.Name, Partitions: partitions}
	r.Existing = append(r.Existing, have)
	if partitions < want.Partitions {
		r.Fewer = append(r.Fewer, have)
	}
}

// MaxMessageBytes returns the smallest max.message.bytes of topics: the largest record every one of
// them takes. Where a topic cannot be described it assumes Kafka's default, and says why.
func MaxMessageBytes(ctx context.Context, cl *kgo.Client, topics ...string) (int, error) {
	limit := DefaultMaxMessageBytes
	rcs, err := kadm.NewClient(cl).DescribeTopicConfigs(ctx, topics...)
	if err != nil {
		return limit, fmt.Errorf("describe topic configs: %w", err)
	}
	seen := 0
	for _, rc := range rcs {
		if rc.Err != nil {
			return limit, fmt.Errorf("describe %s: %w", rc.Name, rc.Err)
		}
		for _, c := range rc.Configs {
			if c.Key != "max.message.bytes" || c.Value == nil {
				continue
			}
			if n, err := strconv.Atoi(*c.Value); err == nil && n > 0 {
				if seen == 0 || n < limit {
					limit = n
				}
				seen++
			}
		}
	}
	return limit, nil
}

// ProducerBatchLimit is the largest produce batch for topic: its max.message.bytes when the topic
// says less than franz-go's default batch limit, else that default. A batch larger than the topic
// takes is refused whole, healthy records with the large one. It asks the brokers with a client of
// its own, before the service's client exists; a topic that does not exist yet gets the default.
func ProducerBatchLimit(ctx context.Context, cfg Config, topic string) int {
	const franzDefault = 1_000_012
	cl, err := NewClient(cfg, "sluice-limits", slog.New(slog.DiscardHandler), nil)
	if err != nil {
		return franzDefault
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	limit, err := MaxMessageBytes(ctx, cl, topic)
	if err != nil {
		return franzDefault
	}
	return min(limit, franzDefault)
}
