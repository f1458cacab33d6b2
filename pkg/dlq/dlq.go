package dlq

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sluicedata/sluice/pkg/kafka"
	sluicev1 "github.com/sluicedata/sluice/proto/sluice/v1"
)

// Header names carried by every dead letter.
const (
	HeaderStage             = "sluice-stage"
	HeaderErrorClass        = "sluice-error-class"
	HeaderJobID             = "sluice-job-id"
	HeaderTaskID            = "sluice-task-id"
	HeaderAttempts          = "sluice-attempts"
	HeaderOriginalTopic     = "sluice-original-topic"
	HeaderOriginalPartition = "sluice-original-partition"
	HeaderOriginalOffset    = "sluice-original-offset"
	// HeaderReplayOf marks a task or a record that a replay put back: the dead letter's
	// topic/partition/offset.
	HeaderReplayOf = "sluice-replay-of"
)

// Stage names as they appear in headers and metric labels.
func Stage(s sluicev1.DeadLetter_Stage) string {
	switch s {
	case sluicev1.DeadLetter_STAGE_EXTRACT:
		return "extract"
	case sluicev1.DeadLetter_STAGE_LOAD:
		return "load"
	default:
		return "unknown"
	}
}

// Letter is what a stage knows about a failure; Record turns it into a Kafka record.
type Letter struct {
	Stage      sluicev1.DeadLetter_Stage
	ErrorClass string
	// Err is the failure; its text must hold no secret.
	Err      error
	Attempts int
	// Original is the message that failed: a task or a raw record.
	Original *kgo.Record
	JobID    string
	TaskID   string
	// Payload is what to keep of the failure; nil means the original record's value.
	Payload      []byte
	HTTPStatus   int
	ResponseHead []byte
	FailedAt     time.Time
	// Record is a record's envelope on the raw topic without its payload (which is Payload): what a
	// replay puts back together. Nil for a task's letter, and for the extractor's too_large letters,
	// which cannot keep the payload the raw topic refused.
	Record *sluicev1.Record
}

// MaxPayload is the most a letter carries of the original bytes, whatever the stage allows: with its
// context and headers the letter stays under the topic's default 1,000,012-byte message limit.
const MaxPayload = 960 << 10

// Record builds the dead-letter record for topic. Payloads longer than maxPayload (and MaxPayload)
// are replaced by a stub carrying their size and sha256, so that a letter always fits the topic.
func Record(topic string, l Letter, maxPayload int) (*kgo.Record, error) {
	maxPayload = min(maxPayload, MaxPayload)
	payload := l.Payload
	if payload == nil && l.Original != nil {
		payload = l.Original.Value
	}
	sum := sha256.Sum256(payload)
	// Protobuf strings must be UTF-8: an error that echoes a record's bytes must not make the letter
	// impossible to write.
	valid := func(s string) string { return strings.ToValidUTF8(s, "\uFFFD") }
	msg := &sluicev1.DeadLetter{
		Stage:         l.Stage,
		ErrorClass:    valid(l.ErrorClass),
		Attempts:      uint32(max(l.Attempts, 0)),
		JobId:         valid(l.JobID),
		TaskId:        valid(l.TaskID),
		PayloadSize:   uint64(len(payload)),
		PayloadSha256: sum[:],
		HttpStatus:    uint32(max(l.HTTPStatus, 0)),
		ResponseHead:  l.ResponseHead,
		FailedAt:      timestamppb.New(l.FailedAt),
		Record:        l.Record,
	}
	if l.Err != nil {
		msg.ErrorMessage = valid(l.Err.Error())
	}
	if l.Record != nil && len(l.Record.Payload) > 0 {
		return nil, fmt.Errorf("dead letter of record %q: its envelope must come without the payload", l.Record.Key)
	}
	if len(payload) > maxPayload {
		msg.Truncated = true
	} else {
		msg.Payload = payload
	}
	headers := []kgo.RecordHeader{
		{Key: HeaderStage, Value: []byte(Stage(l.Stage))},
		{Key: HeaderErrorClass, Value: []byte(l.ErrorClass)},
		{Key: HeaderJobID, Value: []byte(l.JobID)},
		{Key: HeaderTaskID, Value: []byte(l.TaskID)},
		{Key: HeaderAttempts, Value: []byte(strconv.Itoa(l.Attempts))},
	}
	var key []byte
	if o := l.Original; o != nil {
		msg.OriginalTopic, msg.OriginalPartition, msg.OriginalOffset, msg.OriginalKey = o.Topic, o.Partition, o.Offset, o.Key
		key = o.Key
		headers = append(headers,
			kgo.RecordHeader{Key: HeaderOriginalTopic, Value: []byte(o.Topic)},
			kgo.RecordHeader{Key: HeaderOriginalPartition, Value: []byte(strconv.Itoa(int(o.Partition)))},
			kgo.RecordHeader{Key: HeaderOriginalOffset, Value: []byte(strconv.FormatInt(o.Offset, 10))},
		)
	}
	value, err := proto.Marshal(msg)
	if err != nil {
		return nil, fmt.Errorf("encode dead letter: %w", err)
	}
	return &kgo.Record{Topic: topic, Key: key, Value: value, Headers: headers}, nil
}

// Decode reads a dead letter from a record of the dead-letter topic.
func Decode(r *kgo.Record) (*sluicev1.DeadLetter, error) {
	var dl sluicev1.DeadLetter
	if err := proto.Unmarshal(r.Value, &dl); err != nil {
		return nil, fmt.Errorf("decode dead letter at %s/%d@%d: %w", r.Topic, r.Partition, r.Offset, err)
	}
	return &dl, nil
}

// Produce writes records synchronously and returns only once the broker acknowledged every one, or
// ctx ended. A dead letter that cannot be written is never dropped: the caller commits nothing and
// tries again.
func Produce(ctx context.Context, cl *kgo.Client, recs ...*kgo.Record) error {
	if len(recs) == 0 {
		return nil
	}
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		return fmt.Errorf("produce %d dead letters: %w", len(recs), err)
	}
	return nil
}

// Fit returns r when it fits in maxBytes, else the same letter made smaller, step by step, until it
// does: first without the payload and the response head it carries (their size and sha256 stay,
// Truncated is set) and with its message cut; then without the original record's key too (a key can
// be as large as the raw topic allows), the letter's own Kafka key with it; last, a marker that says
// where the original is (topic, partition, offset) and why it failed, in a few hundred bytes. A
// letter too large for its topic would be refused forever, and a member that cannot write it cannot
// commit past it: what it says of the failure matters more than the copy, and the raw record is where
// the marker points.
func Fit(r *kgo.Record, maxBytes int) (*kgo.Record, error) {
	if maxBytes <= 0 || kafka.RecordBytes(r) <= maxBytes {
		return r, nil
	}
	var dl sluicev1.DeadLetter
	if err := proto.Unmarshal(r.Value, &dl); err != nil {
		return nil, fmt.Errorf("decode dead letter to fit it: %w", err)
	}
	fitted := *r
	steps := []func(){
		func() {
			// Without the payload the record's envelope is no use to a replay, and its key may be large.
			dl.Payload, dl.ResponseHead, dl.Record, dl.Truncated = nil, nil, nil, true
			dl.ErrorMessage = cutUTF8(dl.ErrorMessage, 4096)
		},
		func() {
			if len(dl.OriginalKey) > 0 {
				dl.ErrorMessage = cutUTF8(dl.ErrorMessage, 1024) + fmt.Sprintf(" (the original key, %d bytes, is left out: the letter would not fit)", len(dl.OriginalKey))
			}
			dl.OriginalKey, fitted.Key = nil, nil
		},
		func() {
			dl = sluicev1.DeadLetter{Stage: dl.Stage, ErrorClass: cutUTF8(dl.ErrorClass, 64), Attempts: dl.Attempts,
				JobId: cutUTF8(dl.JobId, 128), TaskId: cutUTF8(dl.TaskId, 128), OriginalTopic: cutUTF8(dl.OriginalTopic, 249),
				OriginalPartition: dl.OriginalPartition, OriginalOffset: dl.OriginalOffset, PayloadSize: dl.PayloadSize,
				PayloadSha256: dl.PayloadSha256, Truncated: true, FailedAt: dl.FailedAt,
				ErrorMessage: cutUTF8(dl.ErrorMessage, 256) + " (only a marker: the letter would not fit; the original is at its topic, partition and offset)"}
		},
	}
	for _, step := range steps {
		step()
		value, err := proto.Marshal(&dl)
		if err != nil {
			return nil, fmt.Errorf("encode dead letter: %w", err)
		}
		fitted.Value = value
		if kafka.RecordBytes(&fitted) <= maxBytes {
			break
		}
	}
	// The marker is as small as a letter gets: it goes as it is even to a topic that takes less.
	return &fitted, nil
}

// cutUTF8 shortens s to at most n bytes, on a rune boundary.
func cutUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// Summary is a dead letter without its payload: what lists of letters show.
type Summary struct {
	Partition         int32     `json:"partition"`
	Offset            int64     `json:"offset"`
	Stage             string    `json:"stage"`
	Class             string    `json:"error_class"`
	Message           string    `json:"error_message"`
	Attempts          uint32    `json:"attempts"`
	JobID             string    `json:"job_id"`
	TaskID            string    `json:"task_id"`
	OriginalTopic     string    `json:"original_topic"`
	OriginalPartition int32     `json:"original_partition"`
	OriginalOffset    int64     `json:"original_offset"`
	PayloadSize       uint64    `json:"payload_size"`
	PayloadSHA256     string    `json:"payload_sha256"`
	Truncated         bool      `json:"truncated"`
	HTTPStatus        uint32    `json:"http_status,omitempty"`
	FailedAt          time.Time `json:"failed_at"`
}

// Summarize is the summary of dl, read from r.
func Summarize(r *kgo.Record, dl *sluicev1.DeadLetter) Summary {
	return Summary{Partition: r.Partition, Offset: r.Offset, Stage: Stage(dl.Stage), Class: dl.ErrorClass,
		Message: dl.ErrorMessage, Attempts: dl.Attempts, JobID: dl.JobId, TaskID: dl.TaskId,
		OriginalTopic: dl.OriginalTopic, OriginalPartition: dl.OriginalPartition, OriginalOffset: dl.OriginalOffset,
		PayloadSize: dl.PayloadSize, PayloadSHA256: hex.EncodeToString(dl.PayloadSha256), Truncated: dl.Truncated,
		HTTPStatus: dl.HttpStatus, FailedAt: dl.FailedAt.AsTime()}
}
