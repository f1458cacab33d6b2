// Package catalog keeps the sink schemas of typed jobs on a compacted topic: the planner publishes
// each one, keyed by its id, before the job's tasks; tasks and records carry the id; the loader
// resolves it here.
package catalog

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	"github.com/sluicedata/sluice/pkg/chsink"
	"github.com/sluicedata/sluice/pkg/kafka"
	sluicev1 "github.com/sluicedata/sluice/proto/sluice/v1"
)

// ErrUnknown is a schema id that the topic does not hold, read to its end: the records that carry
// it cannot be landed.
var ErrUnknown = errors.New("no sink schema with this id on the schemas topic")

// Publish writes schema under its id and returns the id once the broker has acknowledged it.
// Publishing the same schema again writes the same key and value.
func Publish(ctx context.Context, cl *kgo.Client, topic string, schema *sluicev1.SinkSchema) (string, error) {
	id := chsink.SchemaID(schema)
	value, err := proto.Marshal(schema)
	if err != nil {
		return "", fmt.Errorf("encode sink schema: %w", err)
	}
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: topic, Key: []byte(id), Value: value}).FirstErr(); err != nil {
		return "", fmt.Errorf("publish sink schema %s: %w", id, err)
	}
	return id, nil
}

// Catalog resolves schema ids. It reads the topic from its start when it meets an id it does not
// know, with a client of its own, and keeps what it read.
type Catalog struct {
	open  func() (*kgo.Client, error)
	topic string
	now   func() time.Time

	mu      sync.Mutex
	sinks   map[string]*chsink.Sink
	invalid map[string]error
	// missed is when the topic was last read to its end for an id it did not hold: an id is
	// looked for again at most once per missWindow.
	missed map[string]time.Time
}

const missWindow = 10 * time.Second

// New returns a catalog of topic; open returns a client that consumes topic from its start.
func New(topic string, open func() (*kgo.Client, error)) *Catalog {
	return &Catalog{open: open, topic: topic, now: time.Now, sinks: map[string]*chsink.Sink{},
		invalid: map[string]error{}, missed: map[string]time.Time{}}
}

// Sink returns the sink whose schema has id. An id the topic does not hold is ErrUnknown, and a
// schema that does not check out is an error that says why; both are final. Other errors (the
// topic cannot be read) are worth another try.
func (c *Catalog) Sink(ctx context.Context, id string) (*chsink.Sink, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if s, ok, err := c.known(id); ok {
		return s, err
	}
	if at, ok := c.missed[id]; ok && c.now().Sub(at) < missWindow {
		return nil, fmt.Errorf("sink schema %s: %w", id, ErrUnknown)
	}
	if err := c.read(ctx); err != nil {
		return nil, err
	}
	if s, ok, err := c.known(id); ok {
		return s, err
	}
	c.missed[id] = c.now()
	return nil, fmt.Errorf("sink schema %s: %w", id, ErrUnknown)
}

func (c *Catalog) known(id string) (*chsink.Sink, bool, error) {
	if s := c.sinks[id]; s != nil {
		return s, true, nil
	}
	if err := c.invalid[id]; err != nil {
		return nil, true, err
	}
	return nil, false, nil
}

// ErrInvalid is a published schema that does not check out (written by another release, say).
var ErrInvalid = errors.New("the sink schema does not check out")

// read reads the whole topic, as it is now, into the catalog.
func (c *Catalog) read(ctx context.Context) error {
	cl, err := c.open()
	if err != nil {
		return fmt.Errorf("read sink schemas: %w", err)
	}
	defer cl.Close()
	err = kafka.ReadToEnd(ctx, cl, c.topic, func(r *kgo.Record) bool {
		id := string(r.Key)
		if _, ok, _ := c.known(id); ok || r.Value == nil {
			return true
		}
		var p sluicev1.SinkSchema
		if err := proto.Unmarshal(r.Value, &p); err != nil {
			c.invalid[id] = fmt.Errorf("sink schema %s: %w: %v", id, ErrInvalid, err)
			return true
		}
		s, probs := chsink.NewSink(&p)
		switch {
		case len(probs) > 0:
			c.invalid[id] = fmt.Errorf("sink schema %s: %w: %v", id, ErrInvalid, probs)
		case s.ID != id:
			c.invalid[id] = fmt.Errorf("sink schema %s: %w: its content has id %s", id, ErrInvalid, s.ID)
		default:
			c.sinks[id] = s
		}
		return true
	})
	if err != nil {
		return fmt.Errorf("read sink schemas from %s: %w", c.topic, err)
	}
	return nil
}
