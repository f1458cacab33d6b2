package main

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sethvargo/go-envconfig"

	"github.com/sluicedata/sluice/pkg/config"
	"github.com/sluicedata/sluice/pkg/demosource"
	"github.com/sluicedata/sluice/pkg/stacktest"
)

// TestRun starts the service on a free port, serves a page, the stats and the metrics, and stops
// it with its context as SIGTERM would.
func TestRun(t *testing.T) {
	env := map[string]string{
		"SLUICE_HTTP_ADDR":            "127.0.0.1:0",
		"SLUICE_DEMO_RECORDS":         "1000",
		"SLUICE_DEMO_RECORD_SIZE":     "200",
		"SLUICE_DEMO_MAX_LIMIT":       "500",
		"SLUICE_DEMO_MALFORMED_EVERY": "0",
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	logs := &stacktest.LogWriter{}
	done := make(chan error, 1)
	go func() { done <- run(ctx, envconfig.MapLookuper(env), logs) }()
	base := "http://" + logs.Await(t, "ops server listening", 10*time.Second)["addr"].(string)

	page := `{"data":[` + string(demosource.Record(998, 200)) + "," + string(demosource.Record(999, 200)) +
		`],"total":1000,"offset":998,"limit":10}`
	steps := []struct {
		method, path string
		status       int
		want         []string
	}{
		{http.MethodGet, "/api/users?offset=998&limit=10", http.StatusOK, []string{page}},
		{http.MethodGet, "/api/users?page=1&limit=501", http.StatusBadRequest, []string{"limit must be between 1 and 500"}},
		{http.MethodGet, "/stats", http.StatusOK, []string{`"requests":2`, `"by_status":{"200":1,"400":1}`, `"records_served":2`}},
		{http.MethodGet, "/metrics", http.StatusOK, []string{
			`demosource_requests_total{status="200"} 1`,
			`demosource_requests_total{status="400"} 1`,
			`demosource_records_served_total 2`,
			"go_goroutines",
		}},
		{http.MethodPost, "/stats/reset", http.StatusNoContent, nil},
		{http.MethodGet, "/stats", http.StatusOK, []string{`"requests":0`}},
		{http.MethodGet, "/healthz", http.StatusOK, []string{`"ok"`}},
	}
	for _, s := range steps {
		t.Run(s.method+" "+s.path, func(t *testing.T) {
			req, err := http.NewRequest(s.method, base+s.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != s.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, s.status, body)
			}
			for _, want := range s.want {
				if !strings.Contains(string(body), want) {
					t.Errorf("body lacks %s:\n%s", want, body)
				}
			}
		})
	}

	stacktest.AwaitStop(t, cancel, done, logs, 10*time.Second)
}

// TestRunRejectsBadConfig fails before listening, naming every bad variable.
func TestRunRejectsBadConfig(t *testing.T) {
	env := map[string]string{
		"SLUICE_HTTP_ADDR":        "",
		"SLUICE_LOG_LEVEL":        "loud",
		"SLUICE_DEMO_RECORD_SIZE": "0",
		"SLUICE_DEMO_RATE_5XX":    "2",
		"SLUICE_DEMO_FAIL_RANGES": "9-1",
	}
	err := run(context.Background(), envconfig.MapLookuper(env), io.Discard)
	if err == nil {
		t.Fatal("run accepted a bad configuration")
	}
	for _, want := range []string{"SLUICE_HTTP_ADDR", "SLUICE_LOG_LEVEL", "SLUICE_DEMO_RECORD_SIZE", "SLUICE_DEMO_RATE_5XX", "SLUICE_DEMO_FAIL_RANGES"} {
		t.Run(want, func(t *testing.T) {
			if !strings.Contains(err.Error(), want) {
				t.Fatalf("error lacks %s:\n%v", want, err)
			}
		})
	}
}

// TestConfigDefaults loads the configuration from no variables.
func TestConfigDefaults(t *testing.T) {
	var cfg Config
	if err := config.Load(context.Background(), envconfig.MapLookuper(nil), &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.HTTPAddr != ":8081" || cfg.Log.Level != "info" || cfg.Config != demosource.DefaultConfig() {
		t.Fatalf("defaults %+v", cfg)
	}
}
