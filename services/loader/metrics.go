package main

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/sluicedata/sluice/pkg/pipeline"
)

type loaderMetrics struct {
	*pipeline.Metrics
	rowsInserted  prometheus.Counter
	insertSeconds prometheus.Histogram
	batchRows     prometheus.Histogram
	pendingRows   prometheus.Gauge
	heldTables    *prometheus.GaugeVec
	// fieldsDiscarded counts record fields that no column of a typed table took.
	fieldsDiscarded prometheus.Counter
}

func newLoaderMetrics(reg prometheus.Registerer, shared *pipeline.Metrics) *loaderMetrics {
	f := promauto.With(reg)
	return &loaderMetrics{
		Metrics: shared,
		rowsInserted: f.NewCounter(prometheus.CounterOpts{
			Name: "loader_rows_inserted_total",
			Help: "Rows inserted into ClickHouse.",
		}),
		insertSeconds: f.NewHistogram(prometheus.HistogramOpts{
			Name:    "loader_insert_seconds",
			Help:    "Duration of one successful insert.",
			Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}),
		batchRows: f.NewHistogram(prometheus.HistogramOpts{
			Name:    "loader_batch_rows",
			Help:    "Records per insert block.",
			Buckets: prometheus.ExponentialBuckets(1, 4, 10),
		}),
		pendingRows: f.NewGauge(prometheus.GaugeOpts{
			Name: "loader_pending_rows",
			Help: "Records polled and not yet inserted or dead-lettered, all tables together.",
		}),
		heldTables: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "loader_held_tables",
			Help: "Tables whose records wait because the last insert failed, by class (transient, schema).",
		}, []string{"class"}),
		fieldsDiscarded: f.NewCounter(prometheus.CounterOpts{
			Name: "loader_fields_discarded_total",
			Help: "Record fields that no column of their typed table took, dropped (on_new_field: discard).",
		}),
	}
}
