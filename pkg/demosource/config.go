package demosource

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/sluicedata/sluice/pkg/config"
)

// Config is the demo source's configuration. A service embeds it without a prefix, so that its
// variables are SLUICE_DEMO_…; code that builds one in-process starts from DefaultConfig.
type Config struct {
	// Records is how many records the source holds, indexed from 0.
	Records int64 `env:"DEMO_RECORDS, default=100000"`
	// RecordSize is the size of a record in bytes. Records are padded to exactly this size, but are
	// never smaller than their fields (about 100 bytes).
	RecordSize int `env:"DEMO_RECORD_SIZE, default=300"`
	// PageLatency delays every API response, as a remote API would.
	PageLatency time.Duration `env:"DEMO_PAGE_LATENCY, default=0s"`
	// MaxLimit is the largest page a client may ask for.
	MaxLimit int `env:"DEMO_MAX_LIMIT, default=10000"`
	// Seed decides which requests draw a fault; the same seed and the same requests give the same
	// faults.
	Seed uint64 `env:"DEMO_SEED, default=1"`

	// Rate429 is the share of requests answered 429 Too Many Requests with a Retry-After header.
	Rate429 float64 `env:"DEMO_RATE_429, default=0"`
	// RetryAfter is how long a client must wait after a 429 or 503. The header carries it in whole
	// seconds, rounded up, at least 1; a request for the same page before it has passed is an early
	// request.
	RetryAfter time.Duration `env:"DEMO_RETRY_AFTER, default=1s"`
	// Rate5xx is the share of requests that start a run of server errors (500, 502 or 503).
	Rate5xx float64 `env:"DEMO_RATE_5XX, default=0"`
	// Burst5xx is how many server errors in a row a page gets once it drew one.
	Burst5xx int `env:"DEMO_BURST_5XX, default=1"`
	// RateSlow is the share of responses delayed by SlowDelay before they are served.
	RateSlow float64 `env:"DEMO_RATE_SLOW, default=0"`
	// SlowDelay is the delay of a slow response.
	SlowDelay time.Duration `env:"DEMO_SLOW_DELAY, default=2s"`
	// RateTruncated is the share of pages whose body stops about half way, short of its
	// Content-Length, so that the client reads an unexpected EOF.
	RateTruncated float64 `env:"DEMO_RATE_TRUNCATED, default=0"`
	// MalformedEvery makes record i malformed when i%MalformedEvery == MalformedEvery-1; 0 makes none.
	MalformedEvery int64 `env:"DEMO_MALFORMED_EVERY, default=0"`
	// FailRanges lists record index ranges, such as "1000-1999,5000-5099" (both ends included, a
	// single index allowed); every page that holds a record in one of them always answers 500.
	FailRanges string `env:"DEMO_FAIL_RANGES"`
	// CursorFault breaks the crawl endpoints (/cursor, /next, /link) from the first page at or past
	// record CursorFaultAt: "stuck" gives the page's own cursor or URL as the next one, "loop" the
	// previous page's, which leads back here.
	CursorFault   string `env:"DEMO_CURSOR_FAULT"`
	CursorFaultAt int64  `env:"DEMO_CURSOR_FAULT_AT, default=0"`
	// APIKey, when set, must come with every API request, in the X-Api-Key header or the api_key
	// query parameter; else 401.
	APIKey string `env:"DEMO_API_KEY"`
	// OAuthClientID and OAuthClientSecret, when set, make POST /oauth/token issue tokens (client
	// credentials, RFC 6749 4.4) that every API request must bear; else 401.
	OAuthClientID     string `env:"DEMO_OAUTH_CLIENT_ID"`
	OAuthClientSecret string `env:"DEMO_OAUTH_CLIENT_SECRET"`
	// OAuthTokenTTL is how long a token lasts.
	OAuthTokenTTL time.Duration `env:"DEMO_OAUTH_TOKEN_TTL, default=1h"`
	// OAuthRevokeEvery revokes the token of every Nth authorized request (answered 401); 0 never.
	OAuthRevokeEvery int64 `env:"DEMO_OAUTH_REVOKE_EVERY, default=0"`
}

// DefaultConfig returns the configuration that the defaults of the variables give.
func DefaultConfig() Config {
	return Config{
		Records:    100000,
		RecordSize: 300,
		MaxLimit:   10000,
		Seed:       1,
		RetryAfter: time.Second,
		Burst5xx:   1,
		SlowDelay:  2 * time.Second,

		OAuthTokenTTL: time.Hour,
	}
}

// Validate reports every problem at once, each naming its variable.
func (c Config) Validate() error {
	var p config.Problems
	if c.Records < 0 {
		p.Addf("DEMO_RECORDS", "must not be negative, got %d", c.Records)
	}
	if c.RecordSize <= 0 {
		p.Addf("DEMO_RECORD_SIZE", "must be positive, got %d", c.RecordSize)
	}
	if c.PageLatency < 0 {
		p.Addf("DEMO_PAGE_LATENCY", "must not be negative, got %s", c.PageLatency)
	}
	if c.MaxLimit <= 0 {
		p.Addf("DEMO_MAX_LIMIT", "must be positive, got %d", c.MaxLimit)
	}
	for _, r := range []struct {
		name string
		v    float64
	}{
		{"DEMO_RATE_429", c.Rate429},
		{"DEMO_RATE_5XX", c.Rate5xx},
		{"DEMO_RATE_SLOW", c.RateSlow},
		{"DEMO_RATE_TRUNCATED", c.RateTruncated},
	} {
		if math.IsNaN(r.v) || r.v < 0 || r.v > 1 {
			p.Addf(r.name, "must be between 0 and 1, got %v", r.v)
		}
	}
	if c.RetryAfter <= 0 {
		p.Addf("DEMO_RETRY_AFTER", "must be positive, got %s", c.RetryAfter)
	}
	if c.Burst5xx < 1 {
		p.Addf("DEMO_BURST_5XX", "must be at least 1, got %d", c.Burst5xx)
	}
	if c.SlowDelay < 0 {
		p.Addf("DEMO_SLOW_DELAY", "must not be negative, got %s", c.SlowDelay)
	}
	if c.MalformedEvery < 0 {
		p.Addf("DEMO_MALFORMED_EVERY", "must not be negative, got %d", c.MalformedEvery)
	}
	if _, err := parseRanges(c.FailRanges); err != nil {
		p.Addf("DEMO_FAIL_RANGES", "%v", err)
	}
	if c.CursorFault != "" && c.CursorFault != "stuck" && c.CursorFault != "loop" {
		p.Addf("DEMO_CURSOR_FAULT", `must be empty, "stuck" or "loop", got %q`, c.CursorFault)
	}
	if (c.OAuthClientID == "") != (c.OAuthClientSecret == "") {
		p.Addf("DEMO_OAUTH_CLIENT_ID", "and DEMO_OAUTH_CLIENT_SECRET must be set together")
	}
	if c.OAuthClientID != "" && c.OAuthTokenTTL < time.Second {
		p.Addf("DEMO_OAUTH_TOKEN_TTL", "must be at least 1s, got %s", c.OAuthTokenTTL)
	}
	if c.OAuthRevokeEvery < 0 {
		p.Addf("DEMO_OAUTH_REVOKE_EVERY", "must not be negative, got %d", c.OAuthRevokeEvery)
	}
	if c.CursorFaultAt < 0 {
		p.Addf("DEMO_CURSOR_FAULT_AT", "must not be negative, got %d", c.CursorFaultAt)
	}
	return p.Err()
}

// indexRange is the record indices [first, last], both included.
type indexRange struct {
	first, last int64
}

// parseRanges reads "a-b,c,d-e". It reports every malformed entry, not just the first.
func parseRanges(s string) ([]indexRange, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var ranges []indexRange
	var bad []string
	for _, part := range strings.Split(s, ",") {
		r, err := parseRange(strings.TrimSpace(part))
		if err != nil {
			bad = append(bad, err.Error())
			continue
		}
		ranges = append(ranges, r)
	}
	if len(bad) > 0 {
		return nil, fmt.Errorf("%s (want first-last record indices, such as 1000-1999,5000-5099)", strings.Join(bad, "; "))
	}
	return ranges, nil
}

func parseRange(s string) (indexRange, error) {
	lo, hi, isRange := strings.Cut(s, "-")
	if !isRange {
		hi = lo
	}
	first, err1 := strconv.ParseInt(strings.TrimSpace(lo), 10, 64)
	last, err2 := strconv.ParseInt(strings.TrimSpace(hi), 10, 64)
	switch {
	case err1 != nil || err2 != nil:
		return indexRange{}, fmt.Errorf("%q is not a range", s)
	case first < 0 || last < first:
		return indexRange{}, fmt.Errorf("%q is not a range of non-negative indices from low to high", s)
	}
	return indexRange{first, last}, nil
}
