package deploy

import (
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/sluicedata/sluice/pkg/demosource"
	"github.com/sluicedata/sluice/pkg/stacktest"
)

// jobSpec is a job over the in-process demo source.
func jobSpec(name, url, table string, tasks, pageSize, maxRetries int) string {
	return fmt.Sprintf(`name: %s
source:
  type: http
  url: %s/api/users
  records_path: data
  key: id
  pagination:
    type: offset
    offset_param: offset
    limit_param: limit
    page_size: %d
    total_path: total
  timeout: 5s
  max_retries: %d
tasks: %d
sink:
  table: %s
`, name, url, pageSize, maxRetries, tasks, table)
}

// checkExact asserts that table holds exactly records [0, n) of the demo source, byte for byte.
func checkExact(t *testing.T, p *pipeline, table string, n int64, size int) {
	t.Helper()
	got := p.rows(t, table)
	if int64(len(got)) != n {
		t.Fatalf("%d distinct keys in %s, want %d", len(got), table, n)
	}
	for i := range n {
		want := string(demosource.Record(i, size))
		if got[strconv.FormatInt(i, 10)] != want {
			t.Fatalf("record %d differs from what the source served:\n got %q\nwant %q", i, got[strconv.FormatInt(i, 10)], want)
		}
	}
}

// TestPipelineEndToEnd extracts 50,000 records through the real services: every record lands in
// ClickHouse once after deduplication, byte-identical to what the source served, and the job
// succeeds with its counts.
func TestPipelineEndToEnd(t *testing.T) {
	stacktest.Require(t)
	const n = 50_000
	src := demosource.DefaultConfig()
	src.Records = n
	p := newPipeline(t, src)

	planner := start(t, "planner", p.env).ready(t)
	start(t, "extractor", p.env).ready(t)
	start(t, "loader", p.env).ready(t)

	j := submit(t, planner, jobSpec("users", p.srcURL, "users", 16, 500, 3))
	if j.Tasks.Planned != 16 || j.Records.Expected != n {
		t.Fatalf("planned %+v, want 16 tasks and %d records", j, n)
	}
	j = await(t, planner, j.ID, 3*time.Minute)
	if j.State != "succeeded" || j.Records.Loaded != n || j.Records.Extracted != n || j.Records.DeadLettered != 0 {
		t.Fatalf("job ended %+v", j)
	}
	checkExact(t, p, "users", n, src.RecordSize)
}

// TestPipelineSourceFaults runs the same job against a source that answers 429 with Retry-After,
// bursts of 5xx, slow pages and truncated bodies: the result is the same, the retry counters moved,
// and no request came before its Retry-After.
func TestPipelineSourceFaults(t *testing.T) {
	stacktest.Require(t)
	const n = 50_000
	src := demosource.DefaultConfig()
	src.Records = n
	src.Rate429 = 0.08
	src.RetryAfter = time.Second
	src.Rate5xx = 0.05
	src.Burst5xx = 3
	src.RateSlow = 0.03
	src.SlowDelay = 6 * time.Second // longer than the job's 5 s request timeout
	src.RateTruncated = 0.05
	p := newPipeline(t, src)

	env := p.with(map[string]string{"SLUICE_EXTRACTOR_CONCURRENCY": "8", "SLUICE_EXTRACTOR_RETRY_BASE": "50ms", "SLUICE_EXTRACTOR_RETRY_MAX": "2s"})
	planner := start(t, "planner", env).ready(t)
	extractor := start(t, "extractor", env).ready(t)
	start(t, "loader", env).ready(t)

	j := submit(t, planner, jobSpec("faulty", p.srcURL, "faulty", 16, 500, 12))
	j = await(t, planner, j.ID, 5*time.Minute)
	if j.State != "succeeded" || j.Records.Loaded != n || j.Tasks.DeadLettered != 0 {
		t.Fatalf("job ended %+v", j)
	}
	checkExact(t, p, "faulty", n, src.RecordSize)

	stats := p.source.Stats()
	if stats.EarlyRequests != 0 {
		t.Errorf("%d requests came before their Retry-After", stats.EarlyRequests)
	}
	tests := []struct {
		reason string
		served int64
	}{
		{"http_429", stats.ByStatus["429"]},
		{"http_5xx", stats.ByStatus["500"] + stats.ByStatus["502"] + stats.ByStatus["503"]},
		{"truncated", stats.Truncated},
		{"timeout", stats.Slow},
	}
	for _, tt := range tests {
		t.Run(tt.reason, func(t *testing.T) {
			retried := metric(t, extractor, "extractor_retries_total", `reason="`+tt.reason+`"`)
			if tt.served == 0 || retried == 0 {
				t.Fatalf("source served %d faults of this kind, extractor retried %v", tt.served, retried)
			}
		})
	}
	if waits := metric(t, extractor, "extractor_retry_after_waits_total"); waits == 0 {
		t.Error("extractor_retry_after_waits_total did not move")
	}
}
