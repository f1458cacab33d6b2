package ops_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/sluicedata/sluice/pkg/ops"
)

func TestEndpoints(t *testing.T) {
	kafkaUp := true
	checks := []ops.Check{
		{Name: "kafka", Func: func(context.Context) error {
			if kafkaUp {
				return nil
			}
			return errors.New("reach kafka: connection refused")
		}},
		{Name: "clickhouse", Func: func(context.Context) error { return nil }},
	}
	srv := ops.NewServer(":0", ops.NewRegistry(), slog.New(slog.DiscardHandler), checks...)
	ts := httptest.NewServer(srv.Handler())
	defer ts.Close()

	get := func(path string) (int, string) {
		t.Helper()
		resp, err := http.Get(ts.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}

	if code, body := get("/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz = %d %s", code, body)
	}
	code, body := get("/readyz")
	if code != http.StatusOK {
		t.Fatalf("/readyz with every check passing = %d %s", code, body)
	}

	kafkaUp = false
	code, body = get("/readyz")
	var ready struct {
		Ready  bool              `json:"ready"`
		Checks map[string]string `json:"checks"`
	}
	if err := json.Unmarshal([]byte(body), &ready); err != nil {
		t.Fatalf("/readyz body %q: %v", body, err)
	}
	if code != http.StatusServiceUnavailable || ready.Ready || ready.Checks["clickhouse"] != "ok" ||
		!strings.Contains(ready.Checks["kafka"], "connection refused") {
		t.Fatalf("/readyz with kafka down = %d %+v", code, ready)
	}

	if code, _ := get("/debug/pprof/heap"); code != http.StatusNotFound {
		t.Errorf("/debug/pprof/heap before ServeProfiles = %d, want 404", code)
	}
	srv.ServeProfiles()
	if code, body := get("/debug/pprof/heap?debug=1"); code != http.StatusOK || !strings.Contains(body, "heap profile") {
		t.Errorf("/debug/pprof/heap after ServeProfiles = %d %.80q", code, body)
	}

	code, body = get("/metrics")
	for _, want := range []string{"go_goroutines", "process_cpu_seconds_total", `ops_readiness_check_failures_total{check="kafka"} 1`, `ops_readiness_check_failures_total{check="clickhouse"} 0`} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics (%d) lacks %s", code, want)
		}
	}
}

// TestRunStopsWithContext serves on a real port until the context ends.
func TestRunStopsWithContext(t *testing.T) {
	srv := ops.NewServer("127.0.0.1:0", ops.NewRegistry(), slog.New(slog.DiscardHandler))
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()

	resp, err := http.Get("http://" + srv.Addr() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/healthz = %d", resp.StatusCode)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run after cancel: %v", err)
	}
	if _, err := http.Get("http://" + srv.Addr() + "/healthz"); err == nil {
		t.Fatal("server still answers after Run returned")
	}
}

// TestSlowBodyCutOff: a client that sends its body a byte at a time is cut off by the read
// timeout, and the handler's read fails rather than wait on it.
func TestSlowBodyCutOff(t *testing.T) {
	srv := ops.NewServer("127.0.0.1:0", ops.NewRegistry(), slog.New(slog.DiscardHandler))
	srv.SetTimeouts(ops.Timeouts{Read: 500 * time.Millisecond})
	readErr := make(chan error, 1)
	srv.Handle("POST /upload", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, err := io.ReadAll(r.Body)
		readErr <- err
	}))
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	defer func() { cancel(); <-done }()

	conn, err := net.Dial("tcp", srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := fmt.Fprintf(conn, "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	sent := 0
	for ; sent < 100; sent++ {
		if _, err := conn.Write([]byte{'x'}); err != nil {
			break
		}
		select {
		case err := <-readErr:
			if err == nil {
				t.Fatal("the handler read the whole slow body")
			}
			if took := time.Since(began); took > 5*time.Second {
				t.Fatalf("cut off after %s", took)
			}
			t.Logf("cut off after %d bytes, %s: %v", sent+1, time.Since(began).Round(time.Millisecond), err)
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
	t.Fatalf("the server took %d bytes of a slow body without cutting it off", sent)
}

// TestBodyLimits: a request body larger than its method allows gets 413 before a handler reads it.
func TestBodyLimits(t *testing.T) {
	srv := ops.NewServer(":0", ops.NewRegistry(), slog.New(slog.DiscardHandler))
	var served int
	srv.Handle("/any", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.ReadAll(r.Body); err != nil {
			http.Error(w, err.Error(), http.StatusRequestEntityTooLarge)
			return
		}
		served++
	}))
	ts := httptest.NewServer(srv.Handler())
	defer ts.Close()
	for _, c := range []struct {
		method string
		size   int
		want   int
	}{
		{"GET", 100, http.StatusOK}, {"GET", 10 << 10, http.StatusRequestEntityTooLarge},
		{"DELETE", 10 << 10, http.StatusRequestEntityTooLarge},
		{"POST", 512 << 10, http.StatusOK}, {"POST", 2 << 20, http.StatusRequestEntityTooLarge},
	} {
		req, _ := http.NewRequest(c.method, ts.URL+"/any", strings.NewReader(strings.Repeat("x", c.size)))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != c.want {
			t.Errorf("%s with %d bytes: %d, want %d", c.method, c.size, resp.StatusCode, c.want)
		}
	}
	if served != 2 {
		t.Fatalf("served %d requests, want 2", served)
	}
}
