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

// TestMarks shows, sets and resets a job's mark through the planner's API, and exits 1 with the
// planner's reason when it refuses (a run is running), 2 for a wrong command line.
func TestMarks(t *testing.T) {
	type request struct{ method, path, body string }
	var got []request
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got = append(got, request{r.Method, r.URL.Path, string(b)})
		w.Header().Set("Content-Type", "application/json")
		switch {
		case r.Header.Get("Authorization") != "Bearer tok":
			w.WriteHeader(http.StatusUnauthorized)
			io.WriteString(w, `{"error": "no token"}`)
		case r.URL.Path == "/v1/marks/busy" && r.Method == http.MethodPut:
			w.WriteHeader(http.StatusConflict)
			io.WriteString(w, `{"error": "a run of this job is still running: busy (its mark is set between runs)"}`)
		case r.URL.Path == "/v1/marks/items" && r.Method == http.MethodGet:
			io.WriteString(w, `{"name": "items", "value": "2024-03-01T00:00:00Z", "kind": "time", "set_at": "2024-03-01T00:05:00Z", "job_id": "items-1"}`)
		case r.URL.Path == "/v1/marks/items" && strings.Contains(string(b), "null"):
			io.WriteString(w, `{"name": "items", "value": null, "set_at": "2024-03-02T00:00:00Z", "set_by": "ops"}`)
		case r.URL.Path == "/v1/marks/items":
			io.WriteString(w, `{"name": "items", "value": "2024-01-01T00:00:00Z", "kind": "time", "set_at": "2024-03-02T00:00:00Z", "set_by": "ops"}`)
		default:
			w.WriteHeader(http.StatusNotFound)
			io.WriteString(w, `{"error": "no mark for job `+strings.TrimPrefix(r.URL.Path, "/v1/marks/")+`"}`)
		}
	}))
	defer ts.Close()
	env := envconfig.MapLookuper(map[string]string{"SLUICE_PLANNER_URL": ts.URL, "SLUICE_PLANNER_TOKEN": "tok"})
	for _, c := range []struct {
		name string
		args []string
		code int
		sent *request
		says []string
	}{
		{"show", []string{"marks", "items"}, exitOK, &request{"GET", "/v1/marks/items", ""},
			[]string{"NAME MARK KIND SET AT SET BY", "items 2024-03-01T00:00:00Z time 2024-03-01T00:05:00Z items-1"}},
		{"show as json", []string{"marks", "items", "-o", "json"}, exitOK, &request{"GET", "/v1/marks/items", ""},
			[]string{`"value": "2024-03-01T00:00:00Z"`, `"job_id": "items-1"`}},
		{"set", []string{"marks", "set", "items", "2024-01-01T00:00:00Z"}, exitOK,
			&request{"PUT", "/v1/marks/items", `{"value":"2024-01-01T00:00:00Z"}`},
			[]string{"items 2024-01-01T00:00:00Z time 2024-03-02T00:00:00Z ops (by hand)"}},
		{"reset", []string{"marks", "reset", "items", "-o", "yaml"}, exitOK, &request{"PUT", "/v1/marks/items", `{"value":null}`},
			[]string{"name: items\nvalue: null\n", "set_by: ops"}},
		{"refused while running", []string{"marks", "set", "busy", "5"}, exitFailed, &request{"PUT", "/v1/marks/busy", `{"value":"5"}`},
			[]string{"mark of busy: a run of this job is still running"}},
		{"no mark", []string{"marks", "other"}, exitFailed, &request{"GET", "/v1/marks/other", ""}, []string{"no mark for job other"}},
		{"set without a value", []string{"marks", "set", "items"}, exitUsage, nil, []string{"accepts 2 arg(s)"}},
		{"no name", []string{"marks"}, exitUsage, nil, []string{"accepts 1 arg(s)"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			got = nil
			var stdout, stderr bytes.Buffer
			code, err := run(context.Background(), c.args, env, &stdout, &stderr)
			if code != c.code || (code == exitOK) != (err == nil) {
				t.Fatalf("exit %d (%v), want %d\n%s", code, err, c.code, stderr.String())
			}
			if c.sent == nil && len(got) > 0 || c.sent != nil && (len(got) != 1 || got[0] != *c.sent) {
				t.Fatalf("sent %+v, want %+v", got, c.sent)
			}
			out := stdout.String()
			if err != nil {
				out = err.Error()
			}
			// Compared word by word: the table's columns are padded.
			words := func(s string) string { return strings.Join(strings.Fields(s), " ") }
			for _, s := range c.says {
				if !strings.Contains(words(out), words(s)) {
					t.Errorf("output lacks %q:\n%s", s, out)
				}
			}
		})
	}
}
