package main

import (
	"context"
	"errors"
	"log/slog"
	"slices"

	"github.com/twmb/franz-go/pkg/kgo"
)

// poller reads the raw topic for the loader: it polls, pauses and resumes partitions, and keeps
// the state of the partitions this member owns, which the rebalance callbacks change. parts is
// guarded by the Loader's mu (the committer shares it); paused is only the loop's.
type poller struct {
	cl    *kgo.Client
	topic string
	// denied takes the fetch and group errors: a refusal of this member's rights fails readiness.
	denied func(error) bool
	log    *slog.Logger
	parts  map[int32]*partition
	paused []int32
}

// partition is what the loader knows of one raw-topic partition it owns. A new ownership (the
// partition assigned again) is a new partition: what was polled or planned in the last one is
// told apart by its pointer.
type partition struct {
	epoch     int32
	next      int64 // one past the highest offset polled in this ownership
	committed int64
	// start is where this ownership began reading: what a commit with no committed offset before
	// it commits.
	start int64
	// blocks are the partition's blocks at or past the committed offset, planned or inserted, and
	// recorded is the metadata that the last commit recorded them with.
	blocks   []*block
	recorded string
	// unread is a partition whose committed offset and blocks could not be read when it was
	// assigned: nothing of it is inserted or committed until they are.
	unread bool
}

func newPoller(topic string) *poller {
	return &poller{topic: topic, parts: map[int32]*partition{}, log: slog.New(slog.DiscardHandler)}
}

// poll polls up to room records until it has some or the context that until makes ends (a flight
// landed, a table is due, or ctx ended). It returns nothing once the client is closed.
func (p *poller) poll(ctx context.Context, room int, until func(context.Context) (context.Context, func())) []*kgo.Record {
	for {
		// A poll that returned nothing to work on (no fetch, or only franz-go's injected error
		// fetch while the group rejoins) still holds off rebalances until AllowRebalance.
		// Polling again without a deadline would wait for records that only the rebalance it
		// blocks can bring: after a broker restart the whole group would wait on this member.
		p.cl.AllowRebalance()
		pollCtx, done := until(ctx)
		fetches := p.cl.PollRecords(pollCtx, room)
		woken := pollCtx.Err() != nil
		done()
		if fetches.IsClientClosed() {
			return nil
		}
		fetches.EachError(func(topic string, partition int32, err error) {
			if !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
				if p.denied != nil {
					p.denied(err)
				}
				p.log.Warn("fetch failed", "topic", topic, "partition", partition, "error", err)
			}
		})
		recs := fetches.Records()
		if len(recs) > 0 || woken {
			return recs
		}
	}
}

// allowRebalance lets the group rebalance that a poll holds off.
func (p *poller) allowRebalance() { p.cl.AllowRebalance() }

// others returns the owned partitions but need. The caller holds the Loader's mu.
func (p *poller) others(need []int32) []int32 {
	var out []int32
	for n := range p.parts {
		if !slices.Contains(need, n) {
			out = append(out, n)
		}
	}
	return out
}

// pause pauses fetching partitions (after resuming those paused before); resume undoes it.
func (p *poller) pause(partitions []int32) {
	p.resume()
	if len(partitions) > 0 {
		p.cl.PauseFetchPartitions(map[string][]int32{p.topic: partitions})
		p.paused = partitions
	}
}

func (p *poller) resume() {
	if len(p.paused) > 0 {
		p.cl.ResumeFetchPartitions(map[string][]int32{p.topic: p.paused})
		p.paused = nil
	}
}

// take returns the ownership that r was polled in, and counts r read. The caller holds the
// Loader's mu.
func (p *poller) take(r *kgo.Record) *partition {
	s := p.parts[r.Partition]
	if s == nil {
		s = &partition{committed: -1, start: r.Offset}
		p.parts[r.Partition] = s
	}
	s.next, s.epoch = r.Offset+1, r.LeaderEpoch
	if s.start < 0 {
		s.start = r.Offset
	}
	return s
}

// owns reports whether it was polled in this member's current ownership of its partition: an item
// of a partition lost (or revoked before its flight landed) is someone else's to count and commit.
// The caller holds the Loader's mu.
func (p *poller) owns(it *item) bool {
	s := p.parts[it.partition]
	return s != nil && s == it.owner
}

// drop ends this member's ownership of partitions, and returns them as a set. The caller holds the
// Loader's mu.
func (p *poller) drop(partitions []int32) map[int32]bool {
	gone := make(map[int32]bool, len(partitions))
	for _, n := range partitions {
		gone[n] = true
		delete(p.parts, n)
	}
	return gone
}
