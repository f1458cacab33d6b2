package main

import (
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sluicedata/sluice/pkg/chsink"
	"github.com/sluicedata/sluice/pkg/demosource"
	sluicev1 "github.com/sluicedata/sluice/proto/sluice/v1"
)

// BenchmarkDecodeValidate measures what the loader does with each record before the insert:
// decode the envelope, validate the payload, add the row.
func BenchmarkDecodeValidate(b *testing.B) {
	values := make([][]byte, 1000)
	for i := range values {
		values[i], _ = proto.Marshal(&sluicev1.Record{JobId: "users-20261125t144349-79b0da", TaskId: "users-20261125t144349-79b0da-t0003",
			Key: "123456", Payload: demosource.Record(int64(i), 300), ExtractedAt: timestamppb.Now(), Table: "users", Run: "a1b2c3d4e5f6"})
	}
	b.ReportAllocs()
	for b.Loop() {
		rows := chsink.Raw.NewBlock(len(values))
		var env envelope
		in, tables := &interner{}, map[string]bool{}
		for _, v := range values {
			if err := decodeEnvelope(v, in, &env); err != nil {
				b.Fatal(err)
			}
			if class, _ := validate(&env, tables, 1<<20); class != "" {
				b.Fatal(class)
			}
			if err := rows.Add(&chsink.Input{Key: env.key, Record: env.payload, Job: env.job, Task: env.task,
				ExtractedAt: env.extractedAt}); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(values)), "ns/record")
}

// BenchmarkDecodeEnvelope measures reading envelopes alone, a task's records one after another.
func BenchmarkDecodeEnvelope(b *testing.B) {
	values := make([][]byte, 1000)
	for i := range values {
		values[i], _ = proto.Marshal(&sluicev1.Record{JobId: "users-20261125t144349-79b0da", TaskId: "users-20261125t144349-79b0da-t0003",
			Key: "123456", Payload: demosource.Record(int64(i), 300), ExtractedAt: timestamppb.Now(), Table: "users", Run: "a1b2c3d4e5f6", Checked: true})
	}
	in := &interner{}
	var env envelope
	b.ReportAllocs()
	for b.Loop() {
		for _, v := range values {
			if err := decodeEnvelope(v, in, &env); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(values)), "ns/record")
}
