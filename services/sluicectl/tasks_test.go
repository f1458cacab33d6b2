package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/sethvargo/go-envconfig"
)

// TestTasksTable prints a task's records once it ended, and a dash while they are not known. The
// planner's first answer is a 503 that asks to be asked again, as while it reads its events.
func TestTasksTable(t *testing.T) {
	var asked int
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if asked++; asked == 1 {
			w.Header().Set("Retry-After", "1")
			http.Error(w, `{"error": "still reading"}`, http.StatusServiceUnavailable)
			return
		}
		if r.URL.Path != "/v1/jobs/users-1/tasks" || r.Header.Get("Authorization") != "Bearer tok" {
			http.Error(w, "no", http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"all": true, "tasks": [
			{"id": "t0", "state": "extracted", "runs": 1, "records": 250, "loaded": 250},
			{"id": "t1", "state": "extracting", "runs": 1, "records": 0, "loaded": 100},
			{"id": "t2", "state": "waiting", "runs": 0, "records": 0, "loaded": 0}]}`)
	}))
	defer ts.Close()
	var stdout, stderr bytes.Buffer
	env := envconfig.MapLookuper(map[string]string{"SLUICE_PLANNER_URL": ts.URL, "SLUICE_PLANNER_TOKEN": "tok"})
	if code, err := run(context.Background(), []string{"tasks", "users-1"}, env, &stdout, &stderr); code != 0 || err != nil {
		t.Fatalf("exit %d: %v\n%s", code, err, stderr.String())
	}
	if asked != 2 {
		t.Fatalf("the planner was asked %d times, want again after its 503", asked)
	}
	var got [][]string
	for _, line := range strings.Split(strings.TrimSpace(stdout.String()), "\n") {
		got = append(got, strings.Fields(line))
	}
	want := [][]string{
		{"TASK", "STATE", "RUNS", "RECORDS", "LOADED", "DEAD-LETTERED"},
		{"t0", "extracted", "1", "250", "250", "0"},
		{"t1", "extracting", "1", "-", "100", "0"},
		{"t2", "waiting", "0", "-", "0", "0"},
	}
	if len(got) != len(want) {
		t.Fatalf("table:\n%s", stdout.String())
	}
	for i := range want {
		if strings.Join(got[i], " ") != strings.Join(want[i], " ") {
			t.Errorf("line %d: %q, want %q", i, got[i], want[i])
		}
	}
}
