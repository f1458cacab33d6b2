package demosource_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/sluicedata/sluice/pkg/demosource"
)

func TestRecord(t *testing.T) {
	tests := []struct {
		i    int64
		size int
	}{
		{0, 300},
		{7, 300},
		{99_999, 300},
		{123_456_789, 300},
		{9_999_999_999, 300},
		{42, 150},
		{42, 1000},
		{42, 64 * 1024},
		{1_000_000, 128},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%d/%d", tt.i, tt.size), func(t *testing.T) {
			rec := demosource.Record(tt.i, tt.size)
			if !bytes.Equal(rec, demosource.Record(tt.i, tt.size)) {
				t.Fatal("two calls gave different bytes")
			}
			if len(rec) != tt.size {
				t.Errorf("len = %d, want %d", len(rec), tt.size)
			}
			var got struct {
				ID        int64     `json:"id"`
				Name      string    `json:"name"`
				Email     string    `json:"email"`
				CreatedAt time.Time `json:"created_at"`
				Pad       string    `json:"pad"`
			}
			dec := json.NewDecoder(bytes.NewReader(rec))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&got); err != nil {
				t.Fatalf("%s: %v", rec, err)
			}
			wantPrefix := fmt.Sprintf(`{"id":%d,"name":"user-%d","email":"user-%d@example.com","created_at":"`, tt.i, tt.i, tt.i)
			if !bytes.HasPrefix(rec, []byte(wantPrefix)) {
				t.Errorf("record %.120s does not start with %s", rec, wantPrefix)
			}
			wantTime := time.Unix(time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC).Unix()+tt.i, 0)
			if !got.CreatedAt.Equal(wantTime) || got.ID != tt.i {
				t.Errorf("id %d created_at %s, want %d %s", got.ID, got.CreatedAt, tt.i, wantTime)
			}
			if len(bytes.Trim([]byte(got.Pad), "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")) != 0 {
				t.Errorf("pad has more than letters: %q", got.Pad)
			}
		})
	}
}

// TestPadsShareNoRuns guards against pads that repeat each other, which would make the demo data
// compress far better than real data: no run of 16 letters occurs twice in the pads of 1000 records.
func TestPadsShareNoRuns(t *testing.T) {
	const run = 16
	windows := map[string]struct{}{}
	total := 0
	for i := range int64(1000) {
		rec := demosource.Record(i, 300)
		pad := rec[bytes.LastIndex(rec, []byte(`"pad":"`))+len(`"pad":"`) : len(rec)-2]
		for k := 0; k+run <= len(pad); k++ {
			windows[string(pad[k:k+run])] = struct{}{}
		}
		total += max(0, len(pad)-run+1)
	}
	if len(windows) != total || total < 1000*150 {
		t.Fatalf("%d runs of %d letters, %d of them distinct", total, run, len(windows))
	}
}

// TestRecordSmallerThanFields shows that a size below the fields leaves the record unpadded.
func TestRecordSmallerThanFields(t *testing.T) {
	want := `{"id":7,"name":"user-7","email":"user-7@example.com","created_at":"2020-01-01T00:00:07Z","pad":""}`
	if got := string(demosource.Record(7, 1)); got != want {
		t.Fatalf("Record(7, 1) = %s, want %s", got, want)
	}
}

func TestMalformedRecord(t *testing.T) {
	tests := []struct {
		name  string
		i     int64
		check func(t *testing.T, rec []byte, fields map[string]any)
	}{
		{"no id", 999, func(t *testing.T, rec []byte, fields map[string]any) {
			if _, ok := fields["id"]; ok {
				t.Errorf("record has an id: %s", rec)
			}
		}},
		{"invalid utf-8 name", 1000, func(t *testing.T, rec []byte, fields map[string]any) {
			if utf8.Valid(rec) || !bytes.Contains(rec, []byte("user-1000\xff\xfe\"")) {
				t.Errorf("record lacks raw 0xff 0xfe in its name: %q", rec[:60])
			}
			if fields["name"] != "user-1000\uFFFD\uFFFD" || fields["id"] != float64(1000) {
				t.Errorf("decoded name %q id %v", fields["name"], fields["id"])
			}
		}},
		{"nested id", 1001, func(t *testing.T, rec []byte, fields map[string]any) {
			id, ok := fields["id"].(map[string]any)
			if !ok || id["bad"] != true {
				t.Errorf("id is %v, want {bad:true}", fields["id"])
			}
		}},
		{"cycles back to no id", 1002, func(t *testing.T, rec []byte, fields map[string]any) {
			if _, ok := fields["id"]; ok || fields["name"] != "user-1002" {
				t.Errorf("record %s", rec)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := demosource.MalformedRecord(tt.i, 300)
			if !bytes.Equal(rec, demosource.MalformedRecord(tt.i, 300)) {
				t.Fatal("two calls gave different bytes")
			}
			if len(rec) != 300 {
				t.Errorf("len = %d, want 300", len(rec))
			}
			if !json.Valid(rec) {
				t.Fatalf("encoding/json rejects %q", rec)
			}
			var fields map[string]any
			if err := json.Unmarshal(rec, &fields); err != nil {
				t.Fatal(err)
			}
			tt.check(t, rec, fields)
		})
	}
}

func TestIsMalformed(t *testing.T) {
	tests := []struct {
		i, every int64
		want     bool
	}{
		{0, 0, false},
		{99, 0, false},
		{0, 1, true},
		{5, 1, true},
		{0, 100, false},
		{98, 100, false},
		{99, 100, true},
		{100, 100, false},
		{199, 100, true},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%d/%d", tt.i, tt.every), func(t *testing.T) {
			if got := demosource.IsMalformed(tt.i, tt.every); got != tt.want {
				t.Fatalf("IsMalformed(%d, %d) = %v", tt.i, tt.every, got)
			}
		})
	}
}
