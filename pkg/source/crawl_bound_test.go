package source

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"

	sluicev1 "github.com/sluicedata/sluice/proto/sluice/v1"
)

// endless serves a crawl that never ends by itself, page i holding the records of pages(i). With
// cycle 0 every cursor is new (a counter the source hands out, as APIs that sign or timestamp their
// cursors do); else the cursors go round cycle fixed ones. It returns the URL and the number of
// requests it answered.
func endless(t *testing.T, cycle int, pages func(i int) []int) (string, func() int) {
	t.Helper()
	var (
		mu     sync.Mutex
		minted = map[string]int{"": 0} // cursor → page index
		served int
	)
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		served++
		i, ok := minted[r.URL.Query().Get("cursor")]
		if !ok {
			http.Error(w, "unknown cursor", http.StatusBadRequest)
			return
		}
		next := "r" + strconv.Itoa(len(minted)) // a fresh cursor, even for a page fetched again
		if cycle > 0 {
			next = "c" + strconv.Itoa((i+1)%cycle)
		}
		minted[next] = i + 1
		body := `{"data":[`
		for k, id := range pages(i) {
			if k > 0 {
				body += ","
			}
			body += fmt.Sprintf(`{"id":%d}`, id)
		}
		_, _ = w.Write([]byte(body + `],"next":"` + next + `"}`))
	}))
	t.Cleanup(ts.Close)
	return ts.URL, func() int { mu.Lock(); defer mu.Unlock(); return served }
}

// cursorSource is a cursor crawl of url, bounded by maxPages when it is not 0.
func cursorSource(t *testing.T, url string, maxPages uint64) Source {
	t.Helper()
	return testSource(t, &sluicev1.HttpSource{Url: url, RecordsPath: "data", Key: "id", MaxRetries: 2,
		Pagination: &sluicev1.Pagination{Type: sluicev1.Pagination_TYPE_CURSOR, CursorParam: "cursor", CursorPath: "next",
			PageSize: 10, MaxPages: maxPages}}, Env{})
}

// walkFrom reads a crawl from task on, task after task as extractors would, for at most limit
// tasks: a crawl still going then is a crawl that does not end. It returns the records read, the
// tasks taken and the error that stopped the crawl.
func walkFrom(t *testing.T, src Source, task *sluicev1.Task, limit int) (int, int, error) {
	t.Helper()
	records := 0
	for n := 1; n <= limit; n++ {
		rd, err := src.Open(task)
		if err != nil {
			t.Fatal(err)
		}
		for {
			read, more, err := rd.Next(context.Background())
			if err != nil {
				return records, n, err
			}
			if !more {
				break
			}
			records += len(read.Records)
		}
		if task = rd.Then(); task == nil {
			return records, n, nil
		}
	}
	t.Fatalf("the crawl goes on after %d tasks and %d records", limit, records)
	return 0, 0, nil
}

// firstTask is the crawl's first task, as the planner plans it.
func firstTask(t *testing.T, src Source) *sluicev1.Task {
	t.Helper()
	plan, err := src.Plan(context.Background(), 1)
	if err != nil {
		t.Fatal(err)
	}
	task := plan.Slices[0]
	task.TaskId = "job-t0000"
	return task
}

// TestCrawlStopsAtItsBound: a crawl that never ends by itself stops at max_pages when the spec
// sets it, quietly (the user bounded it); without max_pages it stops at DefaultMaxPages, and the
// task of the page past it fails with class max_pages, without a request: the crawl was cut, and
// the job must say so. The crawl without max_pages starts three pages before the bound, as the
// task of its page 99,997 would.
func TestCrawlStopsAtItsBound(t *testing.T) {
	distinct := func(i int) []int { return []int{2 * i, 2*i + 1} }
	for _, tt := range []struct {
		name      string
		maxPages  uint64
		from      uint64 // the page the walk starts at
		pages     int    // tasks taken
		class     string // "" for a quiet end
		requested int
	}{
		{name: "max_pages set", maxPages: 5, pages: 5, requested: 5},
		{name: "default bound", from: DefaultMaxPages - 3, pages: 4, class: "max_pages", requested: 3},
	} {
		t.Run(tt.name, func(t *testing.T) {
			url, served := endless(t, 0, distinct)
			src := cursorSource(t, url, tt.maxPages)
			task := firstTask(t, src)
			task.GetCrawl().Page, task.GetCrawl().Chain = tt.from, "job-t0000"
			records, pages, err := walkFrom(t, src, task, 20)
			if e := AsError(err, ""); e.Class != tt.class || (err != nil && e.Attempts != 0) {
				t.Fatalf("the crawl ended with %v (class %q, %d attempts), want class %q without a request", err, e.Class, e.Attempts, tt.class)
			}
			if pages != tt.pages || served() != tt.requested || records != 2*tt.requested {
				t.Fatalf("%d tasks, %d requests, %d records; want %d tasks, %d requests, %d records",
					pages, served(), records, tt.pages, tt.requested, 2*tt.requested)
			}
		})
	}
}

// TestCrawlGoingRoundUnderNewCursorsFails: a source that hands out a new cursor on every page but
// serves the same pages again goes round in circles however long its round, and so does one whose
// fixed cursors go round more of them than the crawl remembers (64): the crawl fails with class
// crawl_loop, within a few rounds, after the page's retries.
func TestCrawlGoingRoundUnderNewCursorsFails(t *testing.T) {
	for _, tt := range []struct{ round, cycle int }{{1, 0}, {3, 0}, {64, 0}, {100, 0}, {1000, 0}, {100, 100}, {1000, 1000}} {
		round := tt.round
		t.Run(fmt.Sprintf("round of %d pages, cursors cycling %d", round, tt.cycle), func(t *testing.T) {
			url, _ := endless(t, tt.cycle, func(i int) []int { return []int{i % round} })
			src := cursorSource(t, url, 0)
			records, pages, err := walkFrom(t, src, firstTask(t, src), 4*round+8)
			e := AsError(err, "")
			if e.Class != "crawl_loop" || e.Attempts != 3 {
				t.Fatalf("after %d pages and %d records: %v (class %q, %d attempts), want crawl_loop after 3", pages, records, err, e.Class, e.Attempts)
			}
			if records < round {
				t.Fatalf("the loop was called after %d records, before one round of %d", records, round)
			}
		})
	}
}

// TestEmptyPagesAreNoLoop: a source that answers empty pages, under new cursors, while has_more
// says there is more (it scans for records) does not go round in circles: its pages hold nothing
// to repeat.
func TestEmptyPagesAreNoLoop(t *testing.T) {
	const empty, full = 300, 5
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		i, _ := strconv.Atoi(r.URL.Query().Get("cursor"))
		switch {
		case i < empty:
			fmt.Fprintf(w, `{"data":[],"next":"%d","more":true}`, i+1)
		case i < empty+full:
			fmt.Fprintf(w, `{"data":[{"id":%d}],"next":"%d","more":true}`, i, i+1)
		default:
			fmt.Fprint(w, `{"data":[],"more":false}`)
		}
	}))
	t.Cleanup(ts.Close)
	src := testSource(t, &sluicev1.HttpSource{Url: ts.URL, RecordsPath: "data", Key: "id", MaxRetries: 2,
		Pagination: &sluicev1.Pagination{Type: sluicev1.Pagination_TYPE_CURSOR, CursorParam: "cursor", CursorPath: "next",
			HasMorePath: "more", PageSize: 10}}, Env{})
	records, pages, err := walkFrom(t, src, firstTask(t, src), empty+full+2)
	if err != nil || records != full || pages != empty+full+1 {
		t.Fatalf("%d records in %d pages (%v), want %d in %d and a quiet end", records, pages, err, full, empty+full+1)
	}
}
