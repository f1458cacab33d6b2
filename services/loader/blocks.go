package main

import (
	"cmp"
	"context"
	"fmt"
	"iter"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sluicedata/sluice/pkg/delivery"
	"github.com/sluicedata/sluice/pkg/kafka"
)

// A block is one insert: the records of one table (with one sink schema) in a contiguous offset
// range of one raw-topic partition, with one load time. Before a block is inserted the loader
// records it, planned, in the metadata of its partition's committed offset; once its rows are
// acknowledged (and their dead letters and events), the commit records it inserted. A member that
// takes the partition over reads the records: a planned block is formed again from exactly the
// same records with the same load time (so the server, or the table's collapsing, drops it if it
// landed), and the records of an inserted block are known to be in and are not inserted again.
type block struct {
	table       tableKey
	first, last int64
	loadedAt    int64 // Unix seconds
	inserted    bool
	// tried is a block that an insert was tried of (by this member, or, for a block read from
	// commit metadata, perhaps by the partition's last owner): part of it may be in.
	tried bool
	// token is the insert deduplication token of the block's first try, kept for a block that
	// some shards of a cluster took and others did not: the rows those refused are sent again
	// alone under it, so that a part that landed after all is dropped.
	token string
}

func (b block) covers(offset int64) bool { return b.first <= offset && offset <= b.last }

// metadataVersion prefixes the blocks in commit metadata, so that a later encoding can be told.
const metadataVersion = "sluice1"

// maxMetadata keeps commit metadata under the broker's offset.metadata.max.bytes (4096 by
// default). Inserted blocks of a table that follow one another are merged into one; past the
// bound the oldest inserted blocks are left out (their records, should they come again, are
// inserted again and collapsed by the table), and a partition whose planned blocks alone fill it
// plans no more until they are done.
const maxMetadata = 3800

// encodeBlocks writes blocks as "sluice1 p:users::100-199@1700000000 i:orders:3fa2:120-180@…",
// in offset order; table names and schema ids hold neither ':' nor ' '. It reports whether every
// planned block fits.
func encodeBlocks(blocks []*block) (string, bool) {
	if len(blocks) == 0 {
		return "", true
	}
	keep := slices.Clone(blocks)
	all := true // every planned block is kept
	for {
		parts := make([]string, len(keep))
		n := len(metadataVersion)
		for i, b := range keep {
			state := "p"
			if b.inserted {
				state = "i"
			}
			parts[i] = fmt.Sprintf("%s:%s:%s:%d-%d@%d", state, b.table.table, b.table.schema, b.first, b.last, b.loadedAt)
			n += 1 + len(parts[i])
		}
		if n <= maxMetadata {
			return metadataVersion + " " + strings.Join(parts, " "), all
		}
		i := slices.IndexFunc(keep, func(b *block) bool { return b.inserted })
		if i < 0 {
			keep, all = keep[1:], false // only planned blocks: plan plans none that do not fit
			if len(keep) == 0 {
				return "", false
			}
			continue
		}
		keep = slices.Delete(keep, i, i+1)
	}
}

// fits reports whether blocks fit in commit metadata, every planned one recorded.
func fits(blocks []*block) bool {
	_, ok := encodeBlocks(compact(blocks))
	return ok
}

// compact returns blocks in offset order with the inserted blocks of a table that follow one
// another (no block of the table between them) merged into one: the records of the table in the
// merged range are all in, or dead-lettered.
func compact(blocks []*block) []*block {
	sorted := slices.Clone(blocks)
	slices.SortStableFunc(sorted, func(a, b *block) int { return cmp.Compare(a.first, b.first) })
	last := map[tableKey]*block{}
	var out []*block
	for _, b := range sorted {
		if prev := last[b.table]; prev != nil && prev.inserted && b.inserted {
			merged := *prev
			merged.last, merged.loadedAt = b.last, b.loadedAt
			*prev = merged // prev is a copy made below
			continue
		}
		c := *b
		out = append(out, &c)
		last[b.table] = &c
	}
	return out
}

// decodeBlocks reads what encodeBlocks wrote; what it cannot read (another encoding, a commit of
// another tool) is no block.
func decodeBlocks(s string) []*block {
	fields := strings.Fields(s)
	if len(fields) == 0 || fields[0] != metadataVersion {
		return nil
	}
	var out []*block
	for _, f := range fields[1:] {
		b := &block{tried: true}
		parts := strings.Split(f, ":")
		if len(parts) != 4 || (parts[0] != "p" && parts[0] != "i") {
			return nil
		}
		b.inserted, b.table = parts[0] == "i", tableKey{parts[1], parts[2]}
		rng, at, ok := strings.Cut(parts[3], "@")
		first, last, ok2 := strings.Cut(rng, "-")
		var err1, err2, err3 error
		b.first, err1 = strconv.ParseInt(first, 10, 64)
		b.last, err2 = strconv.ParseInt(last, 10, 64)
		b.loadedAt, err3 = strconv.ParseInt(at, 10, 64)
		if !ok || !ok2 || err1 != nil || err2 != nil || err3 != nil || b.first > b.last {
			return nil
		}
		out = append(out, b)
	}
	return out
}

// committer keeps the blocks of the owned partitions, recorded in the metadata of their committed
// offsets: it plans the next blocks of the tables due and records them before they are inserted,
// marks them inserted once they land, and commits each partition up to its delivery.Watermark with
// its blocks. It shares the poller's owned partitions; the Loader's mu guards both.
type committer struct {
	cl           *kgo.Client
	topic, group string
	parts        map[int32]*partition
	// batchBytes bounds a new block's size.
	batchBytes int
	now        func() time.Time
}

func newCommitter(topic, group string, parts map[int32]*partition, batchBytes int) *committer {
	return &committer{topic: topic, group: group, parts: parts, batchBytes: batchBytes, now: time.Now}
}

// fetch reads the group's committed offsets with cl, without the Loader's mu: record takes them in.
func (c *committer) fetch(ctx context.Context, cl *kgo.Client) (kadm.OffsetResponses, error) {
	resp, err := kadm.NewClient(cl).FetchOffsets(ctx, c.group)
	if err == nil {
		err = resp.Error()
	}
	return resp, err
}

// record takes in, for raw partitions ps, the committed offset and the blocks its metadata records,
// as fetch read them; when fetch failed (err) it marks them unread: nothing of them is inserted or
// committed (which would overwrite their last owner's blocks) until a plan reads them. The caller
// holds the Loader's mu.
func (c *committer) record(ps []int32, resp kadm.OffsetResponses, err error) {
	for _, p := range ps {
		s := c.parts[p]
		if s == nil {
			s = &partition{committed: -1, start: -1}
			c.parts[p] = s
		}
		if err != nil {
			s.unread = true
			continue
		}
		s.unread = false
		if o, ok := resp.Lookup(c.topic, p); ok && o.At >= 0 {
			s.epoch, s.committed, s.blocks, s.recorded = o.LeaderEpoch, o.At, decodeBlocks(o.Metadata), o.Metadata
			s.next = max(s.next, o.At)
			if s.start < 0 {
				s.start = o.At
			}
		}
	}
}

// unread returns the owned partitions whose commits could not be read. The caller holds the
// Loader's mu.
func (c *committer) unread() []int32 {
	var out []int32
	for p, s := range c.parts {
		if s.unread {
			out = append(out, p)
		}
	}
	return out
}

// tablePlan is what one flight does with a table's waiting records: the blocks it inserts, in
// order, and the records that blocks inserted before (by this member or the partition's last
// owner) hold already.
type tablePlan struct {
	t     *table
	units []*unit
	known []*item
	// isolate is set when an unclassified error held the table past its bounds: the flight splits
	// the failing block down to the rows that still fail, and dead-letters them.
	isolate bool
}

// unit is the records of one block, waiting to be inserted.
type unit struct {
	partition int32
	// owner is the ownership of the partition the block was planned in: a flight that lands after
	// it ended (lost, or revoked before the flight was back) marks nothing of the next ownership's.
	owner *partition
	items []*item
	blk   *block
	// token is the block's token when it is partly in (block.token): its rows go with it.
	token string
}

// plan plans the blocks of the due tables and records them before they are inserted. Per table
// and partition, the blocks recorded already come first, each formed from exactly its records (and
// waiting, with what follows, until they are all polled); the records after them make one new
// block. A table whose records make no block is stalled, or due again in a second when a partition
// of its records was not read. The caller holds the Loader's mu.
func (c *committer) plan(ctx context.Context, due []*table) ([]*tablePlan, error) {
	now := c.now().Unix()
	var plans []*tablePlan
	touched := map[int32]bool{}
	for _, t := range due {
		tp := &tablePlan{t: t}
		unknown := false // a partition of the table's records whose blocks could not be read
		byPart := map[int32][]*item{}
		var order []int32
		for _, it := range t.items {
			if byPart[it.partition] == nil {
				order = append(order, it.partition)
			}
			byPart[it.partition] = append(byPart[it.partition], it)
		}
		// Partitions in the order of their oldest waiting record, so that none waits behind a
		// busier one; the new blocks of one flight hold at most the table's block size in all.
		budget := t.rows
		for _, p := range order {
			s, items := c.parts[p], byPart[p]
			if s == nil || s.unread {
				unknown = true
				continue
			}
			blocked := false
			for _, b := range s.blocks {
				if b.table != t.key() || blocked {
					continue
				}
				var covered []*item
				items = slices.DeleteFunc(items, func(it *item) bool {
					if b.covers(it.offset) {
						covered = append(covered, it)
						return true
					}
					return false
				})
				switch {
				case len(covered) == 0:
				case b.inserted:
					tp.known = append(tp.known, covered...)
				case s.next <= b.last:
					blocked = true // not all its records are here yet: it waits, and what follows it
				default:
					tp.units = append(tp.units, &unit{partition: p, owner: s, items: covered, blk: b, token: b.token})
					touched[p] = true
				}
			}
			if blocked || len(items) == 0 || budget == 0 {
				continue
			}
			// A new block is at most the table's block size, never more than a batch, so that
			// a member that takes the partition over can hold all its records; what is left
			// makes the next block, in the next flight.
			n, bytes := 0, 0
			for n < len(items) && n < budget && (n == 0 || bytes+len(items[n].raw) <= c.batchBytes) {
				bytes += len(items[n].raw)
				n++
			}
			items = items[:n]
			b := &block{table: t.key(), first: items[0].offset, last: items[len(items)-1].offset, loadedAt: now}
			if !fits(append(slices.Clip(s.blocks), b)) {
				continue // the partition's planned blocks fill its metadata: this one waits for them
			}
			s.blocks = append(s.blocks, b)
			budget -= n
			tp.units = append(tp.units, &unit{partition: p, owner: s, items: items, blk: b})
			touched[p] = true
		}
		switch {
		case len(tp.units) > 0 || len(tp.known) > 0:
			plans = append(plans, tp)
		case unknown:
			t.retryAt = c.now().Add(time.Second) // the next plan reads the partitions' blocks again
		default:
			t.stalled = true
		}
	}
	offsets := map[int32]kgo.EpochOffset{}
	for p := range touched {
		s := c.parts[p]
		if m, _ := encodeBlocks(compact(s.blocks)); m == s.recorded {
			continue
		}
		o := s.committed
		if o < 0 {
			o = s.start
		}
		offsets[p] = kgo.EpochOffset{Epoch: s.epoch, Offset: o}
	}
	if err := c.commit(ctx, offsets, false); err != nil {
		return nil, delivery.New(delivery.Transient, "commit", fmt.Errorf("record the blocks about to be inserted: %w", err))
	}
	return plans, nil
}

// settle marks as done the planned blocks of a table whose records were all dead-lettered: those
// whose records were all polled. A block not all polled stays planned; its other records come.
func (c *committer) settle(tk tableKey) {
	for _, s := range c.parts {
		for _, b := range s.blocks {
			if b.table == tk && !b.inserted && s.next > b.last {
				b.inserted = true
			}
		}
	}
}

// incomplete returns the partitions with a planned block whose records are not all polled: those
// the loader must read on even when it holds as much as it may. The caller holds the Loader's mu.
func (c *committer) incomplete() []int32 {
	var out []int32
	for p, s := range c.parts {
		if slices.ContainsFunc(s.blocks, func(b *block) bool { return !b.inserted && s.next <= b.last }) {
			out = append(out, p)
		}
	}
	slices.Sort(out)
	return out
}

// mark finds the block of u among its partition's blocks and marks it inserted or, with inserted
// false, drops it: its records are planned again.
func (c *committer) mark(u *unit, inserted bool) {
	b := c.find(u)
	switch {
	case b == nil: // revoked since: its next owner finds the block planned
	case inserted:
		b.inserted = true
	default:
		s := c.parts[u.partition]
		s.blocks = slices.DeleteFunc(s.blocks, func(x *block) bool { return x == b })
	}
}

// tried marks the block of u as one an insert was tried of: part of it may be in.
func (c *committer) tried(u *unit) {
	if b := c.find(u); b != nil {
		b.tried = true
	}
}

// parked records that u's block is partly in, with the token its remaining rows go with.
func (c *committer) parked(u *unit, token string) {
	if b := c.find(u); b != nil {
		b.tried, b.token = true, token
	}
}

// replan drops the planned block of failed, and those of the units after it that no insert was
// tried of: their records are planned again, as smaller blocks.
func (c *committer) replan(failed *unit, after []*unit) {
	c.mark(failed, false)
	for _, u := range after {
		if b := c.find(u); b != nil && !b.tried {
			c.mark(u, false)
		}
	}
}

// find returns the planned block of u among its partition's blocks: compacting them copies them.
// Nil when the ownership u was planned in ended: the next ownership's blocks are its own.
func (c *committer) find(u *unit) *block {
	s := c.parts[u.partition]
	if s == nil || s != u.owner {
		return nil
	}
	i := slices.IndexFunc(s.blocks, func(b *block) bool {
		return b.table == u.blk.table && b.first == u.blk.first && b.last == u.blk.last && !b.inserted
	})
	if i < 0 {
		return nil
	}
	return s.blocks[i]
}

// offsets returns, per owned partition, its delivery.Watermark (the first record that waits, of
// those waiting yields, or one past the last polled) where that is past the committed offset or
// the partition's blocks changed since they were recorded. The caller holds the Loader's mu.
func (c *committer) offsets(waiting iter.Seq2[int32, int64]) map[int32]kgo.EpochOffset {
	marks := make(map[int32]*delivery.Watermark, len(c.parts))
	for p, s := range c.parts {
		w := delivery.NewWatermark(s.committed, s.next)
		marks[p] = &w
	}
	for p, o := range waiting {
		if w := marks[p]; w != nil {
			w.Hold(o)
		}
	}
	// A block not yet in holds the commit at its first offset, even where its first records are
	// in (those a cluster's other shards took): a member that takes the partition over forms it
	// again from all its records, so that the parts that landed are dropped as repeats.
	for p, s := range c.parts {
		for _, b := range s.blocks {
			if !b.inserted {
				marks[p].Hold(b.first)
			}
		}
	}
	out := map[int32]kgo.EpochOffset{}
	for p, w := range marks {
		s := c.parts[p]
		if s.unread || s.start < 0 {
			continue // committing would overwrite the blocks of its last owner, or nothing is known
		}
		o, _ := w.Offset() // the partition's last owner may have committed past what this member polled
		kept, _ := encodeBlocks(compact(slices.DeleteFunc(slices.Clone(s.blocks), func(b *block) bool { return b.last < o })))
		if o > s.committed || kept != s.recorded {
			out[p] = kgo.EpochOffset{Epoch: s.epoch, Offset: o}
		}
	}
	return out
}

// commit commits offsets, each with the blocks of its partition at or past it as metadata.
// Once it went through, the blocks below the offsets are dropped, and with compacted set the
// partitions' blocks are replaced by their compacted copies (the units of flights in the air
// find theirs by value: find). The caller holds the Loader's mu.
func (c *committer) commit(ctx context.Context, offsets map[int32]kgo.EpochOffset, compacted bool) error {
	if len(offsets) == 0 {
		return nil
	}
	kept := make(map[int32][]*block, len(offsets))
	meta := make(map[int32]string, len(offsets))
	for p, eo := range offsets {
		kept[p] = compact(slices.DeleteFunc(slices.Clone(c.parts[p].blocks), func(b *block) bool { return b.last < eo.Offset }))
		meta[p], _ = encodeBlocks(kept[p])
	}
	ctx = kgo.PreCommitFnContext(ctx, func(req *kmsg.OffsetCommitRequest) error {
		for i := range req.Topics {
			for j := range req.Topics[i].Partitions {
				p := &req.Topics[i].Partitions[j]
				if m, ok := meta[p.Partition]; ok && req.Topics[i].Topic == c.topic {
					p.Metadata = &m
				}
			}
		}
		return nil
	})
	if err := kafka.CommitSync(ctx, c.cl, map[string]map[int32]kgo.EpochOffset{c.topic: offsets}); err != nil {
		return err
	}
	for p, eo := range offsets {
		s := c.parts[p]
		s.committed, s.recorded = max(s.committed, eo.Offset), meta[p]
		if compacted {
			s.blocks = kept[p]
		} else {
			s.blocks = slices.DeleteFunc(s.blocks, func(b *block) bool { return b.last < eo.Offset })
		}
	}
	return nil
}
