package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	"github.com/sluicedata/sluice/pkg/chsink"
	"github.com/sluicedata/sluice/pkg/delivery"
	"github.com/sluicedata/sluice/pkg/pipeline"
	sluicev1 "github.com/sluicedata/sluice/proto/sluice/v1"
)

// fakeSink is a blockSink: it fails a block that holds a payload containing fail with err, and
// keeps the blocks it took and the tokens it was given.
type fakeSink struct {
	mu     sync.Mutex
	fail   string
	err    error
	took   [][]string // the payloads of each block taken
	tokens []string
	// repeats is a table that drops a block inserted again: each block goes alone.
	repeats bool
}

func (s *fakeSink) DropsRepeats(context.Context, string) (bool, error) { return s.repeats, nil }

func (s *fakeSink) Insert(_ context.Context, _ string, block *chsink.Block, _ time.Time, token string) error {
	payloads := block.Column("payload").([]string)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tokens = append(s.tokens, token)
	for _, p := range payloads {
		if s.fail != "" && strings.Contains(p, s.fail) {
			return s.err
		}
	}
	s.took = append(s.took, payloads)
	return nil
}

func newTestInserter(t testing.TB, sink blockSink, tokens bool) *inserter {
	t.Helper()
	reg := prometheus.NewRegistry()
	in := newInserter("raw", 200*time.Millisecond, pipeline.Backoff{Base: time.Millisecond, Max: 5 * time.Millisecond})
	in.sink, in.schemas, in.metrics = sink, newFakeWriter(), newLoaderMetrics(reg, pipeline.NewMetrics(reg))
	in.retrier = delivery.NewRetrier(reg, slog.New(slog.DiscardHandler))
	in.tokens.Store(tokens)
	return in
}

// testPlan is a plan of one block of partition 0 whose records hold payloads.
func testPlan(payloads ...string) *tablePlan {
	owner := &partition{}
	items := make([]*item, len(payloads))
	for i, p := range payloads {
		key := fmt.Sprint(i)
		v, _ := proto.Marshal(&sluicev1.Record{Key: key, Payload: []byte(p), Table: "t"})
		items[i] = &item{partition: 0, offset: int64(i), owner: owner, raw: v, key: key, payload: []byte(p), table: "t"}
	}
	blk := &block{table: tableKey{"t", ""}, first: 0, last: int64(len(items) - 1), loadedAt: 1700000000}
	return &tablePlan{t: &table{name: "t"}, units: []*unit{{partition: 0, owner: owner, items: items, blk: blk}}}
}

// TestInserterFindsRejectedRows: a block that ClickHouse refuses as bad data is split until the
// rows that fail alone are found; the others go in, each piece with a token of its own.
func TestInserterFindsRejectedRows(t *testing.T) {
	sink := &fakeSink{fail: "bad", err: delivery.New(delivery.Data, "data", errors.New("code: 27, message: Cannot parse input"))}
	in := newTestInserter(t, sink, true)
	tp := testPlan(`{"a":1}`, `{"bad":2}`, `{"a":3}`, `{"a":4}`, `{"a":5}`, `{"bad":6}`, `{"a":7}`, `{"a":8}`)
	res := in.insertTable(context.Background(), "t", "", nil, tp)
	if res.err != nil || res.units != 1 || len(res.inserted) != 6 || len(res.rejected) != 2 {
		t.Fatalf("err %v, %d units, %d inserted, %d rejected", res.err, res.units, len(res.inserted), len(res.rejected))
	}
	for _, rj := range res.rejected {
		if !strings.Contains(string(rj.item.payload), "bad") || rj.class != "data" {
			t.Errorf("rejected %s as %s", rj.item.payload, rj.class)
		}
	}
	for _, tok := range sink.tokens {
		if !strings.HasPrefix(tok, "sluice2-t--raw-") {
			t.Errorf("token %q", tok)
		}
	}
}

// TestInserterIsolation: an unclassified failure is retried as it is, then, once the table is
// held past its bounds (isolate), taken for the rows'; when every row fails alone it is the
// table's, held like a schema failure.
func TestInserterIsolation(t *testing.T) {
	unclassified := delivery.New(delivery.Transient, chsink.Unclassified, errors.New("code: 395, message: Value passed to 'throwIf' function is non zero"))
	tests := []struct {
		name     string
		fail     string
		isolate  bool
		failed   bool           // the flight ends with an error …
		class    delivery.Class // … of this class
		inserted int
		rejected int
	}{
		{"retried before the bounds", "bad", false, true, delivery.Transient, 0, 0},
		{"rows isolated past them", "bad", true, false, 0, 3, 1},
		{"every row fails: the table's", `"`, true, true, delivery.Schema, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := newTestInserter(t, &fakeSink{fail: tt.fail, err: unclassified}, false)
			tp := testPlan(`{"a":1}`, `{"bad":2}`, `{"a":3}`, `{"a":4}`)
			tp.isolate = tt.isolate
			ctx, cancel := context.WithTimeout(context.Background(), in.timeout)
			defer cancel()
			res := in.insertTable(ctx, "t", "", nil, tp)
			if got := delivery.ClassOf(res.err); (res.err != nil) != tt.failed || (tt.failed && got != tt.class) {
				t.Fatalf("error %v of class %v, want an error %v of class %v", res.err, got, tt.failed, tt.class)
			}
			if len(res.inserted) != tt.inserted || len(res.rejected) != tt.rejected {
				t.Fatalf("%d inserted, %d rejected", len(res.inserted), len(res.rejected))
			}
			for _, rj := range res.rejected {
				if rj.class != chsink.Unclassified {
					t.Errorf("rejected as %s", rj.class)
				}
			}
		})
	}
}

// TestInserterTokens: the sink gets a token only from a server that takes them.
func TestInserterTokens(t *testing.T) {
	for _, tokens := range []bool{false, true} {
		sink := &fakeSink{}
		in := newTestInserter(t, sink, tokens)
		if res := in.insertTable(context.Background(), "t", "", nil, testPlan(`{"a":1}`)); res.err != nil {
			t.Fatal(res.err)
		}
		if got := sink.tokens[0] != ""; got != tokens {
			t.Errorf("tokens %v: the sink got %q", tokens, sink.tokens[0])
		}
	}
}

// TestInserterGroupsBlocks: a plan's blocks of three partitions with one load time go as one
// insert into a table that does not drop a block inserted again, and each alone into one that
// does; a second block of a partition starts another insert, as a block of another load time
// does, and a block partly in (its token kept) goes alone. Every record is inserted once either
// way, and the plan's blocks all count as done.
func TestInserterGroupsBlocks(t *testing.T) {
	plan := func() *tablePlan {
		tp := &tablePlan{t: &table{name: "t"}}
		for i, at := range []int64{1700000000, 1700000000, 1700000000, 1700000000, 1700000000, 1700000001, 1700000001} {
			p := []int{0, 1, 2, 2, 3, 5, 4}[i] // partition 2's second block starts the next insert
			owner := &partition{}
			var items []*item
			for j := range 3 {
				key, body := fmt.Sprint(i, "-", j), fmt.Sprintf(`{"u":%d,"i":%d}`, i, j)
				v, _ := proto.Marshal(&sluicev1.Record{Key: key, Payload: []byte(body), Table: "t"})
				items = append(items, &item{partition: int32(p), offset: int64(3*i + j), owner: owner, raw: v, key: key, payload: []byte(body), table: "t"})
			}
			blk := &block{table: tableKey{"t", ""}, first: int64(3 * i), last: int64(3*i + 2), loadedAt: at}
			tp.units = append(tp.units, &unit{partition: int32(p), owner: owner, items: items, blk: blk})
		}
		tp.units[6].token = "partly-in"
		return tp
	}
	for _, tt := range []struct {
		repeats bool
		inserts []int // rows of each insert
	}{
		{false, []int{9, 6, 3, 3}},
		{true, []int{3, 3, 3, 3, 3, 3, 3}},
	} {
		sink := &fakeSink{repeats: tt.repeats}
		in := newTestInserter(t, sink, false)
		tp := plan()
		res := in.insertTable(context.Background(), "t", "", nil, tp)
		if res.err != nil || res.units != 7 || len(res.inserted) != 21 {
			t.Fatalf("drops repeats %v: err %v, %d units, %d inserted", tt.repeats, res.err, res.units, len(res.inserted))
		}
		var rows []int
		seen := map[string]bool{}
		for _, took := range sink.took {
			rows = append(rows, len(took))
			for _, p := range took {
				if seen[p] {
					t.Errorf("%s inserted twice", p)
				}
				seen[p] = true
			}
		}
		if fmt.Sprint(rows) != fmt.Sprint(tt.inserts) {
			t.Errorf("drops repeats %v: inserts of %v rows, want %v", tt.repeats, rows, tt.inserts)
		}
		if len(tp.units[0].items) != 3 {
			t.Errorf("the plan's first block holds %d records after the flight, want its own 3", len(tp.units[0].items))
		}
	}
}

// shardSink is a blockSink of a cluster whose second shard is down: it takes the rows whose
// payload holds "s1" and refuses the others as a shard that did not take them.
type shardSink struct {
	mu     sync.Mutex
	took   []string
	tokens []string
}

// DropsRepeats is true, as a cluster's replicated tables do.
func (s *shardSink) DropsRepeats(context.Context, string) (bool, error) { return true, nil }

func (s *shardSink) Insert(_ context.Context, _ string, block *chsink.Block, _ time.Time, token string) error {
	payloads := block.Column("payload").([]string)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tokens = append(s.tokens, token)
	var down []int
	for i, p := range payloads {
		if strings.Contains(p, "s1") {
			s.took = append(s.took, p)
		} else {
			down = append(down, i)
		}
	}
	if len(down) == 0 {
		return nil
	}
	return &chsink.ShardError{Rows: down}
}

// TestInserterParksAShardsRows: a block that one shard of a cluster did not take is parked: the
// other shard's rows count as in, the refused rows wait with the block's token, and the blocks
// after it go on; sent again, the waiting rows go alone under that same token.
func TestInserterParksAShardsRows(t *testing.T) {
	sink := &shardSink{}
	in := newTestInserter(t, sink, true)
	tp := testPlan(`{"s1":0}`, `{"s2":1}`, `{"s1":2}`, `{"s2":3}`)
	second := testPlan(`{"s1":4}`)
	tp.units = append(tp.units, second.units...)
	res := in.insertTable(context.Background(), "t", "", nil, tp)
	if !errors.Is(res.err, chsink.ErrShardUnavailable) || res.units != 2 || len(res.inserted) != 3 {
		t.Fatalf("err %v, %d units, %d inserted; want the shard's error, both blocks tried, the second whole", res.err, res.units, len(res.inserted))
	}
	token, parked := res.parked[0]
	if !parked || token == "" || token != sink.tokens[0] {
		t.Fatalf("parked %v with token %q, want the first block parked with the token it was sent with (%q)", res.parked, token, sink.tokens[0])
	}
	if len(sink.took) != 3 {
		t.Fatalf("took %v, want the first shard's two rows of the first block and the second block", sink.took)
	}
	// The next flight sends the waiting rows alone, under the parked token.
	left := testPlan(`{"s2":1}`, `{"s2":3}`)
	left.units[0].token = token
	in.insertTable(context.Background(), "t", "", nil, left)
	if got := sink.tokens[len(sink.tokens)-1]; got != token {
		t.Fatalf("the waiting rows went with token %q, want %q", got, token)
	}
}
