package main

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicedata/sluice/pkg/kafka"
	"github.com/sluicedata/sluice/pkg/pipeline"
)

// TestOldFlightMarksNothingOfTheNextOwnership: a flight planned in an ownership that was lost lands
// after the partition came back to this member, one of its rows rejected as data. Its letter is not
// written (the row is not this ownership's) and its block must not count as inserted in the new
// ownership either: the new ownership inserts the block's records again, so that the rejected one
// is lettered there, never taken as in.
func TestOldFlightMarksNothingOfTheNextOwnership(t *testing.T) {
	reg := prometheus.NewRegistry()
	l := newLoader(LoaderConfig{BatchRows: 100, BatchBytes: 1 << 20, UnclassifiedAttempts: 3}, topics{raw: "raw", dlq: "dlq"},
		kafka.NewLagReporter("loader", "raw", time.Second), pipeline.Backoff{})
	l.metrics = newLoaderMetrics(reg, pipeline.NewMetrics(reg))
	tk := tableKey{"t", ""}
	tab := &table{name: "t", told: map[string]bool{}, rows: 100}
	l.batcher.tables[tk] = tab
	old := &partition{committed: 0, start: 0, next: 10}
	blk := &block{table: tk, first: 0, last: 9, loadedAt: 1}
	old.blocks = []*block{blk}
	l.poller.parts[0] = old
	var items []*item
	for i := range 10 {
		items = append(items, &item{partition: 0, offset: int64(i), owner: old, table: "t", raw: []byte("x")})
	}
	recorded, _ := encodeBlocks(old.blocks)
	l.lost(context.Background(), nil, map[string][]int32{"raw": {0}}) // then assigned again, the planned block read from the commit
	next := &partition{committed: 0, start: 0, next: 10, blocks: decodeBlocks(recorded), recorded: recorded}
	l.poller.parts[0] = next
	tp := &tablePlan{t: tab, units: []*unit{{partition: 0, owner: old, items: items, blk: blk}}}
	res := insertResult{inserted: items[:9], rejected: []rejection{{items[9], "bad_value", errors.New("bad")}}, units: 1}
	b := newBatch()
	l.load(tp, res, b)
	if len(b.letters) != 0 || next.blocks[0].inserted {
		t.Fatalf("the old flight wrote %d letters and marked the next ownership's block inserted: %v", len(b.letters), next.blocks[0].inserted)
	}
	for i := range 10 {
		l.batcher.hold(tab, &item{partition: 0, offset: int64(i), owner: next, table: "t", raw: []byte("x")})
	}
	plans, err := l.blocks.plan(context.Background(), []*table{tab})
	if err != nil {
		t.Fatal(err)
	}
	if len(plans) != 1 || len(plans[0].known) != 0 || len(plans[0].units) != 1 || len(plans[0].units[0].items) != 10 {
		t.Fatalf("the next ownership's plan: %+v", plans)
	}
}
