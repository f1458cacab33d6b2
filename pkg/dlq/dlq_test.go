package dlq

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicedata/sluice/pkg/kafka"
	sluicev1 "github.com/sluicedata/sluice/proto/sluice/v1"
)

// TestFitNeverFails: a letter too large for its topic is made smaller until it fits, down to a
// marker pointing at the original; no letter is refused, so no member stops on one.
func TestFitNeverFails(t *testing.T) {
	bigKey := bytes.Repeat([]byte("k"), 600<<10) // a key the raw topic took, its limit raised
	letter := func(key []byte) *kgo.Record {
		r, err := Record("sluice.dlq", Letter{Stage: sluicev1.DeadLetter_STAGE_LOAD, ErrorClass: "data",
			Err: errors.New(strings.Repeat("why ", 5000)), Attempts: 1, JobID: "job-1", TaskID: "job-1-t0001",
			Original: &kgo.Record{Topic: "sluice.raw", Partition: 3, Offset: 41, Key: key, Value: bytes.Repeat([]byte("v"), 900<<10)},
			FailedAt: time.Unix(1_700_000_000, 0)}, MaxPayload)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	for _, tt := range []struct {
		name             string
		key              []byte
		max              int
		keepsKey, marker bool
	}{
		{"small enough as it is", []byte("id-1"), 4 << 20, true, false},
		{"without its payload", []byte("id-1"), kafka.DefaultMaxMessageBytes, true, false},
		{"without its key", bigKey, kafka.DefaultMaxMessageBytes, false, false},
		{"a marker", bigKey, 1000, false, true},
		{"a marker even where it cannot fit", bigKey, 100, false, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r, err := Fit(letter(tt.key), tt.max)
			if err != nil {
				t.Fatalf("Fit: %v", err)
			}
			if n := kafka.RecordBytes(r); n > tt.max && tt.max >= 1000 {
				t.Fatalf("fitted letter of %d bytes, over %d", n, tt.max)
			}
			dl, err := Decode(r)
			if err != nil {
				t.Fatal(err)
			}
			if dl.OriginalTopic != "sluice.raw" || dl.OriginalPartition != 3 || dl.OriginalOffset != 41 || dl.ErrorClass != "data" {
				t.Fatalf("the letter lost where the original is: %v", dl)
			}
			if got := bytes.Equal(dl.OriginalKey, tt.key) && bytes.Equal(r.Key, tt.key); got != tt.keepsKey {
				t.Fatalf("keeps the key: %v, want %v", got, tt.keepsKey)
			}
			if got := strings.Contains(dl.ErrorMessage, "only a marker"); got != tt.marker {
				t.Fatalf("a marker: %v, want %v (%q)", got, tt.marker, dl.ErrorMessage[:min(len(dl.ErrorMessage), 80)])
			}
		})
	}
}
