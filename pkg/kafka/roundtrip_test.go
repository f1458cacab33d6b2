package kafka_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicedata/sluice/pkg/kafka"
	"github.com/sluicedata/sluice/pkg/stacktest"
)

// TestRoundTripCommitsOffset produces records to the real broker, consumes them in a group without
// autocommit, commits after processing, and checks the committed offsets with the broker and with a
// second consumer of the same group, which must see only records produced after the commit.
func TestRoundTripCommitsOffset(t *testing.T) {
	cfg := stacktest.Kafka(t)
	cfg.RawPartitions = 1
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	group := stacktest.Name(t, "group")

	producer, err := kafka.NewClient(cfg, "test-producer", stacktest.Logger(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer producer.Close()
	if err := kafka.Bootstrap(ctx, producer, cfg, stacktest.Logger(t)); err != nil {
		t.Fatal(err)
	}
	produce := func(from, to int) {
		t.Helper()
		var recs []*kgo.Record
		for i := from; i < to; i++ {
			recs = append(recs, &kgo.Record{Topic: cfg.RawTopic, Key: []byte(fmt.Sprint(i)), Value: []byte(fmt.Sprintf(`{"id":%d}`, i))})
		}
		if err := producer.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			t.Fatalf("produce: %v", err)
		}
	}
	produce(0, 100)

	consume := func(want int) []string {
		t.Helper()
		cl, err := kafka.NewClient(cfg, "test-consumer", stacktest.Logger(t), nil,
			kgo.ConsumerGroup(group), kgo.ConsumeTopics(cfg.RawTopic), kgo.DisableAutoCommit(),
			kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		var got []string
		for len(got) < want {
			fetches := cl.PollFetches(ctx)
			if err := fetches.Err0(); err != nil {
				t.Fatalf("poll after %d of %d records: %v", len(got), want, err)
			}
			fetches.EachRecord(func(r *kgo.Record) { got = append(got, string(r.Value)) })
		}
		if err := cl.CommitUncommittedOffsets(ctx); err != nil {
			t.Fatalf("commit: %v", err)
		}
		return got
	}

	first := consume(100)
	if len(first) != 100 || first[0] != `{"id":0}` || first[99] != `{"id":99}` {
		t.Fatalf("first consumer got %d records, first %q last %q", len(first), first[0], first[len(first)-1])
	}

	adm := kadm.NewClient(producer)
	offsets, err := adm.FetchOffsets(ctx, group)
	if err != nil {
		t.Fatal(err)
	}
	if o, ok := offsets.Lookup(cfg.RawTopic, 0); !ok || o.At != 100 {
		t.Fatalf("committed offset = %+v (found %v), want 100", o, ok)
	}

	produce(100, 110)
	second := consume(10)
	if len(second) != 10 || second[0] != `{"id":100}` {
		t.Fatalf("second consumer of the group got %d records starting with %q; want the 10 after the commit", len(second), second[0])
	}
}
