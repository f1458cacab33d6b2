package kafka

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// ReadToEnd reads topic from its start to where it ends now, calling fn for every record; cl must
// consume topic from the start (kgo.ConsumeTopics, kgo.ConsumeResetOffset at the start). It returns
// when every partition is read to its end, fn returns false, or ctx ends.
func ReadToEnd(ctx context.Context, cl *kgo.Client, topic string, fn func(*kgo.Record) bool) error {
	remaining, err := ToRead(ctx, cl, topic)
	if err != nil {
		return err
	}
	for len(remaining) > 0 {
		fetches := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if fetches.IsClientClosed() {
			return kgo.ErrClientClosed
		}
		var ferr error
		fetches.EachError(func(t string, p int32, err error) { ferr = fmt.Errorf("read %s/%d: %w", t, p, err) })
		if ferr != nil {
			return ferr
		}
		stop := false
		fetches.EachRecord(func(r *kgo.Record) {
			if stop {
				return
			}
			if end, ok := remaining[r.Partition]; ok && r.Offset+1 >= end {
				delete(remaining, r.Partition)
			}
			stop = !fn(r)
		})
		if stop {
			return nil
		}
	}
	return nil
}

// ToRead returns, per partition of topic that holds records, the offset where it ends now: what a
// reader from the start must reach to have read everything that is there. A partition that retention
// emptied has nothing to read.
func ToRead(ctx context.Context, cl *kgo.Client, topic string) (map[int32]int64, error) {
	starts, ends, err := Offsets(ctx, cl, topic)
	if err != nil {
		return nil, err
	}
	remaining := map[int32]int64{}
	ends.Each(func(o kadm.ListedOffset) {
		if s, ok := starts.Lookup(topic, o.Partition); o.Offset > 0 && (!ok || s.Offset < o.Offset) {
			remaining[o.Partition] = o.Offset
		}
	})
	return remaining, nil
}

// Offsets lists the start and end offsets of topic's partitions. A topic created a moment ago is
// known to the controller before every broker serves it: Offsets asks again for a few seconds.
func Offsets(ctx context.Context, cl *kgo.Client, topic string) (starts, ends kadm.ListedOffsets, err error) {
	adm := kadm.NewClient(cl)
	for attempt := 0; ; attempt++ {
		if ends, err = adm.ListEndOffsets(ctx, topic); err == nil {
			err = ends.Error()
		}
		if err == nil {
			if starts, err = adm.ListStartOffsets(ctx, topic); err == nil {
				err = starts.Error()
			}
			if err == nil {
				return starts, ends, nil
			}
		}
		if !errors.Is(err, kerr.UnknownTopicOrPartition) || attempt == 50 {
			return nil, nil, fmt.Errorf("list offsets of %s: %w", topic, err)
		}
		select {
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}
