package demosource_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/sluicedata/sluice/pkg/demosource"
)

// clock is a time source that moves only when the test says so.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// testConfig is a small source without faults.
func testConfig(records int64) demosource.Config {
	cfg := demosource.DefaultConfig()
	cfg.Records = records
	cfg.RecordSize = 150
	return cfg
}

func newServer(t testing.TB, cfg demosource.Config, opts ...demosource.Option) *demosource.Server {
	t.Helper()
	srv, err := demosource.New(cfg, nil, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return srv
}

// result is one response as the tests look at it.
type result struct {
	status     int
	retryAfter string
	aborted    bool // the handler cut the body short
	elapsed    time.Duration
	body       []byte
}

// serve runs one request through h in-process, catching the abort of a truncated page.
func serve(h http.Handler, target string) (res result) {
	rec := httptest.NewRecorder()
	start := time.Now()
	defer func() {
		res = result{
			status:     rec.Code,
			retryAfter: rec.Header().Get("Retry-After"),
			elapsed:    time.Since(start),
			body:       rec.Body.Bytes(),
		}
		if r := recover(); r != nil {
			if r != http.ErrAbortHandler {
				panic(r)
			}
			res.aborted = true
		}
	}()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, target, nil))
	return res
}

// page is a 200 response body.
type page struct {
	Data   []json.RawMessage `json:"data"`
	Total  int64             `json:"total"`
	Offset int64             `json:"offset"`
	Limit  int64             `json:"limit"`
}

func decodePage(t testing.TB, res result) page {
	t.Helper()
	var p page
	if res.status != http.StatusOK || res.aborted {
		t.Fatalf("status %d (aborted %v): %s", res.status, res.aborted, res.body)
	}
	if err := json.Unmarshal(res.body, &p); err != nil {
		t.Fatalf("page body %.200q: %v", res.body, err)
	}
	return p
}

// expected is what the source serves as record i.
func expected(cfg demosource.Config, i int64) []byte {
	if demosource.IsMalformed(i, cfg.MalformedEvery) {
		return demosource.MalformedRecord(i, cfg.RecordSize)
	}
	return demosource.Record(i, cfg.RecordSize)
}
