package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	"github.com/sluicedata/sluice/pkg/delivery"
	"github.com/sluicedata/sluice/pkg/dlq"
	"github.com/sluicedata/sluice/pkg/kafka"
	sluicev1 "github.com/sluicedata/sluice/proto/sluice/v1"
)

// taskProducer produces one run of a task's records asynchronously and waits for their
// acknowledgements. It produces with a context that outlives the task: franz-go fails every
// buffered record of a partition when the first one's context ends, which would fail other tasks'
// records too; cancelling a task stops its fetching, not its producing.
//
// The first failed record stops the run: failed reports it, and the task loop fetches no further
// page. A record the raw topic refuses as too large is produced again alone when it fits the
// topic's limit (the broker refuses a whole batch for one record over it), and becomes a dead
// letter with a stub only when it is larger itself.
type taskProducer struct {
	x     *Extractor
	ctx   context.Context
	task  *kgo.Record
	wg    sync.WaitGroup
	acked atomic.Uint64
	// tooLarge counts the records dead-lettered as too large, acknowledged.
	tooLarge atomic.Uint64
	err      atomic.Pointer[error]
	// last collects the records of the task's last page, sent together by flush.
	last       []*kgo.Record
	collecting bool
}

func newTaskProducer(x *Extractor, ctx context.Context, task *kgo.Record) *taskProducer {
	return &taskProducer{x: x, ctx: context.WithoutCancel(ctx), task: task}
}

// produce sends one record; it does nothing once the run failed.
func (p *taskProducer) produce(env *sluicev1.Record) {
	if p.failed() != nil {
		return
	}
	value, keyAt, ok := appendRecord(make([]byte, 0, recordSize(env)), env)
	if !ok {
		_, err := proto.Marshal(env) // it says which field
		p.fail(delivery.New(delivery.Fatal, "bad_record", fmt.Errorf("encode record: %w", err)))
		return
	}
	p.wg.Add(1)
	// The key is the envelope's own: the Kafka record keeps one buffer.
	key := value[keyAt : keyAt+len(env.Key) : keyAt+len(env.Key)]
	rec := &kgo.Record{Topic: p.x.topics.raw, Key: key, Value: value}
	if p.collecting {
		p.last = append(p.last, rec)
		return
	}
	p.x.cl.Produce(p.ctx, rec, p.onAck)
}

// collect makes produce keep the records of the task's last page for flush.
func (p *taskProducer) collect() { p.collecting = true }

// flush sends the records of the task's last page at once: the task waits for their
// acknowledgements, which the client's linger (there to batch the pages of long tasks) would
// only delay. A crawl's page is a task's last.
func (p *taskProducer) flush() {
	recs := p.last
	p.last, p.collecting = nil, false
	if len(recs) == 0 {
		return
	}
	go func() {
		for _, res := range p.x.cl.ProduceSync(p.ctx, recs...) {
			p.onAck(res.Record, res.Err)
		}
	}()
}

// onAck is the one callback of every record of the run: no closure per record.
func (p *taskProducer) onAck(rec *kgo.Record, err error) {
	defer p.wg.Done()
	switch {
	case err == nil:
		p.acked.Add(1)
	case errors.Is(err, kerr.MessageTooLarge) || errors.Is(err, kerr.RecordListTooLarge):
		// Not on this goroutine: franz-go runs every produce callback on it, so waiting here for
		// another acknowledgement would wait forever.
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.tooLargeRecord(rec, err)
		}()
	default:
		p.fail(delivery.ClassifyKafka(err))
	}
}

// tooLargeRecord produces a record that came back too large alone, or dead-letters it with a stub
// (size, sha256, and its page and index, to fetch it again) when it is larger than the topic takes.
func (p *taskProducer) tooLargeRecord(rec *kgo.Record, err error) {
	if kafka.RecordBytes(rec) <= p.x.maxRecordBytes {
		again := &kgo.Record{Topic: rec.Topic, Key: rec.Key, Value: rec.Value}
		if perr := p.x.cl.ProduceSync(p.ctx, again).FirstErr(); perr == nil {
			p.acked.Add(1)
			return
		} else if !errors.Is(perr, kerr.MessageTooLarge) {
			p.fail(delivery.ClassifyKafka(perr))
			return
		}
	}
	var env sluicev1.Record
	if uerr := proto.Unmarshal(rec.Value, &env); uerr != nil {
		p.fail(delivery.New(delivery.Fatal, "bad_record", uerr))
		return
	}
	letter, lerr := dlq.Record(p.x.topics.dlq, dlq.Letter{
		Stage: sluicev1.DeadLetter_STAGE_EXTRACT, ErrorClass: "too_large",
		Err: fmt.Errorf("record %d of the page at %d, %d bytes, refused by the raw topic: %w",
			env.IndexInPage, env.Page, len(env.Payload), err),
		Attempts: 1, Original: p.task, JobID: env.JobId, TaskID: env.TaskId, Payload: env.Payload, FailedAt: p.x.now(),
	}, 0)
	if lerr != nil {
		p.fail(delivery.New(delivery.Fatal, "bad_letter", lerr))
		return
	}
	// Bounded: a dead-letter topic that refuses it fails the run, which runs again later, instead of
	// holding the task and its slot for ever.
	ctx, cancel := context.WithTimeout(p.ctx, time.Minute)
	defer cancel()
	if err := p.x.core.Finish(ctx, &delivery.Outcome{Letters: []*kgo.Record{letter}}); err != nil {
		p.fail(delivery.New(delivery.Transient, "dead_letter", err))
		return
	}
	p.tooLarge.Add(1)
}

func (p *taskProducer) fail(err error) { p.err.CompareAndSwap(nil, &err) }

// failed returns the run's first produce failure, nil while there is none.
func (p *taskProducer) failed() error {
	if e := p.err.Load(); e != nil {
		return *e
	}
	return nil
}

// wait returns once every record is acknowledged or failed, with the first failure.
func (p *taskProducer) wait() error {
	p.wg.Wait()
	return p.failed()
}
