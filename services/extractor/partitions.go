package main

import (
	"context"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// owner is the work of one owned partition of the tasks topic: its tasks run under its context,
// and done closes once they all returned, so that a rebalance waits on a channel, never in a loop.
type owner struct {
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// done returns a channel that closes once every task of the partition returned.
func (o *owner) done() <-chan struct{} {
	ch := make(chan struct{})
	go func() { o.wg.Wait(); close(ch) }()
	return ch
}

// owner returns the owner of r's partition, made when the partition has none.
func (x *Extractor) owner(parent context.Context, r *kgo.Record) *owner {
	x.mu.Lock()
	defer x.mu.Unlock()
	k := tp{r.Topic, r.Partition}
	o := x.owners[k]
	if o == nil {
		o = &owner{}
		o.ctx, o.cancel = context.WithCancel(parent)
		x.owners[k] = o
	}
	return o
}

// assigned reads the commits of the partitions just assigned: where they are, and which tasks past
// them earlier members started and did not finish. It runs in the group's rebalance; when the
// commits cannot be read, the starts of this member's own runs are all it counts.
func (x *Extractor) assigned(ctx context.Context, cl *kgo.Client, assigned map[string][]int32) {
	if len(assigned) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := kadm.NewClient(cl).FetchOffsets(ctx, x.cfg.Group)
	if err == nil {
		err = resp.Error()
	}
	if err != nil {
		x.log.Warn("read the commits of assigned task partitions; tasks that killed earlier members are not known", "error", err)
		return
	}
	for topic, ps := range assigned {
		for _, p := range ps {
			if o, ok := resp.Lookup(topic, p); ok && o.At >= 0 {
				x.offsets.assigned(topic, p, o.At, o.Metadata)
			}
		}
	}
}

// release takes the owners of partitions away and cancels their tasks.
func (x *Extractor) release(partitions map[string][]int32) []*owner {
	x.mu.Lock()
	defer x.mu.Unlock()
	var out []*owner
	for topic, ps := range partitions {
		for _, p := range ps {
			k := tp{topic, p}
			if o, ok := x.owners[k]; ok {
				o.cancel()
				out = append(out, o)
				delete(x.owners, k)
			}
		}
	}
	return out
}

// revoked runs in the group's rebalance: it cancels the tasks of the partitions going away, waits
// (at most the drain timeout) until they returned, and commits what is done of them. Their
// unfinished tasks go to the new owner.
func (x *Extractor) revoked(ctx context.Context, cl *kgo.Client, partitions map[string][]int32) {
	x.lag.Revoked(ctx, cl, partitions)
	waitCtx, cancel := context.WithTimeout(context.Background(), x.cfg.DrainTimeout)
	defer cancel()
wait:
	for _, o := range x.release(partitions) {
		select {
		case <-o.done():
		case <-waitCtx.Done():
			x.log.Warn("tasks of revoked partitions still running after the drain timeout; their partitions go without them")
			break wait
		}
	}
	x.commit(ctx)
	x.offsets.drop(partitions)
}

// lost runs when the session expired: nothing of those partitions may be committed any more, and
// their tasks stop.
func (x *Extractor) lost(ctx context.Context, cl *kgo.Client, partitions map[string][]int32) {
	x.log.Warn("partitions lost: the group session expired; their tasks stop and nothing of them is committed",
		"partitions", partitions)
	x.lag.Revoked(ctx, cl, partitions)
	x.offsets.drop(partitions)
	x.release(partitions)
}
