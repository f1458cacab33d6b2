package main

import (
	"errors"
	"fmt"
	"time"
	"unicode/utf8"
	"unsafe"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/sluicedata/sluice/pkg/dlq"
	"github.com/sluicedata/sluice/pkg/events"
)

// envelope is what the loader uses of a sluice.v1.Record, read straight from the wire: the key and
// the payload are slices of the Kafka record's value, not copies (the item keeps the record), and
// the strings that repeat from record to record (job, task, run, table, schema) are interned, so
// that a record costs no allocation. It reads what proto.Unmarshal reads, and refuses what it
// refuses (malformed wire data, strings that are not UTF-8).
type envelope struct {
	job, task, run, table, schema string
	key, keyError                 string
	payload                       []byte
	extractedAt                   time.Time
	// checked is the extractor's word that the payload passed record.Check (Record.checked).
	checked bool
}

// Field numbers of sluice.v1.Record and google.protobuf.Timestamp.
const (
	fieldJob         = 1
	fieldTask        = 2
	fieldKey         = 3
	fieldPayload     = 4
	fieldExtractedAt = 5
	fieldTable       = 8
	fieldKeyError    = 9
	fieldRun         = 10
	fieldSchema      = 11
	fieldChecked     = 12
)

var errEnvelope = errors.New("malformed protobuf")

// interner keeps one copy of each repeating string; past maxInterned it starts again. The strings
// it holds were valid UTF-8 when they came; the last one of each field is looked at first, as a
// task's records come one after another with the same job, task, run, table and schema.
type interner struct {
	seen map[string]string
	last [fieldSchema + 1]string
}

const maxInterned = 4096

// get returns the string of b, the value of field num, and false when b is not valid UTF-8.
func (in *interner) get(num protowire.Number, b []byte) (string, bool) {
	if l := in.last[num]; len(l) == len(b) && l == string(b) {
		return l, true
	}
	s, ok := in.seen[string(b)]
	if !ok {
		if !utf8.Valid(b) {
			return "", false
		}
		if in.seen == nil || len(in.seen) >= maxInterned {
			in.seen = map[string]string{}
		}
		s = string(b)
		in.seen[s] = s
	}
	in.last[num] = s
	return s, true
}

// decodeEnvelope reads b into env, which it resets first.
func decodeEnvelope(b []byte, in *interner, env *envelope) error {
	*env = envelope{}
	var seconds, nanos int64
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return fmt.Errorf("%w: %v", errEnvelope, protowire.ParseError(n))
		}
		if !num.IsValid() {
			return fmt.Errorf("%w: field number %d", errEnvelope, num)
		}
		b = b[n:]
		switch {
		case typ == protowire.BytesType && (num == fieldJob || num == fieldTask || num == fieldKey || num == fieldPayload ||
			num == fieldExtractedAt || num == fieldTable || num == fieldKeyError || num == fieldRun || num == fieldSchema):
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return fmt.Errorf("%w: %v", errEnvelope, protowire.ParseError(n))
			}
			b = b[n:]
			ok := true // a string field is valid UTF-8
			switch num {
			case fieldJob:
				env.job, ok = in.get(num, v)
			case fieldTask:
				env.task, ok = in.get(num, v)
			case fieldRun:
				env.run, ok = in.get(num, v)
			case fieldTable:
				env.table, ok = in.get(num, v)
			case fieldSchema:
				env.schema, ok = in.get(num, v)
			case fieldKey:
				env.key, ok = unsafe.String(unsafe.SliceData(v), len(v)), utf8.Valid(v)
			case fieldKeyError:
				env.keyError, ok = string(v), utf8.Valid(v)
			case fieldPayload:
				env.payload = v
			case fieldExtractedAt:
				var err error
				if seconds, nanos, err = decodeTimestamp(v, seconds, nanos); err != nil {
					return err
				}
			}
			if !ok {
				return fmt.Errorf("%w: field %d is not UTF-8", errEnvelope, num)
			}
		case typ == protowire.VarintType && num == fieldChecked:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return fmt.Errorf("%w: %v", errEnvelope, protowire.ParseError(n))
			}
			b = b[n:]
			env.checked = v != 0
		default: // another field, or one of another wire type: proto keeps it as unknown
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return fmt.Errorf("%w: %v", errEnvelope, protowire.ParseError(n))
			}
			b = b[n:]
		}
	}
	env.extractedAt = time.Unix(seconds, nanos).UTC()
	return nil
}

// decodeTimestamp reads a google.protobuf.Timestamp; fields it repeats merge, as proto's do.
func decodeTimestamp(b []byte, seconds, nanos int64) (int64, int64, error) {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return 0, 0, fmt.Errorf("%w: %v", errEnvelope, protowire.ParseError(n))
		}
		if !num.IsValid() {
			return 0, 0, fmt.Errorf("%w: timestamp field number %d", errEnvelope, num)
		}
		b = b[n:]
		if (num == 1 || num == 2) && typ == protowire.VarintType {
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return 0, 0, fmt.Errorf("%w: %v", errEnvelope, protowire.ParseError(n))
			}
			b = b[n:]
			if num == 1 {
				seconds = int64(v)
			} else {
				nanos = int64(int32(v))
			}
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return 0, 0, fmt.Errorf("%w: %v", errEnvelope, protowire.ParseError(n))
		}
		b = b[n:]
	}
	return seconds, nanos, nil
}

// decoder makes items of raw records. strings interns the envelopes' repeating strings,
// validTables are the table names found valid, and jobRuns the jobs' names and planning times by
// job id: each only grows up to maxInterned. env is the envelope it decodes into, record after
// record.
type decoder struct {
	strings        *interner
	validTables    map[string]bool
	jobRuns        map[string]jobRun
	maxRecordBytes int
	env            envelope
}

func newDecoder(maxRecordBytes int) decoder {
	return decoder{strings: &interner{}, validTables: map[string]bool{}, maxRecordBytes: maxRecordBytes}
}

// decode makes it of r, polled in ownership owner at polled, and checks it: it returns the
// dead-letter class and the reason of a record that cannot be loaded (validate).
func (d *decoder) decode(r *kgo.Record, owner *partition, polled time.Time, it *item) (class string, err error) {
	env := &d.env
	if derr := decodeEnvelope(r.Value, d.strings, env); derr != nil {
		*env = envelope{} // the letter keeps the original bytes instead
		class, err = "bad_envelope", fmt.Errorf("raw record is not a sluice.v1.Record: %w", derr)
	} else {
		// A record put back by a replay is checked whatever its envelope says.
		env.checked = env.checked && !replayed(r)
		class, err = validate(env, d.validTables, d.maxRecordBytes)
	}
	// The key and payload are slices of r.Value, which the item keeps (not r).
	*it = item{partition: r.Partition, offset: r.Offset, owner: owner, rawKey: r.Key, raw: r.Value, job: env.job, task: env.task,
		run: env.run, table: env.table, schema: env.schema, key: env.key, payload: env.payload,
		extractedAt: env.extractedAt, polled: polled}
	it.jobName, it.planned = d.jobRun(env.job)
	return class, err
}

// jobRun returns the name of a job and when the run was planned, from its id (events.ParseJobID):
// the id whole, and the zero time, for an id of another form.
func (d *decoder) jobRun(id string) (string, time.Time) {
	if r, ok := d.jobRuns[id]; ok {
		return r.name, r.planned
	}
	if d.jobRuns == nil || len(d.jobRuns) >= maxInterned {
		d.jobRuns = map[string]jobRun{}
	}
	name, planned, _ := events.ParseJobID(id)
	d.jobRuns[id] = jobRun{name, planned}
	return name, planned
}

// jobRun is a job's name and when a run of it was planned.
type jobRun struct {
	name    string
	planned time.Time
}

// replayed reports whether r was put back by a replay of its dead letter.
func replayed(r *kgo.Record) bool {
	for _, h := range r.Headers {
		if h.Key == dlq.HeaderReplayOf {
			return true
		}
	}
	return false
}
