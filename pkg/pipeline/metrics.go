package pipeline

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// Record statuses for pipeline_records_processed_total.
const (
	StatusProduced     = "produced"      // extractor: acknowledged on the raw topic
	StatusLoaded       = "loaded"        // loader: inserted into ClickHouse
	StatusDeadLettered = "dead_lettered" // either stage: acknowledged on the dead-letter topic
)

// Metrics are the counters both stages keep, counted per batch.
type Metrics struct {
	// Processed counts records by Kafka partition of the stage's input and status.
	Processed *prometheus.CounterVec
	// Processing observes how long one unit of work (a loader flight, an extractor task) took.
	Processing prometheus.Histogram
	// DeadLetters counts dead letters by stage (extract, load) and error class.
	DeadLetters *prometheus.CounterVec
}

// NewMetrics registers the shared metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	f := promauto.With(reg)
	return &Metrics{
		Processed: f.NewCounterVec(prometheus.CounterOpts{
			Name: "pipeline_records_processed_total",
			Help: "Records processed, by input partition and status (produced, loaded, dead_lettered).",
		}, []string{"partition", "status"}),
		Processing: f.NewHistogram(prometheus.HistogramOpts{
			Name:    "pipeline_processing_seconds",
			Help:    "Time to process one unit of work: a loader flight (one table's insert blocks) or an extractor task.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300},
		}),
		DeadLetters: f.NewCounterVec(prometheus.CounterOpts{
			Name: "pipeline_dead_letters_total",
			Help: "Dead letters acknowledged by the dead-letter topic, by stage and error class.",
		}, []string{"stage", "class"}),
	}
}

// Partition formats a partition number as a label value.
func Partition(p int32) string {
	if p >= 0 && int(p) < len(partitionLabels) {
		return partitionLabels[p]
	}
	return strconv.Itoa(int(p))
}

var partitionLabels = func() []string {
	s := make([]string, 256)
	for i := range s {
		s[i] = strconv.Itoa(i)
	}
	return s
}()
