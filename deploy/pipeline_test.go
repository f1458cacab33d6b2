package deploy

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/sluicedata/sluice/pkg/demosource"
	"github.com/sluicedata/sluice/pkg/stacktest"
	sluicev1 "github.com/sluicedata/sluice/proto/sluice/v1"
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
func checkExact(t *testing.T, p *deployment, table string, n int64, size int) {
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

	first := start(t, "planner-1", p.env)
	planner := first.ready(t)
	start(t, "extractor", p.env).ready(t)
	start(t, "loader", p.env).ready(t)

	// Submitted the way a user does, waiting with sluicectl: exit 0 only when the job succeeded.
	specFile := filepath.Join(t.TempDir(), "users.yaml")
	if err := os.WriteFile(specFile, []byte(jobSpec("users", p.srcURL, "users", 16, 500, 3)), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out := p.sluicectl(t, planner, "submit", specFile, "--wait", "-o", "json")
	var j job
	if err := json.Unmarshal([]byte(out), &j); err != nil || code != 0 {
		t.Fatalf("sluicectl submit --wait exited %d with %q (%v)", code, out, err)
	}
	if j.Tasks.Planned != 16 || j.Records.Expected != n || j.State != "succeeded" || j.Records.Loaded != n ||
		j.Records.Extracted != n || j.Records.DeadLettered != 0 {
		t.Fatalf("job ended %+v", j)
	}

	// A new planner rebuilds the job's progress from the events topic.
	first.stop(t, syscall.SIGTERM)
	again := poll(t, start(t, "planner-2", p.env).ready(t), j.ID)
	if again.State != j.State || again.Records != j.Records || again.Tasks != j.Tasks {
		t.Fatalf("after a planner restart the job is %+v, was %+v", again, j)
	}
	checkExact(t, p, "users", n, src.RecordSize)
}

// TestPipelineDeadLettersFailingTask gives one task a page that always fails: that task is
// dead-lettered with its context after its retries, the other tasks complete, and the job reports
// it as failed with exactly the records before the failing page loaded.
func TestPipelineDeadLettersFailingTask(t *testing.T) {
	stacktest.Require(t)
	const n = 20_000
	src := demosource.DefaultConfig()
	src.Records = n
	src.FailRanges = "10000-10099"
	p := newPipeline(t, src)
	env := p.with(map[string]string{"SLUICE_EXTRACTOR_RETRY_BASE": "10ms", "SLUICE_EXTRACTOR_RETRY_MAX": "50ms"})
	planner := start(t, "planner", env).ready(t)
	start(t, "extractor", env).ready(t)
	start(t, "loader", env).ready(t)

	j := submit(t, planner, jobSpec("failing", p.srcURL, "failing", 8, 500, 2))
	j = await(t, planner, j.ID, 3*time.Minute)
	if j.State != "failed" || j.Tasks.DeadLettered != 1 || j.Tasks.Extracted != 7 || j.Reason == "" {
		t.Fatalf("job ended %+v, want failed with 1 of 8 tasks dead-lettered", j)
	}
	if code, _ := p.sluicectl(t, planner, "status", j.ID); code != 0 {
		t.Fatalf("sluicectl status exited %d", code)
	}
	code, out := p.sluicectl(t, planner, "dlq", "list", "--job", j.ID, "-o", "json")
	var listed []struct {
		Stage     string `json:"stage"`
		Class     string `json:"error_class"`
		Task      string `json:"task_id"`
		Partition int32  `json:"partition"`
		Offset    int64  `json:"offset"`
	}
	if err := json.Unmarshal([]byte(out), &listed); err != nil || code != 0 || len(listed) != 1 ||
		listed[0].Stage != "extract" || listed[0].Class != "http_5xx" {
		t.Fatalf("sluicectl dlq list exited %d: %s (%v)", code, out, err)
	}
	// The planner follows the dead letters for its status page: the same letter, counted for the job.
	var served struct {
		Letters []struct {
			Offset int64  `json:"offset"`
			Class  string `json:"error_class"`
		}
		Counts []struct {
			Stage   string `json:"stage"`
			Letters int    `json:"letters"`
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for len(served.Letters) == 0 && time.Now().Before(deadline) {
		getJSON(t, planner, "/v1/deadletters?job="+j.ID+"&stage=extract", &served)
		if len(served.Letters) == 0 {
			time.Sleep(200 * time.Millisecond)
		}
	}
	if len(served.Letters) != 1 || served.Letters[0].Offset != listed[0].Offset || served.Letters[0].Class != "http_5xx" ||
		len(served.Counts) != 1 || served.Counts[0].Letters != 1 || served.Counts[0].Stage != "extract" {
		t.Fatalf("GET /v1/deadletters: %+v, want the letter dlq list gives", served)
	}
	// tasks lists what the finished job keeps: its one dead-lettered task, the one dlq list names.
	code, out = p.sluicectl(t, planner, "tasks", j.ID, "-o", "json")
	var tasks struct {
		Tasks []struct{ ID, State string }
		All   bool
	}
	if err := json.Unmarshal([]byte(out), &tasks); err != nil || code != 0 || tasks.All || len(tasks.Tasks) != 1 ||
		tasks.Tasks[0].State != "dead_lettered" || tasks.Tasks[0].ID != listed[0].Task {
		t.Fatalf("sluicectl tasks exited %d: %s (%v)", code, out, err)
	}
	// dlq show prints the letter in full: the head of the source's answer is the demo source's 500.
	code, out = p.sluicectl(t, planner, "dlq", "show", fmt.Sprintf("%d/%d", listed[0].Partition, listed[0].Offset), "-o", "yaml")
	if code != 0 || !strings.Contains(out, "task_id: "+listed[0].Task) || !strings.Contains(out, "response_head:") || !strings.Contains(out, "http_status: 500") {
		t.Fatalf("sluicectl dlq show exited %d:\n%s", code, out)
	}

	letters := p.deadLetters(t)
	if len(letters) != 1 {
		t.Fatalf("%d dead letters, want the one task", len(letters))
	}
	dl := letters[0]
	var task sluicev1.Task
	if err := proto.Unmarshal(dl.Payload, &task); err != nil {
		t.Fatalf("dead letter payload is not the task: %v", err)
	}
	r := task.GetOffsets()
	if dl.Stage != sluicev1.DeadLetter_STAGE_EXTRACT || dl.ErrorClass != "http_5xx" || dl.HttpStatus != 500 ||
		dl.Attempts != 3 || dl.OriginalTopic != p.kafka.TasksTopic || dl.JobId != j.ID || dl.TaskId != task.TaskId ||
		r == nil || r.Start > 10000 || r.End <= 10000 || len(dl.ResponseHead) == 0 {
		t.Fatalf("dead letter %+v for task %+v", dl, &task)
	}

	// Everything but the failed task's records from the failing page on is loaded.
	got := p.rows(t, "failing")
	want := n - int(r.End-10000)
	if len(got) != want || j.Records.Loaded != uint64(want) {
		t.Fatalf("%d rows in clickhouse, job says %d loaded; want %d", len(got), j.Records.Loaded, want)
	}
	for i := range int64(n) {
		_, in := got[strconv.FormatInt(i, 10)]
		if in == (i >= 10000 && i < int64(r.End)) {
			t.Fatalf("record %d: in clickhouse = %v", i, in)
		}
	}
}

// TestPipelineMembersStopped runs two extractors and two loaders on the same groups and stops one
// of each in the middle of the run: the others take over their partitions and nothing is lost.
func TestPipelineMembersStopped(t *testing.T) {
	stacktest.Require(t)
	const n = 40_000
	src := demosource.DefaultConfig()
	src.Records = n
	src.PageLatency = 60 * time.Millisecond
	p := newPipeline(t, src)
	env := p.with(map[string]string{"SLUICE_LOADER_BATCH_ROWS": "2000"})
	planner := start(t, "planner", env).ready(t)
	x1 := start(t, "extractor-1", env)
	x2 := start(t, "extractor-2", env)
	l1 := start(t, "loader-1", env)
	l2 := start(t, "loader-2", env)
	for _, s := range []*proc{x1, x2, l1, l2} {
		s.ready(t)
	}

	j := submit(t, planner, jobSpec("members", p.srcURL, "members", 12, 200, 3))
	p.waitRows(t, "members", n/5, time.Minute)
	x1.stop(t, syscall.SIGTERM)
	l1.stop(t, syscall.SIGTERM)

	j = await(t, planner, j.ID, 3*time.Minute)
	if j.State != "succeeded" {
		t.Fatalf("job ended %+v", j)
	}
	checkExact(t, p, "members", n, src.RecordSize)
}

// TestPipelineMalformedSourceRecords serves records without a key, with invalid UTF-8 and with an
// object as key: exactly those are dead-lettered by the loader, the job succeeds, and every other
// record is loaded byte for byte.
func TestPipelineMalformedSourceRecords(t *testing.T) {
	stacktest.Require(t)
	const n, every = 10_000, 1_000
	src := demosource.DefaultConfig()
	src.Records = n
	src.MalformedEvery = every
	p := newPipeline(t, src)
	planner := start(t, "planner", p.env).ready(t)
	start(t, "extractor", p.env).ready(t)
	start(t, "loader", p.env).ready(t)

	j := submit(t, planner, jobSpec("malformed", p.srcURL, "malformed", 4, 500, 3))
	j = await(t, planner, j.ID, 3*time.Minute)
	const bad = n / every
	if j.State != "succeeded" || j.Records.Loaded != n-bad || j.Records.DeadLettered != bad {
		t.Fatalf("job ended %+v, want %d loaded and %d dead-lettered", j, n-bad, bad)
	}
	classes := map[string]int{}
	for _, dl := range p.deadLetters(t) {
		classes[dl.ErrorClass]++
		var rec sluicev1.Record
		if err := proto.Unmarshal(dl.Payload, &rec); err == nil && len(rec.Payload) > 0 {
			t.Fatalf("dead letter holds an envelope, want the record's own bytes: %q", dl.Payload)
		}
		i, _ := strconv.ParseInt(string(dl.OriginalKey), 10, 64)
		if dl.Stage != sluicev1.DeadLetter_STAGE_LOAD || dl.JobId != j.ID || dl.OriginalTopic != p.kafka.RawTopic ||
			(len(dl.OriginalKey) > 0 && !demosource.IsMalformed(i, every)) {
			t.Fatalf("dead letter %+v", dl)
		}
	}
	if classes["missing_key"]+classes["invalid_utf8"] != bad || classes["invalid_utf8"] == 0 {
		t.Fatalf("dead letters by class %v, want %d in missing_key and invalid_utf8", classes, bad)
	}
	got := p.rows(t, "malformed")
	for i := range int64(n) {
		payload, in := got[strconv.FormatInt(i, 10)]
		if demosource.IsMalformed(i, every) == in || (in && payload != string(demosource.Record(i, src.RecordSize))) {
			t.Fatalf("record %d: in clickhouse = %v, payload %q", i, in, payload)
		}
	}
}
