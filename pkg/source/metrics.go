package source

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// Metrics count what fetching pages meets.
type Metrics struct {
	Pages       *prometheus.CounterVec
	PageSeconds prometheus.Histogram
}

// NewMetrics registers the fetch metrics on reg, named for the stage (extractor, planner). Retries
// are counted by the delivery retrier, with every other retried operation.
func NewMetrics(reg prometheus.Registerer, stage string) *Metrics {
	f := promauto.With(reg)
	m := &Metrics{
		Pages: f.NewCounterVec(prometheus.CounterOpts{
			Name: stage + "_pages_fetched_total",
			Help: "HTTP responses from sources, by status class (2xx, 3xx, 4xx, 5xx, error).",
		}, []string{"code"}),
		PageSeconds: f.NewHistogram(prometheus.HistogramOpts{
			Name:    stage + "_page_seconds",
			Help:    "Time to fetch one page, to the end of its body.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}),
	}
	for _, c := range []string{"2xx", "3xx", "4xx", "5xx", "error"} {
		m.Pages.WithLabelValues(c)
	}
	return m
}
