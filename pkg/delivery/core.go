package delivery

import (
	"context"
	"errors"
	"fmt"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicedata/sluice/pkg/dlq"
	"github.com/sluicedata/sluice/pkg/events"
	"github.com/sluicedata/sluice/pkg/kafka"
	"github.com/sluicedata/sluice/pkg/pipeline"
	sluicev1 "github.com/sluicedata/sluice/proto/sluice/v1"
)

// Outcome is what a stage did with one unit of work, once the work's own side effect (records
// produced, rows inserted) is acknowledged.
type Outcome struct {
	// Letters are the dead letters of what failed; they are acknowledged before anything else.
	Letters []*kgo.Record
	// Follow is the work that continues this unit (a crawl's next page, on the tasks topic),
	// acknowledged after the letters: the events may then name it. Once acknowledged, each of
	// these records holds the partition and offset it was written at (the caller keeps a pointer:
	// Finish clears the slice).
	Follow []*kgo.Record
	// Events are the job events that report the work; published after the letters and the follow-up.
	Events []*sluicev1.JobEvent
	// Commit makes the input done (the loader commits its batch, the extractor marks its task
	// done); it runs last, and only when everything before it is acknowledged. May be nil.
	Commit func(ctx context.Context) error
}

// Core finishes units of work in the one safe order, with the one retry loop.
type Core struct {
	cl     *kgo.Client
	retry  *Retrier
	events string
	// maxBytes is the largest record the dead-letter and events topics take.
	maxBytes int
	backoff  pipeline.Backoff
}

// NewCore returns a core that writes dead letters and events with cl. maxBytes is the largest
// record the dead-letter and events topics accept (their max.message.bytes).
func NewCore(cl *kgo.Client, retry *Retrier, eventsTopic string, maxBytes int, backoff pipeline.Backoff) *Core {
	return &Core{cl: cl, retry: retry, events: eventsTopic, maxBytes: maxBytes, backoff: backoff}
}

// Retrier is the core's retry loop, for the stages' own operations.
func (c *Core) Retrier() *Retrier { return c.retry }

// Finish delivers out: dead letters acknowledged, then the follow-up work, then events, then the commit. Each
// step is retried while its failure is transient and ctx lasts; a later step never runs before an
// earlier one is acknowledged. It returns ctx's error, or a fatal error that must stop the member.
// Each step is cleared from out once acknowledged, so that an outcome whose Finish did not return
// nil can be finished later from where it stopped.
func (c *Core) Finish(ctx context.Context, out *Outcome) error {
	forever := Policy{Backoff: c.backoff}
	if len(out.Letters) > 0 {
		for i, r := range out.Letters {
			fitted, err := dlq.Fit(r, c.maxBytes)
			if err != nil {
				return New(Fatal, "too_large", err)
			}
			out.Letters[i] = fitted
		}
		if _, err := c.retry.Do(ctx, "dead_letter", forever, func(int) error {
			return untilFatal(ClassifyKafka(dlq.Produce(ctx, c.cl, fresh(out.Letters)...)))
		}); err != nil {
			return fmt.Errorf("produce dead letters: %w", err)
		}
		out.Letters = nil
	}
	if len(out.Follow) > 0 {
		if _, err := c.retry.Do(ctx, "follow", forever, func(int) error {
			recs := fresh(out.Follow)
			if err := c.cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
				return untilFatal(ClassifyKafka(err))
			}
			for i, r := range recs {
				out.Follow[i].Partition, out.Follow[i].Offset = r.Partition, r.Offset
			}
			return nil
		}); err != nil {
			return fmt.Errorf("publish the work that follows: %w", err)
		}
		out.Follow = nil
	}
	if len(out.Events) > 0 {
		recs := make([]*kgo.Record, 0, len(out.Events))
		for _, ev := range out.Events {
			r, err := events.Record(c.events, ev)
			if err != nil {
				return New(Fatal, "bad_event", err)
			}
			if size := kafka.RecordBytes(r); size > c.maxBytes {
				return New(Fatal, "too_large", fmt.Errorf("job event of %d bytes is larger than the events topic takes (%d)", size, c.maxBytes))
			}
			recs = append(recs, r)
		}
		if _, err := c.retry.Do(ctx, "event", forever, func(int) error {
			return untilFatal(ClassifyKafka(c.cl.ProduceSync(ctx, fresh(recs)...).FirstErr()))
		}); err != nil {
			return fmt.Errorf("publish job events: %w", err)
		}
		out.Events = nil
	}
	if out.Commit != nil {
		if _, err := c.retry.Do(ctx, "commit", forever, func(int) error { return out.Commit(ctx) }); err != nil {
			return fmt.Errorf("commit: %w", err)
		}
		out.Commit = nil
	}
	return nil
}

// Handle runs one unit of work: work is retried under pol while it fails transiently. Its outcome,
// or when it failed for good the outcome that fail makes of the error (its dead letter and event),
// is then finished. A fatal error, from work or from fail, is returned: the member must stop.
func (c *Core) Handle(ctx context.Context, op string, pol Policy, work func(ctx context.Context, attempt int) (Outcome, error),
	fail func(err error, attempts int) (Outcome, error)) error {
	var out Outcome
	attempts, err := c.retry.Do(ctx, op, pol, func(attempt int) error {
		var err error
		out, err = work(ctx, attempt)
		return err
	})
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if err != nil {
		if ClassOf(err) == Fatal {
			return err
		}
		if out, err = fail(err, attempts); err != nil {
			return err
		}
	}
	return c.Finish(ctx, &out)
}

// fresh copies records for one more attempt: franz-go owns a record it was given until it is
// acknowledged or failed, and one whose context ended may still be in a request.
func fresh(recs []*kgo.Record) []*kgo.Record {
	out := make([]*kgo.Record, len(recs))
	for i, r := range recs {
		out[i] = &kgo.Record{Topic: r.Topic, Key: r.Key, Value: r.Value, Headers: r.Headers}
	}
	return out
}

// untilFatal makes every failure but a fatal one transient: a dead letter or an event that was fitted
// to its topic must be written before anything else happens, however long that takes.
func untilFatal(err error) error {
	if err == nil || ClassOf(err) == Fatal {
		return err
	}
	return &Error{Class: Transient, Reason: ReasonOf(err), Err: err}
}

// ClassifyKafka is the class of a failed produce or commit: authorization and unknown topics are
// fatal (the member cannot work until someone acts), a record the broker refuses for its size is
// data, and everything else is transient.
func ClassifyKafka(err error) error {
	if err == nil {
		return nil
	}
	var ke *kerr.Error
	switch {
	case errors.Is(err, kerr.MessageTooLarge), errors.Is(err, kerr.RecordListTooLarge):
		return New(Data, "too_large", err)
	case errors.Is(err, kerr.UnknownTopicOrPartition), errors.Is(err, kerr.TopicAuthorizationFailed),
		errors.Is(err, kerr.GroupAuthorizationFailed), errors.Is(err, kerr.ClusterAuthorizationFailed),
		errors.Is(err, kerr.TransactionalIDAuthorizationFailed), errors.Is(err, kerr.SaslAuthenticationFailed),
		errors.Is(err, kerr.InvalidTopicException):
		return New(Fatal, "kafka_"+kafkaReason(err), err)
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return err
	case errors.As(err, &ke):
		return New(Transient, "kafka_error", err)
	default:
		return New(Transient, "kafka_unavailable", err)
	}
}

func kafkaReason(err error) string {
	switch {
	case errors.Is(err, kerr.UnknownTopicOrPartition), errors.Is(err, kerr.InvalidTopicException):
		return "unknown_topic"
	default:
		return "unauthorized"
	}
}
