package events

import (
	"context"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	sluicev1 "github.com/sluicedata/sluice/proto/sluice/v1"
)

// Record encodes ev for topic, keyed by job id so that one job's events keep their order.
func Record(topic string, ev *sluicev1.JobEvent) (*kgo.Record, error) {
	if ev.At == nil {
		ev.At = timestamppb.New(time.Now())
	}
	value, err := proto.Marshal(ev)
	if err != nil {
		return nil, fmt.Errorf("encode job event: %w", err)
	}
	return &kgo.Record{Topic: topic, Key: []byte(ev.JobId), Value: value}, nil
}

// Decode reads an event from a record of the events topic.
func Decode(r *kgo.Record) (*sluicev1.JobEvent, error) {
	var ev sluicev1.JobEvent
	if err := proto.Unmarshal(r.Value, &ev); err != nil {
		return nil, fmt.Errorf("decode job event at %s/%d@%d: %w", r.Topic, r.Partition, r.Offset, err)
	}
	return &ev, nil
}

// Publish writes events synchronously; it returns once the broker acknowledged all of them.
func Publish(ctx context.Context, cl *kgo.Client, topic string, evs ...*sluicev1.JobEvent) error {
	recs := make([]*kgo.Record, 0, len(evs))
	for _, ev := range evs {
		r, err := Record(topic, ev)
		if err != nil {
			return err
		}
		recs = append(recs, r)
	}
	if len(recs) == 0 {
		return nil
	}
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		return fmt.Errorf("publish %d job events: %w", len(recs), err)
	}
	return nil
}
