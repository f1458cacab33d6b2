package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sluicedata/sluice/pkg/dlq"
)

// apiRig serves the planner's routes over p, without tokens (SLUICE_PLANNER_AUTH=none).
func apiRig(t testing.TB, p *Planner) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	p.routes(mux.Handle)
	ts := httptest.NewServer(mux)
	t.Cleanup(ts.Close)
	return ts
}

// getPage asks path with q and decodes the 200 answer into out.
func getPage(t *testing.T, ts *httptest.Server, path string, q url.Values, out any) {
	t.Helper()
	resp, body := get(t, ts.URL+path+"?"+q.Encode(), "")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s?%s: %s %s", path, q.Encode(), resp.Status, body)
	}
	if err := json.Unmarshal([]byte(body), out); err != nil {
		t.Fatalf("GET %s?%s: %v in %s", path, q.Encode(), err, body)
	}
}

// walk asks path for its pages of limit items until the answer carries no next_cursor, and returns
// the ids of every page; between pages it calls between (a job or a letter arriving meanwhile).
func walk(t *testing.T, ts *httptest.Server, path string, limit int, items func([]byte) []string, between func()) [][]string {
	t.Helper()
	var pages [][]string
	cursor := ""
	for len(pages) <= 10 {
		q := url.Values{"limit": {fmt.Sprint(limit)}}
		if cursor != "" {
			q.Set("cursor", cursor)
		}
		var raw json.RawMessage
		getPage(t, ts, path, q, &raw)
		var answer struct {
			NextCursor *string `json:"next_cursor"`
		}
		if err := json.Unmarshal(raw, &answer); err != nil {
			t.Fatal(err)
		}
		pages = append(pages, items(raw))
		if answer.NextCursor == nil || *answer.NextCursor == "" {
			return pages
		}
		cursor = *answer.NextCursor
		between()
	}
	t.Fatalf("%s: more than 10 pages", path)
	return nil
}

// checkPages wants pages of the sizes given that together hold want, in its order: no item twice,
// none left out.
func checkPages(t *testing.T, pages [][]string, sizes []int, want []string) {
	t.Helper()
	var got []int
	for _, p := range pages {
		got = append(got, len(p))
	}
	if !slices.Equal(got, sizes) {
		t.Fatalf("pages of %v items, want %v", got, sizes)
	}
	if all := slices.Concat(pages...); !slices.Equal(all, want) {
		t.Fatalf("the pages hold %d items, want these %d in order:\ngot  %v\nwant %v", len(all), len(want), all, want)
	}
}

// TestJobsPages walks 250 jobs, newest first, in pages of 100: three pages, each job once, none
// left out, also when jobs share their creation time and a new job arrives between two pages.
func TestJobsPages(t *testing.T) {
	p := &Planner{jobs: newJobs(), now: time.Now}
	base := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	var want []string
	for i := range 250 {
		id := fmt.Sprintf("users-%03d", i)
		ev := planned(id, uint32(i%2), 10)
		ev.At = timestamppb.New(base.Add(time.Duration(i/2) * time.Second)) // two jobs a second
		p.jobs.Apply(ev)
		want = append(want, id)
	}
	slices.Reverse(want) // newest first; of two planned in the same second, the larger id first
	ts := apiRig(t, p)
	late := 0
	pages := walk(t, ts, "/v1/jobs", 100, func(raw []byte) []string {
		var answer struct{ Jobs []Job }
		if err := json.Unmarshal(raw, &answer); err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, j := range answer.Jobs {
			ids = append(ids, j.ID)
		}
		return ids
	}, func() {
		ev := planned(fmt.Sprintf("users-late-%d", late), 1, 10)
		ev.At = timestamppb.New(base.Add(time.Hour))
		p.jobs.Apply(ev)
		late++
	})
	checkPages(t, pages, []int{100, 100, 50}, want)

	// The jobs that came between the pages are the newest, on the first page asked now.
	var first struct {
		Jobs       []Job
		NextCursor string `json:"next_cursor"`
	}
	getPage(t, ts, "/v1/jobs", nil, &first)
	if len(first.Jobs) != 100 || first.Jobs[0].ID != "users-late-1" || first.Jobs[2].ID != want[0] || first.NextCursor == "" {
		t.Fatalf("the first page by default: %d jobs from %s, next %q", len(first.Jobs), first.Jobs[0].ID, first.NextCursor)
	}
}

// TestTasksPages walks a job's 250 tasks in their order, in pages of 100.
func TestTasksPages(t *testing.T) {
	p := &Planner{jobs: newJobs(), now: time.Now}
	p.jobs.Apply(planned("j", 250, 2500))
	var want []string
	for i := range 250 {
		want = append(want, taskID("j", i))
	}
	pages := walk(t, apiRig(t, p), "/v1/jobs/j/tasks", 100, func(raw []byte) []string {
		var answer struct {
			Tasks []TaskView
			All   *bool
			Total int
		}
		if err := json.Unmarshal(raw, &answer); err != nil {
			t.Fatal(err)
		}
		if answer.All == nil || !*answer.All || answer.Total != 250 {
			t.Fatalf("a page says all %v, total %d; want all of 250", answer.All != nil && *answer.All, answer.Total)
		}
		var ids []string
		for _, v := range answer.Tasks {
			ids = append(ids, v.ID)
		}
		return ids
	}, func() {})
	checkPages(t, pages, []int{100, 100, 50}, want)
}

// TestDeadLettersPages walks 250 dead letters, newest first, in pages of 100, while new letters
// arrive between the pages.
func TestDeadLettersPages(t *testing.T) {
	p := &Planner{jobs: newJobs(), now: time.Now, letters: newLetters(1000)}
	at := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	var want []string
	for i := range 250 {
		p.letters.add(dlq.Summary{Offset: int64(i), JobID: "j", Stage: "load", Class: "bad_json", FailedAt: at})
		want = append(want, fmt.Sprint(i))
	}
	slices.Reverse(want)
	late := 1000
	pages := walk(t, apiRig(t, p), "/v1/deadletters", 100, func(raw []byte) []string {
		var answer struct{ Letters []dlq.Summary }
		if err := json.Unmarshal(raw, &answer); err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, l := range answer.Letters {
			ids = append(ids, fmt.Sprint(l.Offset))
		}
		return ids
	}, func() {
		p.letters.add(dlq.Summary{Offset: int64(late), JobID: "j", Stage: "load", Class: "bad_json", FailedAt: at})
		late++
	})
	checkPages(t, pages, []int{100, 100, 50}, want)
}

// TestBadPagesRefused answers 400 to a limit out of range or not a number, and to a cursor that
// none of the planner's lists made, or another list did.
func TestBadPagesRefused(t *testing.T) {
	p := &Planner{jobs: newJobs(), now: time.Now, letters: newLetters(1000)}
	p.jobs.Apply(planned("j", 250, 2500))
	ts := apiRig(t, p)
	for _, path := range []string{"/v1/jobs", "/v1/jobs/j/tasks", "/v1/deadletters"} {
		for _, q := range []string{"limit=0", "limit=-1", "limit=1001", "limit=ten", "limit=1.5", "cursor=not-a-cursor", "cursor=%2F%2F"} {
			t.Run(path+"?"+q, func(t *testing.T) {
				if resp, body := get(t, ts.URL+path+"?"+q, ""); resp.StatusCode != http.StatusBadRequest {
					t.Fatalf("%s %s, want 400", resp.Status, body)
				}
			})
		}
	}
	// A cursor of one list is no cursor of another.
	var tasks struct {
		NextCursor string `json:"next_cursor"`
	}
	getPage(t, ts, "/v1/jobs/j/tasks", url.Values{"limit": {"1"}}, &tasks)
	for _, path := range []string{"/v1/jobs", "/v1/deadletters"} {
		if resp, body := get(t, ts.URL+path+"?cursor="+url.QueryEscape(tasks.NextCursor), ""); tasks.NextCursor == "" || resp.StatusCode != http.StatusBadRequest {
			t.Errorf("%s with the tasks' cursor %q: %s %s, want 400", path, tasks.NextCursor, resp.Status, body)
		}
	}
}
