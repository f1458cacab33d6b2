package main

import (
	"context"
	"encoding/json"
	"reflect"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicedata/sluice/pkg/pipeline"
	"github.com/sluicedata/sluice/pkg/source"
	sluicev1 "github.com/sluicedata/sluice/proto/sluice/v1"
)

type fakeSource struct{}

func (fakeSource) Plan(context.Context, int) (source.Plan, error) { return source.Plan{}, nil }
func (fakeSource) Replan([]byte, int) (source.Plan, error)        { return source.Plan{}, nil }
func (fakeSource) Open(*sluicev1.Task) (source.Reader, error)     { return &fakeReader{}, nil }
func (fakeSource) Limits() source.Limits                          { return source.Limits{} }

type fakeReader struct{ read bool }

func (r *fakeReader) Next(ctx context.Context) (source.Read, bool, error) {
	_ = ctx.Done() // as an HTTP request does
	r.read = true
	return source.Read{Records: []json.RawMessage{[]byte("{}")}}, true, nil
}
func (r *fakeReader) More() bool                           { return !r.read }
func (r *fakeReader) Key(json.RawMessage) (string, string) { return "", "" }
func (r *fakeReader) Then() *sluicev1.Task                 { return nil }

// TestReadAheadContextEndsWhenTaken: a page read ahead and then run in process (next, then take)
// has its context cancelled once taken: no read-ahead stays a child of the partition owner's
// context until the partition goes.
func TestReadAheadContextEndsWhenTaken(t *testing.T) {
	reg := prometheus.NewRegistry()
	x := &Extractor{metrics: newExtractorMetrics(reg, pipeline.NewMetrics(reg)), cfg: ExtractorConfig{ChainPages: 1000},
		claims: newClaims(), offsets: newOffsetTracker()}
	o := &owner{}
	o.ctx, o.cancel = context.WithCancel(context.Background())
	defer o.cancel()
	children := func() int { return reflect.ValueOf(o.ctx).Elem().FieldByName("children").Len() }
	before := children()
	for i := range 100 {
		cur := &kgo.Record{Topic: "sluice.tasks", Offset: int64(2 * i)}
		ch := x.newChain(o, context.Background(), cur)
		next := &sluicev1.Task{TaskId: "p" + string(rune('a'+i%26)) + string(rune('a'+i/26))}
		rec := &kgo.Record{Topic: "sluice.tasks", Offset: -1}
		ch.readAhead(&sluicev1.Task{JobId: "j"}, next, rec, fakeSource{})
		ch.goesOn()
		rec.Offset = int64(2*i + 1) // published
		a := ch.next(nil)
		if a == nil {
			t.Fatal("no page to run in process")
		}
		if ch.take(rec) == nil { // the in-process run takes the page read
			t.Fatal("the run did not take the page read ahead")
		}
		x.claims.release(o, a.id, finished)
	}
	if got := children() - before; got != 0 {
		t.Fatalf("%d read-ahead contexts still children of the owner's context after 100 pages run in process", got)
	}
}

// TestGivenUpPageRunsItsWaitingCopy: a chain that gives up the page it read ahead while its
// partition stays (the page before is not checkpointed in time) tells a copy of the page that
// waits for the claim to run it; only a chain that ends with its partition hands the copy over.
// A copy handed over while the partition stays would hold the partition's commit for good.
func TestGivenUpPageRunsItsWaitingCopy(t *testing.T) {
	reg := prometheus.NewRegistry()
	x := &Extractor{metrics: newExtractorMetrics(reg, pipeline.NewMetrics(reg)), cfg: ExtractorConfig{ChainPages: 1000},
		claims: newClaims(), offsets: newOffsetTracker()}
	for _, revoked := range []bool{false, true} {
		o := &owner{}
		o.ctx, o.cancel = context.WithCancel(context.Background())
		ch := x.newChain(o, context.Background(), &kgo.Record{Topic: "sluice.tasks", Offset: 1})
		ch.prev = &kgo.Record{Topic: "sluice.tasks", Offset: 0} // never committed: the chain gives up
		ch.readAhead(&sluicev1.Task{JobId: "j"}, &sluicev1.Task{TaskId: "p1"}, &kgo.Record{Topic: "sluice.tasks", Offset: -1}, fakeSource{})
		var got []released
		if x.claims.claim(o, "p1", func(how released) { got = append(got, how) }) {
			t.Fatal("the copy claimed the page the chain read ahead")
		}
		if revoked {
			o.cancel()
		}
		ch.goesOn()
		want := givenUp
		if revoked {
			want = handedOver
		}
		if !reflect.DeepEqual(got, []released{want}) {
			t.Fatalf("revoked %v: the waiting copy was told %v, want %v", revoked, got, want)
		}
		o.cancel()
	}
}
