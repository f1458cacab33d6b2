package main

import (
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"

	sluicev1 "github.com/sluicedata/sluice/proto/sluice/v1"
)

// appendRecord appends r's wire encoding to b as proto.Marshal encodes it (fields in number
// order, zero values left out), without reflection, and returns where the key's bytes are in it.
// ok is false for a string field that is not valid UTF-8, which proto.Marshal refuses.
func appendRecord(b []byte, r *sluicev1.Record) (out []byte, keyAt int, ok bool) {
	for _, s := range [...]string{r.JobId, r.TaskId, r.Key, r.Table, r.KeyError, r.Run, r.SchemaId} {
		if !utf8.ValidString(s) {
			return b, 0, false
		}
	}
	b = appendString(b, 1, r.JobId)
	b = appendString(b, 2, r.TaskId)
	if r.Key != "" {
		b = protowire.AppendTag(b, 3, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(len(r.Key)))
		keyAt = len(b)
		b = append(b, r.Key...)
	}
	if len(r.Payload) > 0 {
		b = protowire.AppendTag(b, 4, protowire.BytesType)
		b = protowire.AppendBytes(b, r.Payload)
	}
	if ts := r.ExtractedAt; ts != nil {
		n := 0
		if ts.Seconds != 0 {
			n += 1 + protowire.SizeVarint(uint64(ts.Seconds))
		}
		if ts.Nanos != 0 {
			n += 1 + protowire.SizeVarint(uint64(int64(ts.Nanos)))
		}
		b = protowire.AppendTag(b, 5, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(n))
		if ts.Seconds != 0 {
			b = protowire.AppendTag(b, 1, protowire.VarintType)
			b = protowire.AppendVarint(b, uint64(ts.Seconds))
		}
		if ts.Nanos != 0 {
			b = protowire.AppendTag(b, 2, protowire.VarintType)
			b = protowire.AppendVarint(b, uint64(int64(ts.Nanos)))
		}
	}
	if r.Page != 0 {
		b = protowire.AppendTag(b, 6, protowire.VarintType)
		b = protowire.AppendVarint(b, r.Page)
	}
	if r.IndexInPage != 0 {
		b = protowire.AppendTag(b, 7, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(r.IndexInPage))
	}
	b = appendString(b, 8, r.Table)
	b = appendString(b, 9, r.KeyError)
	b = appendString(b, 10, r.Run)
	b = appendString(b, 11, r.SchemaId)
	if r.Checked {
		b = protowire.AppendTag(b, 12, protowire.VarintType)
		b = protowire.AppendVarint(b, 1)
	}
	return b, keyAt, true
}

func appendString(b []byte, num protowire.Number, s string) []byte {
	if s == "" {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendString(b, s)
}

// recordSize is about the encoded size of r: enough that appendRecord rarely grows its buffer.
func recordSize(r *sluicev1.Record) int {
	return 64 + len(r.JobId) + len(r.TaskId) + len(r.Key) + len(r.Payload) + len(r.Table) + len(r.KeyError) + len(r.Run) + len(r.SchemaId)
}
