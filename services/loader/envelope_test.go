package main

import (
	"bytes"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	sluicev1 "github.com/sluicedata/sluice/proto/sluice/v1"
)

// FuzzEnvelope checks decodeEnvelope against proto.Unmarshal: both accept the same bytes, and read
// the same fields from them.
func FuzzEnvelope(f *testing.F) {
	for _, r := range []*sluicev1.Record{
		{JobId: "j", TaskId: "t", Key: "k", Payload: []byte(`{"a":1}`), ExtractedAt: timestamppb.New(time.Unix(1700000000, 5)),
			Page: 3, IndexInPage: 4, Table: "users", KeyError: "", Run: "r", SchemaId: "abc"},
		{Key: "ключ", KeyError: "no key", ExtractedAt: &timestamppb.Timestamp{Seconds: -5, Nanos: -1}},
		{},
	} {
		b, _ := proto.Marshal(r)
		f.Add(b)
	}
	f.Add([]byte{0x1a, 0x02, 0xff, 0xfe})                    // a key that is not UTF-8
	f.Add(protowire.AppendTag(nil, 3, protowire.VarintType)) // a key of the wrong wire type
	f.Add(append(protowire.AppendTag(nil, 99, protowire.BytesType), 0x01, 'x'))
	f.Fuzz(func(t *testing.T, b []byte) {
		var want sluicev1.Record
		perr := proto.Unmarshal(b, &want)
		var got envelope
		err := decodeEnvelope(b, interner{}, &got)
		if (perr == nil) != (err == nil) {
			t.Fatalf("proto says %v, decodeEnvelope says %v", perr, err)
		}
		if err != nil {
			return
		}
		if got.job != want.JobId || got.task != want.TaskId || got.key != want.Key || !bytes.Equal(got.payload, want.Payload) ||
			got.table != want.Table || got.keyError != want.KeyError || got.run != want.Run || got.schema != want.SchemaId ||
			!got.extractedAt.Equal(want.ExtractedAt.AsTime()) {
			t.Fatalf("decoded %+v, proto %+v", got, &want)
		}
	})
}
