package source

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicedata/sluice/pkg/delivery"
	"github.com/sluicedata/sluice/pkg/pipeline"
)

// scripted answers each request with the next of its responses and records when requests came.
type scripted struct {
	mu        sync.Mutex
	responses []func(w http.ResponseWriter)
	times     []time.Time
}

func (s *scripted) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	s.mu.Lock()
	s.times = append(s.times, time.Now())
	next := s.responses[min(len(s.times), len(s.responses))-1]
	s.mu.Unlock()
	next(w)
}

func status(code int, header ...string) func(w http.ResponseWriter) {
	return func(w http.ResponseWriter) {
		for i := 0; i+1 < len(header); i += 2 {
			w.Header().Set(header[i], header[i+1])
		}
		w.WriteHeader(code)
		w.Write([]byte(`{"error":"nope"}`))
	}
}

func body(b string) func(w http.ResponseWriter) {
	return func(w http.ResponseWriter) { w.Write([]byte(b)) }
}

func newFetcher() *Fetcher {
	return &Fetcher{Client: &http.Client{}, MaxBody: 1 << 20, Metrics: NewMetrics(prometheus.NewRegistry(), "test"),
		Retry: delivery.NewRetrier(prometheus.NewRegistry(), slog.New(slog.DiscardHandler)), Now: time.Now}
}

func TestFetchPage(t *testing.T) {
	good := body(`{"data":[{"id":1},{"id":2}],"total":2}`)
	tests := []struct {
		name      string
		responses []func(w http.ResponseWriter)
		retries   int
		wantClass string
		attempts  int
	}{
		{"ok at once", []func(http.ResponseWriter){good}, 3, "", 1},
		{"5xx then ok", []func(http.ResponseWriter){status(500), status(502), good}, 3, "", 3},
		{"408 then ok", []func(http.ResponseWriter){status(408), good}, 3, "", 2},
		{"not json then ok", []func(http.ResponseWriter){body("<html>maintenance</html>"), good}, 3, "", 2},
		{"no records array then ok", []func(http.ResponseWriter){body(`{"items":[]}`), good}, 3, "", 2},
		{"404 is not retried", []func(http.ResponseWriter){status(404), good}, 3, "http_4xx", 1},
		{"400 is not retried", []func(http.ResponseWriter){status(400), good}, 3, "http_4xx", 1},
		{"retries run out", []func(http.ResponseWriter){status(503)}, 2, "http_5xx", 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(&scripted{responses: tt.responses})
			defer srv.Close()
			pol := Policy{MaxRetries: tt.retries, Backoff: pipeline.Backoff{Base: time.Millisecond, Max: 5 * time.Millisecond},
				Deadline: time.Minute, Timeout: 5 * time.Second}
			p, attempts, ferr := newFetcher().FetchPage(context.Background(), srv.URL+"/api?token=s3cret", nil, "data", "total", pol)
			gotClass := ""
			if ferr != nil {
				gotClass = ferr.Class
				if strings.Contains(ferr.Error(), "s3cret") {
					t.Errorf("error %q carries the URL's query", ferr.Error())
				}
			}
			if gotClass != tt.wantClass || attempts != tt.attempts {
				t.Fatalf("class %q after %d attempts, want %q after %d (err %v)", gotClass, attempts, tt.wantClass, tt.attempts, ferr)
			}
			if ferr == nil && (len(p.Records) != 2 || p.Total != 2) {
				t.Fatalf("page %+v", p)
			}
		})
	}
}

// TestFetchPageHonoursRetryAfter: the retry after a 429 comes no sooner than its Retry-After.
func TestFetchPageHonoursRetryAfter(t *testing.T) {
	s := &scripted{responses: []func(http.ResponseWriter){status(429, "Retry-After", "1"), body(`[{"id":1}]`)}}
	srv := httptest.NewServer(s)
	defer srv.Close()
	pol := Policy{MaxRetries: 3, Backoff: pipeline.Backoff{Base: time.Millisecond, Max: time.Millisecond},
		Deadline: time.Minute, Timeout: 5 * time.Second}
	if _, _, ferr := newFetcher().FetchPage(context.Background(), srv.URL, nil, "", "", pol); ferr != nil {
		t.Fatal(ferr)
	}
	if gap := s.times[1].Sub(s.times[0]); gap < time.Second {
		t.Fatalf("retried %s after a 429 with Retry-After: 1", gap)
	}
}

// TestFetchPageDeadline gives up when the wait a source asks for passes the page deadline.
func TestFetchPageDeadline(t *testing.T) {
	srv := httptest.NewServer(&scripted{responses: []func(http.ResponseWriter){status(429, "Retry-After", "3600")}})
	defer srv.Close()
	pol := Policy{MaxRetries: 10, Backoff: pipeline.Backoff{Base: time.Millisecond, Max: time.Millisecond},
		Deadline: time.Minute, Timeout: 5 * time.Second}
	_, attempts, ferr := newFetcher().FetchPage(context.Background(), srv.URL, nil, "", "", pol)
	if ferr == nil || ferr.Class != "http_429" || attempts != 1 || !strings.Contains(ferr.Error(), "deadline") {
		t.Fatalf("attempts %d, err %v", attempts, ferr)
	}
}

func TestRetryAfter(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		header string
		want   time.Duration
	}{
		{"", 0},
		{"3", 3 * time.Second},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second},
		{"soon", 0},
	}
	for _, tt := range tests {
		t.Run(tt.header, func(t *testing.T) {
			if got := retryAfter(tt.header, now); got != tt.want {
				t.Fatalf("retryAfter(%q) = %s, want %s", tt.header, got, tt.want)
			}
		})
	}
}
