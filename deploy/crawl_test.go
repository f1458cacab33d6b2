package deploy

import (
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/sluicedata/sluice/pkg/demosource"
	"github.com/sluicedata/sluice/pkg/stacktest"
)

// crawlSpec is a job that crawls the demo source's endpoint for kind: cursor, next_url or
// link_header (whose body is the array itself).
func crawlSpec(name, url, kind, table string, pageSize int) string {
	path, records, pagination := "/link/users", "", "{type: link_header, page_size: %d}"
	switch kind {
	case "cursor":
		path, records = "/cursor/users", "\n  records_path: data"
		pagination = "{type: cursor, cursor_param: cursor, cursor_path: next_cursor, has_more_path: has_more, page_size: %d}"
	case "next_url":
		path, records = "/next/users", "\n  records_path: data"
		pagination = "{type: next_url, next_url_path: links.next, page_size: %d}"
	}
	return fmt.Sprintf(`name: %s
source:
  type: http
  url: %s%s%s
  key: id
  pagination: `+pagination+`
  timeout: 5s
  max_retries: 6
sink:
  table: %s
`, name, url, path, records, pageSize, table)
}

// TestPipelineCrawls runs each crawl kind over 20,000 records with source faults on: every record
// lands once, byte-identical, and the job succeeds with one task per page.
func TestPipelineCrawls(t *testing.T) {
	stacktest.Require(t)
	for _, kind := range []string{"cursor", "next_url", "link_header"} {
		t.Run(kind, func(t *testing.T) {
			const n, pageSize = 20_000, 250
			src := demosource.DefaultConfig()
			src.Records, src.Rate5xx, src.Rate429, src.RateTruncated, src.Seed = n, 0.03, 0.02, 0.05, 7
			p := newPipeline(t, src)
			env := p.with(map[string]string{"SLUICE_EXTRACTOR_RETRY_BASE": "10ms", "SLUICE_EXTRACTOR_RETRY_MAX": "100ms"})
			planner := start(t, "planner", env).ready(t)
			start(t, "extractor", env).ready(t)
			start(t, "loader", env).ready(t)
			j := submit(t, planner, crawlSpec("crawl", p.srcURL, kind, "crawl", pageSize))
			j = await(t, planner, j.ID, 4*time.Minute)
			if j.State != "succeeded" || j.Records.Extracted != n || j.Records.Loaded != n || j.Tasks.Planned != n/pageSize ||
				j.Tasks.Extracted != n/pageSize {
				t.Fatalf("job ended %+v, want succeeded with %d records in %d page tasks", j, n, n/pageSize)
			}
			st := p.source.Stats()
			if st.ByStatus["429"]+st.ByStatus["500"]+st.ByStatus["502"]+st.ByStatus["503"] == 0 || st.Truncated == 0 {
				t.Fatalf("no fault was served: %+v", st)
			}
			checkExact(t, p, "crawl", n, src.RecordSize)
		})
	}
}

// TestPipelineCrawlResumesAfterKill SIGKILLs the extractor with a cursor page in flight: the next
// member continues from the last page whose records were acknowledged, fetching again at most the
// page that was in flight, and the job completes exactly.
func TestPipelineCrawlResumesAfterKill(t *testing.T) {
	stacktest.Require(t)
	const n, pageSize = 20_000, 100
	src := demosource.DefaultConfig()
	src.Records, src.PageLatency = n, 40*time.Millisecond
	p := newPipeline(t, src)
	planner := start(t, "planner", p.env).ready(t)
	x := start(t, "extractor-1", p.env)
	x.ready(t)
	start(t, "loader", p.env).ready(t)
	j := submit(t, planner, crawlSpec("resume", p.srcURL, "cursor", "resume", pageSize))
	// Mid-crawl, with a page in flight: the source took a request it has not answered.
	deadline := time.Now().Add(2 * time.Minute)
	for {
		st := p.source.Stats()
		var answered int64
		for _, c := range st.ByStatus {
			answered += c
		}
		if st.PagesServed >= 50 && st.Requests > answered {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no page in flight after 50 pages within 2 minutes: %+v", st)
		}
		time.Sleep(time.Millisecond)
	}
	x.stop(t, syscall.SIGKILL)
	before := p.source.Stats().PagesServed
	start(t, "extractor-2", p.env).ready(t)
	j = await(t, planner, j.ID, 3*time.Minute)
	if j.State != "succeeded" || j.Records.Loaded != n || j.Tasks.Extracted != n/pageSize {
		t.Fatalf("job ended %+v", j)
	}
	st := p.source.Stats()
	if st.PagesServedAgain > 1 || before >= n/pageSize {
		t.Fatalf("%d pages served again after a kill at page %d, want at most the one in flight", st.PagesServedAgain, before)
	}
	t.Logf("killed after %d pages; %d served again", before, st.PagesServedAgain)
	checkExact(t, p, "resume", n, src.RecordSize)
}

// TestPipelineStuckCrawl: a cursor that stops moving and a next link that loops back are fetched
// again under the retries, then dead-lettered as stuck_cursor with their context; the pages before
// them are loaded and the job fails saying so.
func TestPipelineStuckCrawl(t *testing.T) {
	stacktest.Require(t)
	for _, tt := range []struct{ kind, fault string }{{"cursor", "stuck"}, {"next_url", "loop"}} {
		t.Run(tt.kind+" "+tt.fault, func(t *testing.T) {
			const n, pageSize, at = 10_000, 250, 5_000
			src := demosource.DefaultConfig()
			src.Records, src.CursorFault, src.CursorFaultAt = n, tt.fault, at
			p := newPipeline(t, src)
			env := p.with(map[string]string{"SLUICE_EXTRACTOR_RETRY_BASE": "10ms", "SLUICE_EXTRACTOR_RETRY_MAX": "50ms"})
			planner := start(t, "planner", env).ready(t)
			start(t, "extractor", env).ready(t)
			start(t, "loader", env).ready(t)
			j := submit(t, planner, crawlSpec("stuck", p.srcURL, tt.kind, "stuck", pageSize))
			j = await(t, planner, j.ID, 3*time.Minute)
			if j.State != "failed" || j.Tasks.DeadLettered != 1 || j.Records.Loaded != at {
				t.Fatalf("job ended %+v, want failed with the crawl dead-lettered after %d records", j, at)
			}
			letters := p.deadLetters(t)
			if len(letters) != 1 || letters[0].ErrorClass != "stuck_cursor" || letters[0].Attempts != 7 {
				t.Fatalf("dead letters %v, want one stuck_cursor after 7 attempts", letters)
			}
			checkExact(t, p, "stuck", at, src.RecordSize)
		})
	}
}

// TestPipelineTimeWindows splits a 200,000-record source without a total into hour windows, each
// read by offsets to its end, over three extractors: every record lands once and every extractor
// took windows.
func TestPipelineTimeWindows(t *testing.T) {
	stacktest.Require(t)
	const n = 200_000 // created one second apart from 2020-01-01T00:00:00Z: 55.6 hours
	src := demosource.DefaultConfig()
	src.Records, src.PageLatency = n, 5*time.Millisecond
	p := newPipeline(t, src)
	planner := start(t, "planner", p.env).ready(t)
	var extractors []*proc
	for i := range 3 {
		x := start(t, fmt.Sprintf("extractor-%d", i+1), p.env)
		x.ready(t)
		extractors = append(extractors, x)
	}
	start(t, "loader", p.env).ready(t)
	spec := fmt.Sprintf(`name: windows
source:
  type: http
  url: %s/api/users
  records_path: data
  key: id
  pagination: {type: offset, page_size: 1000}
  slices: {type: time, param_from: created_from, param_to: created_to, start: 2020-01-01T00:00:00Z, end: 2020-01-03T08:00:00Z, step: 1h}
sink:
  table: windows
`, p.srcURL)
	j := submit(t, planner, spec)
	j = await(t, planner, j.ID, 4*time.Minute)
	if j.State != "succeeded" || j.Tasks.Planned != 56 || j.Records.Extracted != n || j.Records.Loaded != n {
		t.Fatalf("job ended %+v, want succeeded with 56 windows and %d records", j, n)
	}
	for _, x := range extractors {
		if done := metric(t, x.addr(t), "extractor_tasks_total", `outcome="extracted"`); done == 0 {
			t.Fatalf("%s took no window: the work was not spread", x.name)
		}
	}
	checkExact(t, p, "windows", n, src.RecordSize)
}
