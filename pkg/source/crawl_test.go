package source

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/sluicedata/sluice/pkg/demosource"
	sluicev1 "github.com/sluicedata/sluice/proto/sluice/v1"
)

// crawlSource serves a demo source of n records with cfg's faults and returns the source of its
// crawl endpoint of kind.
func crawlSource(t *testing.T, cfg demosource.Config, kind sluicev1.Pagination_Type, maxRecords uint64) Source {
	t.Helper()
	srv, err := demosource.New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(ts.Close)
	pg := &sluicev1.Pagination{Type: kind, LimitParam: "limit", PageSize: 70}
	path := map[sluicev1.Pagination_Type]string{sluicev1.Pagination_TYPE_CURSOR: "/cursor/users",
		sluicev1.Pagination_TYPE_NEXT_URL: "/next/users", sluicev1.Pagination_TYPE_LINK_HEADER: "/link/users"}[kind]
	records := "data"
	switch kind {
	case sluicev1.Pagination_TYPE_CURSOR:
		pg.CursorParam, pg.CursorPath, pg.HasMorePath = "cursor", "next_cursor", "has_more"
	case sluicev1.Pagination_TYPE_NEXT_URL:
		pg.NextUrlPath = "links.next"
	default:
		records = ""
	}
	h := &sluicev1.HttpSource{Url: ts.URL + path, RecordsPath: records, Key: "id", Pagination: pg, MaxRetries: 2, MaxRecords: maxRecords}
	src := testSource(t, h, Env{})
	return src
}

// walk reads a crawl task after task, as extractors would, and returns the keys, the tasks it
// took, and the error that stopped it.
func walk(t *testing.T, src Source) ([]string, int, error) {
	t.Helper()
	plan, err := src.Plan(context.Background(), 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(plan.Slices) != 1 || plan.Expected != -1 {
		t.Fatalf("a crawl planned as %d slices of %d records", len(plan.Slices), plan.Expected)
	}
	task := plan.Slices[0]
	task.TaskId = "job-t0000"
	var keys []string
	for n := 1; ; n++ {
		rd, err := src.Open(task)
		if err != nil {
			t.Fatal(err)
		}
		for {
			read, more, err := rd.Next(context.Background())
			if err != nil {
				return keys, n, err
			}
			if !more {
				break
			}
			for _, rec := range read.Records {
				k, _ := rd.Key(rec)
				keys = append(keys, k)
			}
		}
		if task = rd.Then(); task == nil {
			return keys, n, nil
		}
		if c := task.GetCrawl(); c.Chain != "job-t0000" || c.Page != uint64(n) {
			t.Fatalf("task %d continues chain %q at page %d", n, c.Chain, c.Page)
		}
	}
}

// TestCrawlsReadEveryRecordOnce follows each kind of crawl to its end, one page per task, with
// source faults on.
func TestCrawlsReadEveryRecordOnce(t *testing.T) {
	for _, kind := range []sluicev1.Pagination_Type{sluicev1.Pagination_TYPE_CURSOR, sluicev1.Pagination_TYPE_NEXT_URL, sluicev1.Pagination_TYPE_LINK_HEADER} {
		t.Run(kind.String(), func(t *testing.T) {
			cfg := demosource.DefaultConfig()
			cfg.Records, cfg.Rate5xx, cfg.RetryAfter = 1_000, 0.05, time.Millisecond
			keys, tasks, err := walk(t, crawlSource(t, cfg, kind, 0))
			if err != nil {
				t.Fatal(err)
			}
			if len(keys) != 1_000 || tasks != 15 {
				t.Fatalf("%d records in %d tasks, want 1000 in 15 (pages of 70)", len(keys), tasks)
			}
			for i, k := range keys {
				if k != strconv.Itoa(i) {
					t.Fatalf("record %d has key %s", i, k)
				}
			}
			// max_records stops the crawl inside a page.
			keys, _, err = walk(t, crawlSource(t, cfg, kind, 150))
			if err != nil || len(keys) != 150 {
				t.Fatalf("max_records 150: %d records, %v", len(keys), err)
			}
		})
	}
}

// TestCrawlGoingRoundFailsAsStuckCursor: a cursor that does not move and a next link that loops
// back fail the task with class stuck_cursor after the page's retries, where it happened.
func TestCrawlGoingRoundFailsAsStuckCursor(t *testing.T) {
	for _, fault := range []string{"stuck", "loop"} {
		for _, kind := range []sluicev1.Pagination_Type{sluicev1.Pagination_TYPE_CURSOR, sluicev1.Pagination_TYPE_NEXT_URL, sluicev1.Pagination_TYPE_LINK_HEADER} {
			t.Run(fault+" "+kind.String(), func(t *testing.T) {
				cfg := demosource.DefaultConfig()
				cfg.Records, cfg.CursorFault, cfg.CursorFaultAt = 1_000, fault, 300
				keys, _, err := walk(t, crawlSource(t, cfg, kind, 0))
				e := AsError(err, "")
				if e.Class != "stuck_cursor" || e.Attempts != 3 {
					t.Fatalf("after %d records: %v (class %q, %d attempts), want stuck_cursor after 3", len(keys), err, e.Class, e.Attempts)
				}
			})
		}
	}
}

// TestLinkNext reads rel="next" out of Link headers as RFC 8288 writes them.
func TestLinkNext(t *testing.T) {
	for _, tt := range []struct {
		values []string
		want   string
		ok     bool
	}{
		{[]string{`<https://api.example/items?page=2>; rel="next", <https://api.example/items?page=9>; rel="last"`}, "https://api.example/items?page=2", true},
		{[]string{`<https://api.example/items?page=1>; rel="prev"`, `<https://api.example/items?page=3>; rel="next"`}, "https://api.example/items?page=3", true},
		{[]string{`</items?after=x>; title="a, b"; rel="last next"`}, "/items?after=x", true},
		{[]string{`<https://api.example/items?page=1>; rel=prev`}, "", false},
		{nil, "", false},
	} {
		got, ok := linkNext(tt.values)
		if got != tt.want || ok != tt.ok {
			t.Errorf("linkNext(%q) = %q, %v; want %q, %v", tt.values, got, ok, tt.want, tt.ok)
		}
	}
}

// TestNextURLStaysOnTheSourceHost: relative links resolve against the page; a link to another host
// or scheme is refused, so that the source's headers go nowhere else.
func TestNextURLStaysOnTheSourceHost(t *testing.T) {
	r := &crawlReader{h: &httpSource{src: &sluicev1.HttpSource{Url: "https://api.example/v1/items"}}}
	page := "https://api.example/v1/items?limit=10"
	if got, err := r.sameHost(page, "/v1/items?after=abc"); err != nil || got != "https://api.example/v1/items?after=abc" {
		t.Fatalf("relative link: %q, %v", got, err)
	}
	for _, next := range []string{"https://other.example/v1/items?after=abc", "http://api.example/v1/items", "//other.example/x"} {
		if got, err := r.sameHost(page, next); err == nil {
			t.Errorf("%s was followed as %s", next, got)
		}
	}
}

// TestCrawlEnds: a last page that repeats its cursor is the end, not a stuck cursor; an empty page
// ends a crawl unless has_more says true.
func TestCrawlEnds(t *testing.T) {
	pages := map[string]string{
		"":   `{"data":[{"id":1}],"next":"c1","more":true}`,
		"c1": `{"data":[],"next":"c2","more":true}`, // empty, but the source says there is more
		"c2": `{"data":[{"id":2}],"next":"c3"}`,
		"c3": `{"data":[],"next":"c3"}`, // caught up: empty, and the same cursor again
	}
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(pages[r.URL.Query().Get("cursor")]))
	}))
	defer ts.Close()
	h := &sluicev1.HttpSource{Url: ts.URL, RecordsPath: "data", Key: "id", MaxRetries: 1,
		Pagination: &sluicev1.Pagination{Type: sluicev1.Pagination_TYPE_CURSOR, CursorParam: "cursor", CursorPath: "next", HasMorePath: "more", PageSize: 10}}
	src := testSource(t, h, Env{})
	keys, tasks, err := walk(t, src)
	if err != nil || len(keys) != 2 || tasks != 4 {
		t.Fatalf("%v in %d tasks (%v), want the 2 records in 4 pages and a quiet end", keys, tasks, err)
	}
}
