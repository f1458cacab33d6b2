package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sluicedata/sluice/pkg/demosource"
	"github.com/sluicedata/sluice/pkg/events"
	"github.com/sluicedata/sluice/pkg/jobspec"
	"github.com/sluicedata/sluice/pkg/source"
	sluicev1 "github.com/sluicedata/sluice/proto/sluice/v1"
)

// planRun publishes the planned event of a run of the incremental job name with one task per
// cursor, and returns its id once the planner folded it in.
func (r *plannerRig) planRun(t *testing.T, p *Planner, name string, tasks int) string {
	t.Helper()
	id := fmt.Sprintf("%s-run-%d", name, time.Now().UnixNano())
	ev := &sluicev1.JobEvent{JobId: id, At: timestamppb.Now(), Producer: "planner", Event: &sluicev1.JobEvent_Planned{Planned: &sluicev1.JobPlanned{
		Name: name, Table: name, Tasks: uint32(tasks), ExpectedUnknown: true,
		Source: &sluicev1.Source{Incremental: &sluicev1.Incremental{CursorField: "updated_at"}}}}}
	if err := events.Publish(context.Background(), r.client(t), r.events, ev); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the run to be planned", func() bool { _, ok := p.jobs.Get(id, time.Now()); return ok })
	return id
}

// finishRun publishes the events of a run of the incremental job name that succeeded: one task per
// cursor, each reporting that cursor as its largest (the first also the values its extractor
// rejected), with its record loaded. It returns the job once the planner folded it in and weighed
// its cursor against the mark.
func (r *plannerRig) finishRun(t *testing.T, p *Planner, name string, rejected *sluicev1.CursorRejected, cursors ...string) Job {
	t.Helper()
	ctx := context.Background()
	id := r.planRun(t, p, name, len(cursors))
	at := timestamppb.Now()
	var evs []*sluicev1.JobEvent
	for i, c := range cursors {
		task := fmt.Sprintf("%s-t%d", id, i)
		x := &sluicev1.TaskExtracted{TaskId: task, Run: "r1", Records: 1, MaxCursor: c}
		if i == 0 {
			x.CursorRejected = rejected
		}
		evs = append(evs,
			&sluicev1.JobEvent{JobId: id, At: at, Event: &sluicev1.JobEvent_TaskExtracted{TaskExtracted: x}},
			&sluicev1.JobEvent{JobId: id, At: at, Event: &sluicev1.JobEvent_RecordsLoaded{RecordsLoaded: &sluicev1.RecordsLoaded{
				TaskId: task, Run: "r1", Records: 1, Offsets: []*sluicev1.OffsetSpan{{First: int64(i), Last: int64(i)}}}}})
	}
	for _, ev := range evs {
		if err := events.Publish(ctx, r.client(t), r.events, ev); err != nil {
			t.Fatal(err)
		}
	}
	waitUntil(t, "the run to succeed", func() bool { j, _ := p.jobs.Get(id, time.Now()); return j.State == stateSucceeded })
	if err := p.advanceMarks(ctx); err != nil {
		t.Fatal(err)
	}
	j, _ := p.jobs.Get(id, time.Now())
	return j
}

// stored returns the last state of job id on the jobs topic.
func (r *plannerRig) stored(t *testing.T, id string) *sluicev1.JobState {
	t.Helper()
	var st *sluicev1.JobState
	for _, rec := range r.count(t, "jobs") {
		if string(rec.Key) == id {
			st = &sluicev1.JobState{}
			if err := proto.Unmarshal(rec.Value, st); err != nil {
				t.Fatal(err)
			}
		}
	}
	return st
}

// TestMarkRefusesCursorsItCannotTrust: a run whose largest cursor lies decades ahead, is no cursor
// at all, or is of another kind than the mark (as an extractor that does not check reports it)
// leaves the mark where the run before left it, and its status and the metric count it; a run
// whose extractors left such values out moves the mark to the largest of the others. A planner
// started anew keeps both, and counts none of it again.
func TestMarkRefusesCursorsItCannotTrust(t *testing.T) {
	for _, c := range []struct {
		name      string
		cursors   []string
		rejected  *sluicev1.CursorRejected
		wantMark  string
		wantCount CursorRejected
	}{
		{"future", []string{"2099-01-01T00:00:00Z", "2024-02-01T00:00:00Z"}, nil, "2024-03-01T00:00:00Z", CursorRejected{Future: 1}},
		{"unparseable", []string{"N/A", "2024-02-01T00:00:00Z"}, nil, "2024-03-01T00:00:00Z", CursorRejected{Unparseable: 1}},
		{"another kind", []string{"1717243200"}, nil, "2024-03-01T00:00:00Z", CursorRejected{Unparseable: 1}},
		{"left out by the extractors", []string{"2024-04-01T00:00:00Z"}, &sluicev1.CursorRejected{Unparseable: 2, Future: 3},
			"2024-04-01T00:00:00Z", CursorRejected{Unparseable: 2, Future: 3}},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := newPlannerRig(t)
			p := r.start(t)
			r.finishRun(t, p, "items", nil, "2024-03-01T00:00:00Z")
			j := r.finishRun(t, p, "items", c.rejected, c.cursors...)
			if m := p.names.mark("items"); m.GetValue() != c.wantMark {
				t.Fatalf("the mark is %q after a run of cursors %q, want %s", m.GetValue(), c.cursors, c.wantMark)
			}
			if j.CursorRejected != c.wantCount {
				t.Fatalf("the run's status counts %+v rejected, want %+v", j.CursorRejected, c.wantCount)
			}
			for reason, want := range map[string]uint64{source.RejectUnparseable: c.wantCount.Unparseable, source.RejectFuture: c.wantCount.Future} {
				if got := testutil.ToFloat64(p.jobs.rejected.WithLabelValues(reason)); got != float64(want) {
					t.Errorf("planner_cursor_values_rejected_total{reason=%q} = %v, want %d", reason, got, want)
				}
			}
			waitUntil(t, "the run's state on the jobs topic", func() bool {
				st := r.stored(t, j.ID)
				return st != nil && st.GetCursorRejected().GetUnparseable() == c.wantCount.Unparseable && st.GetCursorRejected().GetFuture() == c.wantCount.Future
			})

			again := r.start(t)
			if err := again.advanceMarks(context.Background()); err != nil {
				t.Fatal(err)
			}
			if m := again.names.mark("items"); m.GetValue() != c.wantMark {
				t.Fatalf("after a restart the mark is %q, want %s", m.GetValue(), c.wantMark)
			}
			if got, _ := again.jobs.Get(j.ID, time.Now()); got.CursorRejected != c.wantCount {
				t.Fatalf("after a restart the run's status counts %+v rejected, want %+v", got.CursorRejected, c.wantCount)
			}
			for _, reason := range []string{source.RejectUnparseable, source.RejectFuture} {
				if got := testutil.ToFloat64(again.jobs.rejected.WithLabelValues(reason)); got != 0 {
					t.Errorf("a restarted planner counted %v %s values again", got, reason)
				}
			}
		})
	}
}

// serveAPI serves p's API behind the tokens of auth_test.go until the test ends.
func serveAPI(t *testing.T, p *Planner) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "tokens")
	body := "dash read " + readToken + "\nci submit " + submitToken + "\nops admin " + adminToken + "\n"
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	tokens, err := openTokens(path, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	p.auth = &authorizer{tokens: tokens}
	mux := http.NewServeMux()
	p.routes(mux.Handle)
	ts := httptest.NewServer(mux)
	t.Cleanup(ts.Close)
	return ts.URL
}

// ask sends a request with token and returns the status and the body.
func ask(t *testing.T, method, url, token, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestMarksAPI shows a mark to every role and lets admins alone set it; refuses values no run could
// go on from, and any change while a run of the job runs; stores the mark on the jobs topic before
// it answers, so that a planner started anew has it; and keeps runs that began before a reset from
// moving the mark after it, a restart included.
func TestMarksAPI(t *testing.T) {
	r := newPlannerRig(t)
	p := r.start(t)
	base := serveAPI(t, p)
	first := r.finishRun(t, p, "items", nil, "2024-03-01T00:00:00Z")
	mark := base + "/v1/marks/items"

	for _, c := range []struct {
		name, method, url, token, body string
		want                           int
		says                           string
	}{
		{"no token", "GET", mark, "", "", http.StatusUnauthorized, "bearer token"},
		{"read", "GET", mark, readToken, "", http.StatusOK, `"value":"2024-03-01T00:00:00Z"`},
		{"no mark", "GET", base + "/v1/marks/other", readToken, "", http.StatusNotFound, "no mark"},
		{"read sets", "PUT", mark, readToken, `{"value": "2024-01-01T00:00:00Z"}`, http.StatusForbidden, "needs admin"},
		{"submit sets", "PUT", mark, submitToken, `{"value": "2024-01-01T00:00:00Z"}`, http.StatusForbidden, "needs admin"},
		{"no cursor", "PUT", mark, adminToken, `{"value": "N/A"}`, http.StatusBadRequest, "neither a time"},
		{"future", "PUT", mark, adminToken, `{"value": "2099-01-01T00:00:00Z"}`, http.StatusBadRequest, "SLUICE_PLANNER_MARK_MAX_SKEW"},
		{"another kind", "PUT", mark, adminToken, `{"value": 1717243200}`, http.StatusBadRequest, "reset the mark first"},
		{"no value", "PUT", mark, adminToken, `{}`, http.StatusBadRequest, "is required"},
		{"unknown field", "PUT", mark, adminToken, `{"value": null, "force": true}`, http.StatusBadRequest, "unknown field"},
		{"no job name", "PUT", base + "/v1/marks/Items", adminToken, `{"value": null}`, http.StatusBadRequest, "no job name"},
	} {
		t.Run(c.name, func(t *testing.T) {
			status, body := ask(t, c.method, c.url, c.token, c.body)
			if status != c.want || !strings.Contains(body, c.says) {
				t.Fatalf("%s %s: %d %s, want %d saying %q", c.method, c.url, status, body, c.want, c.says)
			}
		})
	}
	if m := p.names.mark("items"); m.GetValue() != "2024-03-01T00:00:00Z" {
		t.Fatalf("refused changes moved the mark to %q", m.GetValue())
	}

	// While a run runs, the mark stays as it is.
	running := r.planRun(t, p, "items", 1)
	if status, body := ask(t, "PUT", mark, adminToken, `{"value": "2024-01-01T00:00:00Z"}`); status != http.StatusConflict {
		t.Fatalf("PUT while %s runs: %d %s, want 409", running, status, body)
	}
	if _, err := p.Cancel(context.Background(), running, "test"); err != nil {
		t.Fatal(err)
	}

	// Moved back by hand: stored before the answer, kept by a planner started anew, and not moved
	// by the run that read up to 2024-03-01 before (a restarted planner weighs its cursor again).
	status, body := ask(t, "PUT", mark, adminToken, `{"value": "2024-01-01T00:00:00Z"}`)
	var got MarkView
	if err := json.Unmarshal([]byte(body), &got); status != http.StatusOK || err != nil {
		t.Fatalf("PUT: %d %s", status, body)
	}
	if got.Value == nil || *got.Value != "2024-01-01T00:00:00Z" || got.Kind != source.KindTime || got.SetBy != "ops" || got.JobID != "" {
		t.Fatalf("PUT answered %s", body)
	}
	var onTopic sluicev1.State
	for _, rec := range r.count(t, "jobs") {
		if string(rec.Key) == "mark/items" {
			if err := proto.Unmarshal(rec.Value, &onTopic); err != nil {
				t.Fatal(err)
			}
		}
	}
	if onTopic.GetMark().GetValue() != "2024-01-01T00:00:00Z" || onTopic.GetMark().GetSetBy() != "ops" {
		t.Fatalf("the jobs topic's last mark/items is %v", &onTopic)
	}
	again := r.start(t)
	if err := again.advanceMarks(context.Background()); err != nil {
		t.Fatal(err)
	}
	if m := again.names.mark("items"); m.GetValue() != "2024-01-01T00:00:00Z" {
		t.Fatalf("a restarted planner has the mark %q, want the one set by hand; the run before it (%s) read up to %s",
			m.GetValue(), first.ID, first.MaxCursor)
	}
	base = serveAPI(t, again)
	if status, body := ask(t, "GET", base+"/v1/marks/items", readToken, ""); status != http.StatusOK || !strings.Contains(body, `"set_by":"ops"`) {
		t.Fatalf("GET from a restarted planner: %d %s", status, body)
	}

	// Reset: the next run starts from the initial value; a run planned after it moves the mark again.
	if status, body := ask(t, "PUT", base+"/v1/marks/items", adminToken, `{"value": null}`); status != http.StatusOK || !strings.Contains(body, `"value":null`) {
		t.Fatalf("reset: %d %s", status, body)
	}
	if m := again.names.mark("items"); m == nil || m.Value != "" {
		t.Fatalf("after a reset the mark is %v", m)
	}
	r.finishRun(t, again, "items", nil, "2024-02-01T00:00:00Z")
	if m := again.names.mark("items"); m.GetValue() != "2024-02-01T00:00:00Z" || m.GetSetBy() != "" {
		t.Fatalf("a run after the reset left the mark %v, want 2024-02-01T00:00:00Z set by the run", m)
	}
}

// TestIncrementalRunCarriesTheRule: a run's tasks carry the rule the extractors apply to every
// record's cursor (the kind its mark is, the planner's skew), and a run whose mark was set by hand
// while its source was asked is refused rather than read from the mark before.
func TestIncrementalRunCarriesTheRule(t *testing.T) {
	r := newPlannerRig(t)
	p := r.start(t)
	srcCfg := demosource.DefaultConfig()
	srcCfg.Records = 100
	src, err := demosource.New(srcCfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	var setOnce sync.Once
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		setOnce.Do(func() {
			if _, err := p.SetMark(req.Context(), "users", "2020-01-01T00:01:00Z", "ops"); err != nil {
				t.Errorf("set the mark while the run is planned: %v", err)
			}
		})
		src.Handler().ServeHTTP(w, req)
	}))
	defer ts.Close()
	spec, err := jobspec.Parse([]byte(`name: users
source:
  type: http
  url: ` + ts.URL + `/api/users
  records_path: data
  key: id
  pagination: {type: offset, offset_param: offset, limit_param: limit, page_size: 50, total_path: total}
incremental: {cursor_field: created_at, param: created_from, lookback: 30s}
sink: {table: users}
`))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := p.Submit(context.Background(), spec, ""); !errors.Is(err, errMarkMoved) {
		t.Fatalf("a run whose mark was set while it was planned: %v, want errMarkMoved", err)
	}
	if _, _, err := p.Submit(context.Background(), spec, ""); err != nil {
		t.Fatal(err)
	}
	tasks := r.count(t, "tasks")
	if len(tasks) == 0 {
		t.Fatal("no task published")
	}
	for _, rec := range tasks {
		var task sluicev1.Task
		if err := proto.Unmarshal(rec.Value, &task); err != nil {
			t.Fatal(err)
		}
		in := task.GetSource().GetIncremental()
		if in.GetSince() != "2020-01-01T00:00:30Z" || in.GetKind() != source.KindTime || in.GetMaxSkew().AsDuration() != 24*time.Hour {
			t.Fatalf("task %s reads since %q with kind %q and skew %s; want 2020-01-01T00:00:30Z, time, 24h",
				task.TaskId, in.GetSince(), in.GetKind(), in.GetMaxSkew().AsDuration())
		}
	}
}
