package main

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"

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
}

func (b block) covers(offset int64) bool { return b.first <= offset && offset <= b.last }

// metadataVersion prefixes the blocks in commit metadata, so that a later encoding can be told.
const metadataVersion = "sluice1"

// maxMetadata keeps commit metadata under the broker's offset.metadata.max.bytes (4096 by
// default): past it the oldest blocks are left out, whose records, if they come again, are
// inserted again and collapsed by the table.
const maxMetadata = 3800

// encodeBlocks writes blocks as "sluice1 p:users::100-199@1700000000 i:orders:3fa2:120-180@…",
// the newest last; table names and schema ids hold neither ':' nor ' '.
func encodeBlocks(blocks []*block) string {
	if len(blocks) == 0 {
		return ""
	}
	parts := make([]string, len(blocks))
	for i, b := range blocks {
		state := "p"
		if b.inserted {
			state = "i"
		}
		parts[i] = fmt.Sprintf("%s:%s:%s:%d-%d@%d", state, b.table.table, b.table.schema, b.first, b.last, b.loadedAt)
	}
	for len(parts) > 0 && len(metadataVersion)+len(strings.Join(parts, " "))+1 > maxMetadata {
		parts = parts[1:]
	}
	return metadataVersion + " " + strings.Join(parts, " ")
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
		b := &block{}
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

// assigned reads, for the raw partitions just assigned, the committed offset and the blocks its
// metadata records. It runs in the group's rebalance. When the offsets cannot be read the
// partitions start without blocks: what the last owner left uncommitted is inserted again, and
// the table collapses it.
func (l *Loader) assigned(ctx context.Context, cl *kgo.Client, assigned map[string][]int32) {
	ps := assigned[l.topics.raw]
	if len(ps) == 0 {
		return
	}
	resp, err := kadm.NewClient(cl).FetchOffsets(ctx, l.cfg.Group)
	if err == nil {
		err = resp.Error()
	}
	if err != nil {
		l.log.Warn("read the committed offsets of assigned partitions; their last blocks may be inserted again", "error", err)
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, p := range ps {
		o, ok := resp.Lookup(l.topics.raw, p)
		if !ok || o.At < 0 {
			continue
		}
		l.parts[p] = &partition{epoch: o.LeaderEpoch, next: o.At, committed: o.At, start: o.At,
			blocks: decodeBlocks(o.Metadata), recorded: o.Metadata}
	}
}

// tablePlan is what one flush does with a table's waiting records: the blocks it inserts, in
// order, and the records that blocks inserted before (by this member or the partition's last
// owner) hold already.
type tablePlan struct {
	t     *table
	units []*unit
	known []*item
}

// unit is the records of one block, waiting to be inserted.
type unit struct {
	partition int32
	items     []*item
	blk       *block
}

func (t *table) key() tableKey { return tableKey{t.name, t.schemaID} }

// planBlocks plans the blocks of the due tables and records them before they are inserted. Per
// table and partition, the blocks recorded already come first, each formed from exactly its
// records (and waiting, with what follows, until they are all polled); the records after them make
// one new block. The caller holds mu.
func (l *Loader) planBlocks(ctx context.Context, due []*table) ([]*tablePlan, error) {
	now := l.now().Unix()
	var plans []*tablePlan
	touched := map[int32]bool{}
	for _, t := range due {
		tp := &tablePlan{t: t}
		byPart := map[int32][]*item{}
		var order []int32
		for _, it := range t.items {
			if byPart[it.rec.Partition] == nil {
				order = append(order, it.rec.Partition)
			}
			byPart[it.rec.Partition] = append(byPart[it.rec.Partition], it)
		}
		slices.Sort(order)
		for _, p := range order {
			s, items := l.parts[p], byPart[p]
			blocked := false
			for _, b := range s.blocks {
				if b.table != t.key() || blocked {
					continue
				}
				var covered []*item
				items = slices.DeleteFunc(items, func(it *item) bool {
					if b.covers(it.rec.Offset) {
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
					tp.units = append(tp.units, &unit{partition: p, items: covered, blk: b})
					touched[p] = true
				}
			}
			if blocked || len(items) == 0 {
				continue
			}
			b := &block{table: t.key(), first: items[0].rec.Offset, last: items[len(items)-1].rec.Offset, loadedAt: now}
			s.blocks = append(s.blocks, b)
			tp.units = append(tp.units, &unit{partition: p, items: items, blk: b})
			touched[p] = true
		}
		if len(tp.units) > 0 || len(tp.known) > 0 {
			plans = append(plans, tp)
		}
	}
	offsets := map[int32]kgo.EpochOffset{}
	for p := range touched {
		s := l.parts[p]
		if encodeBlocks(s.blocks) == s.recorded {
			continue
		}
		o := s.committed
		if o < 0 {
			o = s.start
		}
		offsets[p] = kgo.EpochOffset{Epoch: s.epoch, Offset: o}
	}
	if err := l.commitBlocks(ctx, offsets); err != nil {
		return nil, delivery.New(delivery.Transient, "commit", fmt.Errorf("record the blocks about to be inserted: %w", err))
	}
	return plans, nil
}

// settle marks the planned blocks of a table whose records were all dead-lettered as done.
func (l *Loader) settle(tk tableKey) {
	for _, s := range l.parts {
		for _, b := range s.blocks {
			if b.table == tk && !b.inserted {
				b.inserted = true
			}
		}
	}
}

// commitBlocks commits offsets, each with the blocks of its partition at or past it as metadata.
// The caller holds mu.
func (l *Loader) commitBlocks(ctx context.Context, offsets map[int32]kgo.EpochOffset) error {
	if len(offsets) == 0 {
		return nil
	}
	meta := make(map[int32]string, len(offsets))
	for p, eo := range offsets {
		s := l.parts[p]
		s.blocks = slices.DeleteFunc(s.blocks, func(b *block) bool { return b.last < eo.Offset })
		meta[p] = encodeBlocks(s.blocks)
	}
	ctx = kgo.PreCommitFnContext(ctx, func(req *kmsg.OffsetCommitRequest) error {
		for i := range req.Topics {
			for j := range req.Topics[i].Partitions {
				p := &req.Topics[i].Partitions[j]
				if m, ok := meta[p.Partition]; ok && req.Topics[i].Topic == l.topics.raw {
					p.Metadata = &m
				}
			}
		}
		return nil
	})
	if err := kafka.CommitSync(ctx, l.cl, map[string]map[int32]kgo.EpochOffset{l.topics.raw: offsets}); err != nil {
		return err
	}
	for p, eo := range offsets {
		if s := l.parts[p]; s != nil {
			s.committed = max(s.committed, eo.Offset)
			s.recorded = meta[p]
		}
	}
	return nil
}
