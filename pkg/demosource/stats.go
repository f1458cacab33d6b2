package demosource

import (
	"strconv"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// Stats is what the source counted since it started or was last reset. GET /stats serves it and
// POST /stats/reset zeroes it.
type Stats struct {
	// Requests counts API requests, whatever their answer.
	Requests int64 `json:"requests"`
	// ByStatus counts API responses by status code; a truncated page counts as 200.
	ByStatus map[string]int64 `json:"by_status"`
	// EarlyRequests counts requests for a page before the Retry-After it was sent had passed.
	EarlyRequests int64 `json:"early_requests"`
	// PagesServed and RecordsServed count pages served whole and the records in them.
	PagesServed   int64 `json:"pages_served"`
	RecordsServed int64 `json:"records_served"`
	// PagesServedAgain counts pages served whole that had been served whole before.
	PagesServedAgain int64 `json:"pages_served_again"`
	// Truncated counts pages cut short; their records are not in RecordsServed.
	Truncated int64 `json:"truncated"`
	// Slow counts responses delayed by SlowDelay.
	Slow int64 `json:"slow"`
	// TokensIssued counts OAuth2 tokens issued; Unauthorized the requests refused for credentials.
	TokensIssued int64 `json:"tokens_issued"`
	Unauthorized int64 `json:"unauthorized"`
}

// counters are the live Stats, updated without locks.
type counters struct {
	requests     atomic.Int64
	byStatus     [600]atomic.Int64
	early        atomic.Int64
	pages        atomic.Int64
	pagesAgain   atomic.Int64
	records      atomic.Int64
	truncated    atomic.Int64
	slow         atomic.Int64
	tokens       atomic.Int64
	unauthorized atomic.Int64
}

func (c *counters) snapshot() Stats {
	st := Stats{
		Requests:         c.requests.Load(),
		ByStatus:         make(map[string]int64),
		EarlyRequests:    c.early.Load(),
		PagesServed:      c.pages.Load(),
		PagesServedAgain: c.pagesAgain.Load(),
		RecordsServed:    c.records.Load(),
		Truncated:        c.truncated.Load(),
		Slow:             c.slow.Load(),
		TokensIssued:     c.tokens.Load(),
		Unauthorized:     c.unauthorized.Load(),
	}
	for code := range c.byStatus {
		if n := c.byStatus[code].Load(); n > 0 {
			st.ByStatus[strconv.Itoa(code)] = n
		}
	}
	return st
}

func (c *counters) reset() {
	c.requests.Store(0)
	for code := range c.byStatus {
		c.byStatus[code].Store(0)
	}
	c.early.Store(0)
	c.pages.Store(0)
	c.pagesAgain.Store(0)
	c.records.Store(0)
	c.truncated.Store(0)
	c.slow.Store(0)
	c.tokens.Store(0)
	c.unauthorized.Store(0)
}

// metrics are the source's Prometheus counters. Unlike Stats they never reset.
type metrics struct {
	requests *prometheus.CounterVec
	records  prometheus.Counter
}

// statuses are the codes the API answers with; they are the only values of the status label.
var statuses = [...]int{200, 400, 429, 500, 502, 503}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: promauto.With(reg).NewCounterVec(prometheus.CounterOpts{
			Name: "demosource_requests_total",
			Help: "API requests answered, by status code.",
		}, []string{"status"}),
		records: promauto.With(reg).NewCounter(prometheus.CounterOpts{
			Name: "demosource_records_served_total",
			Help: "Records in the pages served whole.",
		}),
	}
	for _, code := range statuses {
		m.requests.WithLabelValues(strconv.Itoa(code))
	}
	return m
}
