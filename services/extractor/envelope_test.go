package main

import (
	"bytes"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	sluicev1 "github.com/sluicedata/sluice/proto/sluice/v1"
)

// FuzzAppendRecord: appendRecord writes the bytes proto.Marshal writes, deterministic, and refuses
// what it refuses; the key is where it says.
func FuzzAppendRecord(f *testing.F) {
	f.Add("job", "job-t0", "k1", []byte(`{"id":1}`), int64(1700000000), int32(5), uint64(3000), uint32(7), "users", "", "r1", "3fa2b1c4d5e6f708", true)
	f.Add("", "", "", []byte(nil), int64(0), int32(0), uint64(0), uint32(0), "", "key field \"id\" is missing", "", "", false)
	f.Add("j", "t", "\xff", []byte{0}, int64(-1), int32(-5), uint64(1<<63), uint32(1<<31), "t", "", "", "", false)
	f.Fuzz(func(t *testing.T, job, task, key string, payload []byte, secs int64, nanos int32, page uint64, idx uint32, table, keyErr, run, schema string, checked bool) {
		for _, ts := range []*timestamppb.Timestamp{nil, {Seconds: secs, Nanos: nanos}} {
			r := &sluicev1.Record{JobId: job, TaskId: task, Key: key, Payload: payload, ExtractedAt: ts, Page: page, IndexInPage: idx,
				Table: table, KeyError: keyErr, Run: run, SchemaId: schema, Checked: checked}
			want, err := proto.MarshalOptions{Deterministic: true}.Marshal(r)
			got, keyAt, ok := appendRecord(nil, r)
			switch {
			case ok != (err == nil):
				t.Fatalf("appendRecord ok %v, proto.Marshal error %v", ok, err)
			case !ok:
			case !bytes.Equal(got, want):
				t.Fatalf("appendRecord(%v)\n = %x\nproto.Marshal %x", r, got, want)
			case string(got[keyAt:keyAt+len(key)]) != key:
				t.Fatalf("key at %d is %q, want %q", keyAt, got[keyAt:keyAt+len(key)], key)
			}
		}
	})
}

func BenchmarkAppendRecord(b *testing.B) {
	r := &sluicev1.Record{JobId: "job-abcdef", TaskId: "job-abcdef-t3", Key: "123456", Payload: make([]byte, 300),
		ExtractedAt: timestamppb.Now(), Page: 12000, IndexInPage: 17, Table: "users", Run: "r1"}
	b.Run("appendRecord", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			appendRecord(make([]byte, 0, recordSize(r)), r)
		}
	})
	b.Run("proto.Marshal", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_, _ = proto.Marshal(r)
		}
	})
}
