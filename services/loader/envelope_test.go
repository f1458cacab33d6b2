package main

import (
	"bytes"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sluicedata/sluice/pkg/dlq"
	sluicev1 "github.com/sluicedata/sluice/proto/sluice/v1"
)

// FuzzEnvelope checks decodeEnvelope against proto.Unmarshal: both accept the same bytes, and read
// the same fields from them.
func FuzzEnvelope(f *testing.F) {
	for _, r := range []*sluicev1.Record{
		{JobId: "j", TaskId: "t", Key: "k", Payload: []byte(`{"a":1}`), ExtractedAt: timestamppb.New(time.Unix(1700000000, 5)),
			Page: 3, IndexInPage: 4, Table: "users", KeyError: "", Run: "r", SchemaId: "abc", Checked: true},
		{Key: "ключ", KeyError: "no key", ExtractedAt: &timestamppb.Timestamp{Seconds: -5, Nanos: -1}},
		{},
	} {
		b, _ := proto.Marshal(r)
		f.Add(b)
	}
	f.Add([]byte{0x1a, 0x02, 0xff, 0xfe})                    // a key that is not UTF-8
	f.Add(protowire.AppendTag(nil, 3, protowire.VarintType)) // a key of the wrong wire type
	f.Add(append(protowire.AppendTag(nil, 99, protowire.BytesType), 0x01, 'x'))
	f.Add(append(protowire.AppendTag(nil, 12, protowire.VarintType), 0x02)) // checked, as any non-zero varint
	f.Fuzz(func(t *testing.T, b []byte) {
		var want sluicev1.Record
		perr := proto.Unmarshal(b, &want)
		var got envelope
		err := decodeEnvelope(b, &interner{}, &got)
		if (perr == nil) != (err == nil) {
			t.Fatalf("proto says %v, decodeEnvelope says %v", perr, err)
		}
		if err != nil {
			return
		}
		if got.job != want.JobId || got.task != want.TaskId || got.key != want.Key || !bytes.Equal(got.payload, want.Payload) ||
			got.table != want.Table || got.keyError != want.KeyError || got.run != want.Run || got.schema != want.SchemaId ||
			!got.extractedAt.Equal(want.ExtractedAt.AsTime()) || got.checked != want.Checked {
			t.Fatalf("decoded %+v, proto %+v", got, &want)
		}
	})
}

// TestDecodeTrustsTheExtractorsCheck: a record the extractor marked checked is not checked again,
// so a payload the check would refuse goes through (the mark is the extractor's alone); unmarked,
// or put back by a replay, it is checked and refused with its class.
func TestDecodeTrustsTheExtractorsCheck(t *testing.T) {
	bad := []byte(`{"id":1,"id":2}`)
	for _, tt := range []struct {
		name     string
		checked  bool
		replayed bool
		class    string
	}{
		{"marked", true, false, ""},
		{"unmarked", false, false, "duplicate_key"},
		{"marked, replayed", true, true, "duplicate_key"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			v, _ := proto.Marshal(&sluicev1.Record{JobId: "j", TaskId: "t", Key: "1", Payload: bad, Table: "users", Checked: tt.checked})
			r := &kgo.Record{Key: []byte("1"), Value: v}
			if tt.replayed {
				r.Headers = []kgo.RecordHeader{{Key: dlq.HeaderReplayOf, Value: []byte("dlq/0/7")}}
			}
			d := newDecoder(1 << 20)
			var it item
			class, _ := d.decode(r, nil, time.Now(), &it)
			if class != tt.class {
				t.Fatalf("class %q, want %q", class, tt.class)
			}
		})
	}
}
