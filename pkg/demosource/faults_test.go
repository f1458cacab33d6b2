package demosource_test

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"github.com/sluicedata/sluice/pkg/demosource"
)

// classify names what a response was: ok, 429, 5xx, slow, truncated or slow truncated. A slow
// response is one that took SlowDelay of (synctest's) time.
func classify(r result, slowDelay time.Duration) string {
	switch {
	case r.status == http.StatusTooManyRequests:
		return "429"
	case r.status >= 500:
		return "5xx"
	case r.aborted && r.elapsed >= slowDelay:
		return "slow truncated"
	case r.aborted:
		return "truncated"
	case r.status == http.StatusOK && r.elapsed >= slowDelay:
		return "slow"
	case r.status == http.StatusOK:
		return "ok"
	}
	return fmt.Sprint(r.status)
}

// fetchUntilOK retries target, waiting out Retry-After on the clock before each attempt, until it
// gets a whole page in time, counting the responses by classify in tally. It returns the attempts
// that took, or 0 when max did not suffice.
func fetchUntilOK(h http.Handler, c *clock, cfg demosource.Config, target string, max int, tally map[string]int) int {
	for n := 1; n <= max; n++ {
		c.Advance(cfg.RetryAfter)
		kind := classify(serve(h, target), cfg.SlowDelay)
		tally[kind]++
		if kind == "ok" {
			return n
		}
	}
	return 0
}

// TestFaultRates asks for 2000 distinct pages once each and expects each fault at about its rate,
// then retries every failed page and expects each to succeed. It runs in a synctest bubble, so
// slow responses take no real time.
func TestFaultRates(t *testing.T) {
	const pages, limit = 2000, 10
	tests := []struct {
		name string
		set  func(*demosource.Config)
		want map[string]float64 // share of first requests by classify
		// responses lists the distinct status and Retry-After pairs seen.
		responses []string
	}{
		{
			name:      "429",
			set:       func(c *demosource.Config) { c.Rate429 = 0.2 },
			want:      map[string]float64{"429": 0.2, "ok": 0.8},
			responses: []string{`200 ""`, `429 "1"`},
		},
		{
			name:      "5xx alternate and 503 carries Retry-After",
			set:       func(c *demosource.Config) { c.Rate5xx = 0.3 },
			want:      map[string]float64{"5xx": 0.3, "ok": 0.7},
			responses: []string{`200 ""`, `500 ""`, `502 ""`, `503 "1"`},
		},
		{
			name:      "slow",
			set:       func(c *demosource.Config) { c.RateSlow = 0.1 },
			want:      map[string]float64{"slow": 0.1, "ok": 0.9},
			responses: []string{`200 ""`},
		},
		{
			name:      "truncated",
			set:       func(c *demosource.Config) { c.RateTruncated = 0.25 },
			want:      map[string]float64{"truncated": 0.25, "ok": 0.75},
			responses: []string{`200 ""`},
		},
		{
			name: "all at once, in order",
			set: func(c *demosource.Config) {
				c.Rate429, c.Rate5xx, c.RateSlow, c.RateTruncated = 0.2, 0.2, 0.2, 0.2
				c.RetryAfter = 2500 * time.Millisecond
			},
			// A request draws a 5xx only when it drew no 429, and slow or truncated only when it
			// drew neither; slow and truncated are independent.
			want: map[string]float64{"429": 0.2, "5xx": 0.8 * 0.2, "slow": 0.64 * 0.2 * 0.8,
				"truncated": 0.64 * 0.8 * 0.2, "slow truncated": 0.64 * 0.2 * 0.2, "ok": 0.64 * 0.8 * 0.8},
			responses: []string{`200 ""`, `429 "3"`, `500 ""`, `502 ""`, `503 "3"`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				cfg := testConfig(pages * limit)
				cfg.RecordSize = 100
				tt.set(&cfg)
				c := newClock()
				srv := newServer(t, cfg, demosource.WithClock(c.Now))
				h := srv.Handler()

				first := map[string]int{}
				all := map[string]int{}
				responses := map[string]bool{}
				targets := make([]string, pages)
				for p := range pages {
					targets[p] = fmt.Sprintf("/api/users?offset=%d&limit=%d", p*limit, limit)
					res := serve(h, targets[p])
					kind := classify(res, cfg.SlowDelay)
					first[kind]++
					all[kind]++
					responses[fmt.Sprintf("%d %q", res.status, res.retryAfter)] = true
				}
				for kind, share := range tt.want {
					got := float64(first[kind]) / pages
					if math.Abs(got-share) > 0.03 {
						t.Errorf("%s: %.3f of the pages, want %.3f ± 0.03 (counts %v)", kind, got, share, first)
					}
				}
				if got := slices.Sorted(maps.Keys(responses)); !slices.Equal(got, tt.responses) {
					t.Errorf("responses %q, want %q", got, tt.responses)
				}

				// Every page, failed or not, is fetched again until it comes whole and in time.
				attempts := map[int]int{}
				for _, target := range targets {
					attempts[fetchUntilOK(h, c, cfg, target, 50, all)]++
				}
				if attempts[0] > 0 {
					t.Errorf("%d pages did not succeed within 50 attempts", attempts[0])
				}

				got := srv.Stats()
				got.ByStatus = nil
				whole := int64(all["ok"] + all["slow"])
				want := demosource.Stats{
					Requests:      int64(total(all)),
					PagesServed:   whole,
					RecordsServed: whole * limit,
					// Every page came whole at last: the other whole ones were served again.
					PagesServedAgain: whole - pages,
					Truncated:        int64(all["truncated"] + all["slow truncated"]),
					Slow:             int64(all["slow"] + all["slow truncated"]),
				}
				if fmt.Sprint(got) != fmt.Sprint(want) {
					t.Errorf("stats %+v, want %+v", got, want)
				}
			})
		})
	}
}

func total(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// TestBurst5xx expects that a page that draws a server error gets Burst5xx of them in a row.
func TestBurst5xx(t *testing.T) {
	const pages, limit = 500, 10
	cfg := testConfig(pages * limit)
	cfg.Rate5xx, cfg.Burst5xx = 0.3, 3
	c := newClock()
	h := newServer(t, cfg, demosource.WithClock(c.Now)).Handler()
	runs := map[int]int{} // pages by the length of the run of 5xx they start with
	for p := range pages {
		runs[fetchUntilOK(h, c, cfg, fmt.Sprintf("/api/users?page=%d&limit=%d", p+1, limit), 50, map[string]int{})-1]++
	}
	if runs[0] == 0 || runs[3] == 0 || runs[1] > 0 || runs[2] > 0 || runs[-1] > 0 {
		t.Fatalf("pages by leading 5xx run: %v; want runs of 0, or 3 and more", runs)
	}
}

// TestFailRanges expects every page that holds a record of a fail range to answer 500 however
// often it is asked for, and the pages around them to be served.
func TestFailRanges(t *testing.T) {
	cfg := testConfig(1000)
	cfg.FailRanges = "100-199, 500, 990-5000"
	c := newClock()
	h := newServer(t, cfg, demosource.WithClock(c.Now)).Handler()
	tests := []struct {
		query string
		want  int
	}{
		{"offset=50&limit=50", 200},
		{"offset=51&limit=50", 500},
		{"offset=100&limit=50", 500},
		{"page=4&limit=50", 500},
		{"offset=199&limit=1", 500},
		{"offset=200&limit=50", 200},
		{"offset=499&limit=1", 200},
		{"offset=500&limit=1", 500},
		{"page=11&limit=50", 500},
		{"page=501&limit=1", 500},
		{"offset=501&limit=100", 200},
		{"offset=950&limit=40", 200},
		{"offset=950&limit=50", 500},
		{"offset=1000&limit=50", 200}, // past the last record: no record in the range
	}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			var got []int
			for range 10 {
				c.Advance(cfg.RetryAfter)
				got = append(got, serve(h, "/api/users?"+tt.query).status)
			}
			if want := slices.Repeat([]int{tt.want}, 10); !slices.Equal(got, want) {
				t.Fatalf("statuses %v, want %v", got, want)
			}
		})
	}
}

// TestTruncatedIsUnexpectedEOF reads truncated pages with net/http's client, as the extractor does.
func TestTruncatedIsUnexpectedEOF(t *testing.T) {
	cfg := testConfig(5000)
	cfg.RateTruncated = 1
	srv := newServer(t, cfg)
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(ts.Close)
	tests := []string{"offset=0&limit=1", "offset=100&limit=100", "page=2&limit=1000", "offset=9000&limit=10"}
	for _, q := range tests {
		t.Run(q, func(t *testing.T) {
			resp, err := http.Get(ts.URL + "/api/users?" + q)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusOK || !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("status %d, read error %v, want 200 and an unexpected EOF", resp.StatusCode, err)
			}
			if got := int64(len(body)); got != resp.ContentLength/2 {
				t.Errorf("read %d of %d bytes, want half", got, resp.ContentLength)
			}
		})
	}
	if st := srv.Stats(); st.Truncated != int64(len(tests)) || st.PagesServed != 0 || st.RecordsServed != 0 || st.ByStatus["200"] != int64(len(tests)) {
		t.Errorf("stats %+v", st)
	}
}

// TestEarlyRequests asks for a page that answers 429 with Retry-After 1.5 s (sent as 2) before and
// after that time.
func TestEarlyRequests(t *testing.T) {
	cfg := testConfig(1000)
	cfg.Rate429, cfg.RetryAfter = 1, 1500*time.Millisecond
	c := newClock()
	srv := newServer(t, cfg, demosource.WithClock(c.Now))
	steps := []struct {
		name       string
		advance    time.Duration
		target     string
		retryAfter string
		early      int64
	}{
		{"first request", 0, "/api/users?offset=0&limit=10", "2", 0},
		{"after 1 s, early", time.Second, "/api/users?offset=0&limit=10", "1", 1},
		{"same page by number, early", 100 * time.Millisecond, "/api/users?page=1&limit=10", "1", 2},
		{"another page is not early", 0, "/api/users?offset=10&limit=10", "2", 2},
		{"at 1.5 s, not early", 400 * time.Millisecond, "/api/users?offset=0&limit=10", "2", 2},
		{"0.1 s later, early again", 100 * time.Millisecond, "/api/users?offset=0&limit=10", "2", 3},
		{"after it, not early", 1500 * time.Millisecond, "/api/users?offset=0&limit=10", "2", 3},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			c.Advance(s.advance)
			res := serve(srv.Handler(), s.target)
			if got := srv.Stats().EarlyRequests; res.status != 429 || res.retryAfter != s.retryAfter || got != s.early {
				t.Fatalf("%d Retry-After %q, early_requests %d; want 429 %q %d", res.status, res.retryAfter, got, s.retryAfter, s.early)
			}
		})
	}
}

// TestFaultsRepeat expects the same faults from two servers with the same seed given the same
// requests, and others from another seed.
func TestFaultsRepeat(t *testing.T) {
	run := func(seed uint64) []string {
		cfg := testConfig(10000)
		cfg.Seed = seed
		cfg.Rate429, cfg.Rate5xx, cfg.RateTruncated = 0.2, 0.2, 0.2
		c := newClock()
		h := newServer(t, cfg, demosource.WithClock(c.Now)).Handler()
		var got []string
		for p := range 300 {
			for range 3 {
				c.Advance(cfg.RetryAfter)
				got = append(got, classify(serve(h, fmt.Sprintf("/api/users?page=%d&limit=30", p+1)), time.Hour))
			}
		}
		return got
	}
	tests := []struct {
		name      string
		a, b      uint64
		wantEqual bool
	}{
		{"same seed", 7, 7, true},
		{"other seed", 7, 8, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := slices.Equal(run(tt.a), run(tt.b)); got != tt.wantEqual {
				t.Fatalf("seeds %d and %d gave equal faults: %v", tt.a, tt.b, got)
			}
		})
	}
}
