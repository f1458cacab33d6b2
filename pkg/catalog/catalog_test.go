package catalog

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicedata/sluice/pkg/chsink"
	sluicev1 "github.com/sluicedata/sluice/proto/sluice/v1"
)

// TestCatalog publishes a schema and resolves its id; an id the topic does not hold is
// ErrUnknown, a record that is not a valid schema ErrInvalid, and a topic that cannot be read an
// error that is neither.
func TestCatalog(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "schemas"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx := context.Background()
	schema := &sluicev1.SinkSchema{Table: "orders", Columns: []*sluicev1.SinkColumn{{Name: "id", Type: "Int64"}}}
	chsink.Complete(schema, "orders")
	id, err := Publish(ctx, cl, "schemas", schema)
	if err != nil || id != chsink.SchemaID(schema) {
		t.Fatalf("publish: %q %v", id, err)
	}
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "schemas", Key: []byte("00000000000000ff"), Value: []byte{0xff}}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	open := func(topic string) func() (*kgo.Client, error) {
		return func() (*kgo.Client, error) {
			return kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
		}
	}
	cat := New("schemas", open("schemas"))
	sink, err := cat.Sink(ctx, id)
	if err != nil || sink.Table != "orders" || sink.ID != id || len(sink.Columns) != 1 {
		t.Fatalf("sink %+v, %v", sink, err)
	}
	if _, err := cat.Sink(ctx, "0123456789abcdef"); !errors.Is(err, ErrUnknown) {
		t.Fatalf("an unknown id: %v", err)
	}
	if _, err := cat.Sink(ctx, "00000000000000ff"); !errors.Is(err, ErrInvalid) {
		t.Fatalf("an invalid schema: %v", err)
	}
	// A topic that is not there: neither unknown nor invalid, so that the loader tries again.
	gone := New("nowhere", open("nowhere"))
	short, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if _, err := gone.Sink(short, id); err == nil || errors.Is(err, ErrUnknown) || errors.Is(err, ErrInvalid) {
		t.Fatalf("a topic that cannot be read: %v", err)
	}
}
