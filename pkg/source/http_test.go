package source

import (
	"context"
	"errors"
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/sluicedata/sluice/pkg/demosource"
	"github.com/sluicedata/sluice/pkg/pipeline"
	sluicev1 "github.com/sluicedata/sluice/proto/sluice/v1"
)

// demo serves a demo source of n records and returns the HTTP source of it, paginated by kind
// ("offset" or "page") in pages of size, with the total at "total".
func demo(t *testing.T, n int64, kind string, size uint32) (Source, *sluicev1.HttpSource) {
	t.Helper()
	cfg := demosource.DefaultConfig()
	cfg.Records = n
	srv, err := demosource.New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(ts.Close)
	pg := &sluicev1.Pagination{Type: sluicev1.Pagination_TYPE_OFFSET, OffsetParam: "offset", LimitParam: "limit", PageSize: size, TotalPath: "total"}
	if kind == "page" {
		pg.Type, pg.PageParam, pg.OffsetParam, pg.FirstPage = sluicev1.Pagination_TYPE_PAGE, "page", "", 1
	}
	h := &sluicev1.HttpSource{Url: ts.URL + "/api/users", RecordsPath: "data", Key: "id", Pagination: pg, MaxRetries: 2}
	src := testSource(t, h, Env{})
	return src, h
}

// TestHTTPSourcePlansAndReadsEveryRecordOnce plans offset and page sources, reads every slice
// through the boundary, and finds each record exactly once; planning again from the extent gives
// the same slices.
func TestHTTPSourcePlansAndReadsEveryRecordOnce(t *testing.T) {
	for _, kind := range []string{"offset", "page"} {
		t.Run(kind, func(t *testing.T) {
			const n = 2_345
			src, _ := demo(t, n, kind, 100)
			ctx := context.Background()
			plan, err := src.Plan(ctx, 4)
			if err != nil {
				t.Fatal(err)
			}
			if plan.Expected != n || len(plan.Slices) != 4 {
				t.Fatalf("plan of %d records in %d slices, want %d in 4", plan.Expected, len(plan.Slices), n)
			}
			again, err := src.Replan(plan.Extent, 4)
			if err != nil || fmt.Sprint(again.Slices) != fmt.Sprint(plan.Slices) || again.Expected != plan.Expected {
				t.Fatalf("replan from %q: %v, %v; want the same slices", plan.Extent, again, err)
			}
			seen := map[string]bool{}
			for _, slice := range plan.Slices {
				rd, err := src.Open(slice)
				if err != nil {
					t.Fatal(err)
				}
				for {
					read, more, err := rd.Next(ctx)
					if err != nil {
						t.Fatal(err)
					}
					if !more {
						break
					}
					for _, rec := range read.Records {
						key, reason := rd.Key(rec)
						if reason != "" || seen[key] {
							t.Fatalf("record %s: key %q twice or without a key (%s)", rec, key, reason)
						}
						seen[key] = true
					}
				}
			}
			if len(seen) != n {
				t.Fatalf("%d records read, want %d", len(seen), n)
			}
		})
	}
}

// TestHTTPReaderFailsAShortPage: a bounded slice that reaches past the source's end gets an empty
// page, fetched again under the retries and then failed as short_page, with where it was.
func TestHTTPReaderFailsAShortPage(t *testing.T) {
	src, _ := demo(t, 150, "offset", 100)
	rd, err := src.Open(&sluicev1.Task{Slice: &sluicev1.Task_Offsets{Offsets: &sluicev1.OffsetRange{Start: 100, End: 300}}})
	if err != nil {
		t.Fatal(err)
	}
	if read, more, err := rd.Next(context.Background()); err != nil || !more || len(read.Records) != 50 {
		t.Fatalf("first page: %d records, more %v, %v", len(read.Records), more, err)
	}
	_, _, err = rd.Next(context.Background())
	var e *Error
	if !errors.As(err, &e) || e.Class != "short_page" || e.At != 150 || e.Attempts != 3 {
		t.Fatalf("the empty page inside the slice gave %#v, want short_page at 150 after 3 attempts", err)
	}
}

// TestHTTPSourceRefusesWhatItCannotRead: a slice of another shape, and a header whose secret is
// missing from the environment, are refused with their class, before any request.
func TestHTTPSourceRefusesWhatItCannotRead(t *testing.T) {
	src, h := demo(t, 10, "offset", 10)
	_, err := src.Open(&sluicev1.Task{Slice: &sluicev1.Task_Keys{Keys: &sluicev1.KeyRange{Start: "a"}}})
	if e := AsError(err, ""); e.Class != "bad_task" {
		t.Fatalf("a key range: %v, want bad_task", err)
	}
	h.Headers = map[string]string{"Authorization": "Bearer ${SOURCE_TOKEN}"}
	_, err = src.Open(&sluicev1.Task{Slice: &sluicev1.Task_Offsets{Offsets: &sluicev1.OffsetRange{End: 10}}})
	if e := AsError(err, ""); e.Class != "config" || !strings.Contains(err.Error(), "SOURCE_TOKEN") {
		t.Fatalf("a missing secret: %v, want config naming the variable", err)
	}
	if _, err := New(&sluicev1.Source{}, Env{}); !errors.Is(err, ErrUnknownKind) {
		t.Fatalf("a source of no kind: %v, want ErrUnknownKind", err)
	}
}

// TestSlicesSplitAJobWithoutATotal splits a source by time windows and by key ranges, each read to
// its end by offsets or by a cursor crawl: every record once, and the windows cut where they say.
func TestSlicesSplitAJobWithoutATotal(t *testing.T) {
	const n = 1_000 // created at 2020-01-01T00:00:00Z + i seconds
	for _, tt := range []struct {
		name   string
		slices *sluicev1.Slices
		count  int
		crawl  bool
	}{
		{"time by offset", &sluicev1.Slices{Type: sluicev1.Slices_TYPE_TIME, ParamFrom: "created_from", ParamTo: "created_to",
			Start: "2020-01-01T00:00:00Z", End: "2020-01-01T00:20:00Z", Step: "7m", Format: "unix"}, 3, false},
		{"keys by cursor", &sluicev1.Slices{Type: sluicev1.Slices_TYPE_KEY_RANGE, ParamFrom: "id_from", ParamTo: "id_to",
			Start: "0", End: "1000", Step: "300"}, 4, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var src Source
			if tt.crawl {
				cfg := demosource.DefaultConfig()
				cfg.Records = n
				src = crawlSource(t, cfg, sluicev1.Pagination_TYPE_CURSOR, 0)
			} else {
				src, _ = demo(t, n, "offset", 100)
			}
			h := src.(*httpSource).src
			h.Slices, h.Pagination.TotalPath = tt.slices, ""
			plan, err := src.Plan(context.Background(), 1)
			if err != nil {
				t.Fatal(err)
			}
			if len(plan.Slices) != tt.count || plan.Expected != -1 {
				t.Fatalf("%d slices of %d records, want %d of an unknown number", len(plan.Slices), plan.Expected, tt.count)
			}
			seen := map[string]int{}
			for i, task := range plan.Slices {
				task.TaskId = fmt.Sprintf("j-t%04d", i)
				for task != nil {
					rd, err := src.Open(task)
					if err != nil {
						t.Fatal(err)
					}
					for {
						read, more, err := rd.Next(context.Background())
						if err != nil {
							t.Fatal(err)
						}
						if !more {
							break
						}
						for _, rec := range read.Records {
							k, _ := rd.Key(rec)
							seen[k]++
						}
					}
					next := rd.Then()
					if next != nil {
						next.Query = task.Query // as the extractor carries it on
					}
					task = next
				}
			}
			if len(seen) != n {
				t.Fatalf("%d distinct records, want %d", len(seen), n)
			}
			for k, c := range seen {
				if c != 1 {
					t.Fatalf("record %s read %d times", k, c)
				}
			}
		})
	}
}

// testSource is the source of h with env's fields, and test defaults for those left out: a fetcher,
// no secrets, millisecond backoffs, a 10 s page deadline.
func testSource(t *testing.T, h *sluicev1.HttpSource, env Env) Source {
	t.Helper()
	if env.Fetcher == nil {
		env.Fetcher = newFetcher()
	}
	if env.Lookup == nil {
		env.Lookup = func(string) (string, bool) { return "", false }
	}
	if env.Backoff == (pipeline.Backoff{}) {
		env.Backoff = pipeline.Backoff{Base: time.Millisecond, Max: time.Millisecond}
	}
	if env.PageDeadline == 0 {
		env.PageDeadline = 10 * time.Second
	}
	src, err := New(&sluicev1.Source{Kind: &sluicev1.Source_Http{Http: h}}, env)
	if err != nil {
		t.Fatal(err)
	}
	return src
}

// TestHTTPIncremental sends an incremental run's start in its parameter on every page, and reads
// only the records from it on.
func TestHTTPIncremental(t *testing.T) {
	cfg := demosource.DefaultConfig()
	cfg.Records = 1000
	srv, err := demosource.New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(ts.Close)
	h := &sluicev1.HttpSource{Url: ts.URL + "/api/users", RecordsPath: "data", Key: "id", MaxRetries: 1,
		Pagination: &sluicev1.Pagination{Type: sluicev1.Pagination_TYPE_OFFSET, OffsetParam: "offset", LimitParam: "limit", PageSize: 64}}
	src, err := New(&sluicev1.Source{Kind: &sluicev1.Source_Http{Http: h},
		Incremental: &sluicev1.Incremental{CursorField: "created_at", Param: "created_from", Since: "2020-01-01T00:10:00Z"}},
		Env{Fetcher: newFetcher(), Lookup: func(string) (string, bool) { return "", false },
			Backoff: pipeline.Backoff{Base: time.Millisecond, Max: time.Millisecond}, PageDeadline: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	plan, err := src.Plan(context.Background(), 3)
	if err != nil {
		t.Fatal(err)
	}
	n := 0 // records 600..999 were created from 00:10:00 on
	for _, slice := range plan.Slices {
		rd, err := src.Open(slice)
		if err != nil {
			t.Fatal(err)
		}
		for rd.More() {
			r, more, err := rd.Next(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if !more {
				break
			}
			for _, rec := range r.Records {
				if c, ok := CursorValue(rec, "created_at"); !ok || CompareCursors(c, "2020-01-01T00:10:00Z") < 0 {
					t.Fatalf("record %s is from before the run's start", rec)
				}
				n++
			}
		}
	}
	if n != 400 {
		t.Fatalf("read %d records, want 400", n)
	}
}

// TestCursors orders times, numbers and text, and takes the lookback off a mark.
func TestCursors(t *testing.T) {
	for _, c := range []struct {
		a, b string
		want int
	}{
		{"2024-01-01T00:00:00Z", "2024-01-01T01:00:00+02:00", 1}, {"9", "10", -1}, {"18446744073709551616", "18446744073709551615", 1},
		{"1.5", "1.50", 0}, {"b", "a", 1}, {"2024-01-01T00:00:00.5Z", "2024-01-01T00:00:00.25Z", 1},
		{"2024-01-01T10:00:00", "2024-01-01T9:00:00", 1}, {"2024-01-02", "2024-01-01T23:00:00", 1},
	} {
		if got := CompareCursors(c.a, c.b); got != c.want {
			t.Errorf("CompareCursors(%q, %q) = %d, want %d", c.a, c.b, got, c.want)
		}
	}
	for _, c := range []struct{ mark, initial, lookback, want string }{
		{"", "2020-01-01T00:00:00Z", "1h", "2020-01-01T00:00:00Z"},
		{"2024-03-01T00:00:00+00:00", "", "90m", "2024-02-29T22:30:00Z"},
		{"1000", "", "25", "975"},
		{"77", "", "", "77"},
		{"12.50", "", "0.25", "12.25"},
		{"-1", "", "0.5", "-1.5"},
		{"2024-03-01T00:00:00.25", "", "1h", "2024-02-29T23:00:00.25"},
		{"2024-03-01", "", "1h", "2024-02-29"},
	} {
		if got, err := Since(c.mark, c.initial, c.lookback); got != c.want || err != nil {
			t.Errorf("Since(%q, %q, %q) = %q, %v; want %q", c.mark, c.initial, c.lookback, got, err, c.want)
		}
	}
	for _, c := range [][2]string{{"abc", "5"}, {"2024-01-01T00:00:00Z", "100"}, {"100", "10m"}} {
		if got, err := Since(c[0], "", c[1]); err == nil {
			t.Errorf("Since(%q, lookback %q) = %q, want an error", c[0], c[1], got)
		}
	}
	var m MaxCursor
	for _, v := range []string{"2024-01-01T10:00:00+02:00", "2024-01-01T09:00:00Z", "2024-01-01T08:30:00Z"} {
		m.Add(v, time.Now())
	}
	if m.Value() != "2024-01-01T09:00:00Z" {
		t.Errorf("MaxCursor = %q, want the latest time, 2024-01-01T09:00:00Z", m.Value())
	}
	if _, ok := CursorValue([]byte(`{"t":"infinity"}`), "t"); ok {
		t.Error("an infinite timestamp is a cursor")
	}
	for _, c := range []struct{ rec, want string }{
		{`{"a":{"t":"x"}}`, "x"}, {`{"a":{"t":12345678901234567890}}`, "12345678901234567890"}, {`{"a":{"t":null}}`, ""}, {`{"a":{}}`, ""},
	} {
		if got, _ := CursorValue([]byte(c.rec), "a.t"); got != c.want {
			t.Errorf("CursorValue(%s) = %q, want %q", c.rec, got, c.want)
		}
	}
}
