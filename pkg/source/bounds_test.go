package source

import (
	"context"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"

	sluicev1 "github.com/sluicedata/sluice/proto/sluice/v1"
)

// TestPageOfTinyRecordsIsBounded: a body the byte limit lets through, of millions of tiny records,
// fails as page_too_large at once (no retry), with its head kept, and costs memory by the cap, not
// by the records it holds.
func TestPageOfTinyRecordsIsBounded(t *testing.T) {
	body := "[" + strings.Repeat("0,", 2_000_000) + "0]" // 4 MB: 2,000,001 records
	var asked atomic.Int32
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		asked.Add(1)
		_, _ = w.Write([]byte(body))
	}))
	defer ts.Close()
	f := newFetcher()
	f.MaxBody, f.MaxRecords = 8<<20, 10_000
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	_, attempts, ferr := f.FetchPage(context.Background(), ts.URL, nil, "", "", Policy{MaxRetries: 3, Timeout: 10e9, Deadline: 30e9})
	runtime.ReadMemStats(&after)
	if ferr == nil || ferr.Class != "page_too_large" || attempts != 1 || asked.Load() != 1 || !strings.HasPrefix(string(ferr.Head), "[0,0,") {
		t.Fatalf("%d attempts (%d requests): %v", attempts, asked.Load(), ferr)
	}
	// The body (read into a growing buffer) and 10,000 record slices; not 2,000,001 of them (48 MB).
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 24<<20 {
		t.Fatalf("refusing the page allocated %d MiB", alloc>>20)
	}
}

// TestPageOverflowIsASourceError: a source that ignores the limit asked for, or whose total lies, so
// that a page holds more records than the task's range has left, fails the task as page_overflow
// after the page's retries, as one error with the page's head: never millions of records taken.
func TestPageOverflowIsASourceError(t *testing.T) {
	page := `{"data":[` + strings.TrimSuffix(strings.Repeat(`{"id":1},`, 1000), ",") + `],"total":300}`
	var asked atomic.Int32
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		asked.Add(1)
		_, _ = w.Write([]byte(page))
	}))
	defer ts.Close()
	for _, tt := range []struct {
		name, limitParam string
		want             string
	}{
		{"more than the limit asked for", "limit", "asked for 100"},
		{"more than the range has left", "", "range has 300 left"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := asked.Load()
			h := &sluicev1.HttpSource{Url: ts.URL + "/users", RecordsPath: "data", Key: "id", MaxRetries: 2,
				Pagination: &sluicev1.Pagination{Type: sluicev1.Pagination_TYPE_OFFSET, OffsetParam: "offset", LimitParam: tt.limitParam, PageSize: 100}}
			src := testSource(t, h, Env{})
			task := &sluicev1.Task{Slice: &sluicev1.Task_Offsets{Offsets: &sluicev1.OffsetRange{Start: 0, End: 300}}}
			rd, err := src.Open(task)
			if err != nil {
				t.Fatal(err)
			}
			_, _, err = rd.Next(context.Background())
			e := AsError(err, "")
			if e.Class != "page_overflow" || !strings.Contains(err.Error(), tt.want) || len(e.Head) == 0 {
				t.Fatalf("%v (class %q)", err, e.Class)
			}
			if n := asked.Load() - before; n != 3 || e.Attempts != 3 {
				t.Fatalf("%d requests, %d attempts: want the page's 3 attempts", n, e.Attempts)
			}
		})
	}
}
