package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/sethvargo/go-envconfig"
)

// pagedPlanner serves n items under key at path in pages of at most 100 (100 when no limit is
// asked), however many are asked for, as a planner may; the cursor is the index of the next item.
// It records the cursors asked.
func pagedPlanner(t *testing.T, path, key string, n int, item func(i int) any, extra map[string]any) (*httptest.Server, *[]string) {
	t.Helper()
	var asked []string
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != path {
			http.Error(w, `{"error": "no such path"}`, http.StatusNotFound)
			return
		}
		cursor := r.URL.Query().Get("cursor")
		asked = append(asked, cursor)
		from, _ := strconv.Atoi(cursor)
		limit, err := 100, error(nil)
		if v := r.URL.Query().Get("limit"); v != "" {
			limit, err = strconv.Atoi(v)
		}
		if err != nil || limit < 1 || limit > 1000 {
			http.Error(w, `{"error": "limit must be an integer from 1 to 1000"}`, http.StatusBadRequest)
			return
		}
		to := min(from+limit, from+100, n)
		answer := map[string]any{}
		for k, v := range extra {
			answer[k] = v
		}
		items := []any{}
		for i := from; i < to; i++ {
			items = append(items, item(i))
		}
		answer[key] = items
		if to < n {
			answer["next_cursor"] = strconv.Itoa(to)
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(answer)
	}))
	t.Cleanup(ts.Close)
	return ts, &asked
}

func runCtl(t *testing.T, url string, args ...string) string {
	t.Helper()
	var stdout, stderr bytes.Buffer
	env := envconfig.MapLookuper(map[string]string{"SLUICE_PLANNER_URL": url})
	if code, err := run(context.Background(), args, env, &stdout, &stderr); code != 0 || err != nil {
		t.Fatalf("sluicectl %v: exit %d: %v\n%s", args, code, err, stderr.String())
	}
	return stdout.String()
}

// TestJobsFollowsPages lists all 250 jobs of a planner that serves 100 a page, in its order, each
// once, as JSON and as a table.
func TestJobsFollowsPages(t *testing.T) {
	var want []string
	for i := range 250 {
		want = append(want, fmt.Sprintf("users-%03d", 249-i))
	}
	ts, asked := pagedPlanner(t, "/v1/jobs", "jobs", 250, func(i int) any {
		return map[string]any{"id": want[i], "state": "succeeded", "table": "users"}
	}, nil)
	var got []job
	if err := json.Unmarshal([]byte(runCtl(t, ts.URL, "jobs", "-o", "json")), &got); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, j := range got {
		ids = append(ids, j.ID)
	}
	if !slices.Equal(ids, want) {
		t.Fatalf("sluicectl jobs listed %d jobs, want the 250 in the planner's order", len(ids))
	}
	if !slices.Equal(*asked, []string{"", "100", "200"}) {
		t.Fatalf("asked with the cursors %q, want the first page, then 100 and 200", *asked)
	}
	lines := strings.Split(strings.TrimSpace(runCtl(t, ts.URL, "jobs")), "\n")
	if len(lines) != 251 || !strings.HasPrefix(lines[1], want[0]) || !strings.HasPrefix(lines[250], want[249]) {
		t.Fatalf("the table has %d lines, want a header and 250 jobs:\n%s", len(lines), strings.Join(lines, "\n"))
	}
}

// TestTasksFollowsPages lists all 250 tasks of a job, in order, as the planner serves them 100 a
// page, with the answer's fields as they were.
func TestTasksFollowsPages(t *testing.T) {
	ts, _ := pagedPlanner(t, "/v1/jobs/users-1/tasks", "tasks", 250, func(i int) any {
		return map[string]any{"id": fmt.Sprintf("users-1-t%04d", i), "state": "extracted", "runs": 1, "records": 10, "loaded": 10}
	}, map[string]any{"all": true, "total": 250})
	var got struct {
		Tasks []taskView `json:"tasks"`
		All   bool       `json:"all"`
	}
	out := runCtl(t, ts.URL, "tasks", "users-1", "-o", "json")
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatal(err)
	}
	if len(got.Tasks) != 250 || !got.All || strings.Contains(out, "next_cursor") {
		t.Fatalf("%d tasks, all %v; want 250, all, and no cursor in the output", len(got.Tasks), got.All)
	}
	for i, v := range got.Tasks {
		if v.ID != fmt.Sprintf("users-1-t%04d", i) {
			t.Fatalf("task %d is %s", i, v.ID)
		}
	}
	if lines := strings.Split(strings.TrimSpace(runCtl(t, ts.URL, "tasks", "users-1")), "\n"); len(lines) != 251 {
		t.Fatalf("the table has %d lines, want a header and 250 tasks", len(lines))
	}
}
