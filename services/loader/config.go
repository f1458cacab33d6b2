package main

import (
	"time"

	"github.com/sluicedata/sluice/pkg/chconn"
	"github.com/sluicedata/sluice/pkg/config"
	"github.com/sluicedata/sluice/pkg/service"
)

// Config is the loader's configuration, from SLUICE_ variables.
type Config struct {
	service.Config
	// HTTPAddr serves /metrics, /healthz and /readyz.
	HTTPAddr   string        `env:"HTTP_ADDR, default=:8083"`
	ClickHouse chconn.Config `env:", prefix=CLICKHOUSE_"`
	Loader     LoaderConfig  `env:", prefix=LOADER_"`
}

// LoaderConfig sizes batches and retries, from SLUICE_LOADER_… variables.
type LoaderConfig struct {
	// Group is the consumer group of all loader members.
	Group string `env:"GROUP, default=sluice-loader"`
	// A table's records are inserted, one block per raw partition, when they are BatchRows
	// records or BatchBytes bytes, or FlushInterval after the oldest of them came: about one
	// insert per second per table and partition while it keeps up. A table whose blocks
	// ClickHouse refuses for the partitions their rows fall in, or whose insert runs out of time,
	// halves its blocks, down to BatchRowsMin (or BatchRows when that is smaller), and doubles
	// them back while it is behind.
	BatchRows     int           `env:"BATCH_ROWS, default=50000"`
	BatchRowsMin  int           `env:"BATCH_ROWS_MIN, default=1000"`
	BatchBytes    int           `env:"BATCH_BYTES, default=67108864"`
	FlushInterval time.Duration `env:"FLUSH_INTERVAL, default=1s"`
	// MaxRecordBytes: larger records are dead-lettered as too_large, with a stub in the letter.
	MaxRecordBytes int `env:"MAX_RECORD_BYTES, default=1048576"`
	// RetryMaxBackoff caps the wait between insert retries while ClickHouse is unavailable.
	RetryMaxBackoff time.Duration `env:"RETRY_MAX_BACKOFF, default=5s"`
	// FlushTimeout bounds, in halves, one flight's inserts and a step's dead letters, events and
	// commit, retries included. Rebalances wait for them, so it stays under
	// SLUICE_KAFKA_REBALANCE_TIMEOUT; what is not inserted when it runs out waits with its table.
	FlushTimeout time.Duration `env:"FLUSH_TIMEOUT, default=30s"`
	// DrainTimeout is how long the flights in the air at shutdown may still take to land and commit.
	DrainTimeout time.Duration `env:"DRAIN_TIMEOUT, default=10s"`
	// SchemaGrace is how long the records of a table that refuses them (missing, or with columns
	// that cannot take them) wait for the table to be fixed before they are dead-lettered with class
	// schema. Other tables go on loading meanwhile.
	SchemaGrace time.Duration `env:"SCHEMA_GRACE, default=5m"`
	// UnclassifiedAttempts and UnclassifiedGrace bound how long a ClickHouse error of a code sluice
	// does not classify (a materialized view's throwIf, a memory limit) holds a table: once it came
	// back that many times over at least that long, the failing block is split until the rows that
	// still fail are found, and they are dead-lettered with class unclassified.
	UnclassifiedAttempts int           `env:"UNCLASSIFIED_ATTEMPTS, default=5"`
	UnclassifiedGrace    time.Duration `env:"UNCLASSIFIED_GRACE, default=1m"`
	// InsertConcurrency is how many tables insert at once, each in a flight of its own; each
	// table's blocks go in order.
	InsertConcurrency int `env:"INSERT_CONCURRENCY, default=4"`
	// MaxPendingBytes bounds the records a loader holds for tables that refuse them or are
	// unreachable; past it the loader stops polling until they are inserted or dead-lettered.
	MaxPendingBytes int `env:"MAX_PENDING_BYTES, default=268435456"`
}

// Validate reports every problem at once.
func (c *Config) Validate() error {
	var p config.Problems
	p.Add(c.Config.Validate())
	if c.HTTPAddr == "" {
		p.Addf("HTTP_ADDR", "must not be empty")
	}
	p.Add(c.ClickHouse.Validate())
	l := c.Loader
	if l.Group == "" {
		p.Addf("LOADER_GROUP", "must not be empty")
	}
	if l.BatchRows < 1 || l.BatchRows > 1_000_000 {
		p.Addf("LOADER_BATCH_ROWS", "must be between 1 and 1000000, got %d", l.BatchRows)
	}
	if l.BatchRowsMin < 1 {
		p.Addf("LOADER_BATCH_ROWS_MIN", "must be positive, got %d", l.BatchRowsMin)
	}
	if l.BatchBytes < 1024 {
		p.Addf("LOADER_BATCH_BYTES", "must be at least 1024, got %d", l.BatchBytes)
	}
	if l.FlushInterval < time.Millisecond {
		p.Addf("LOADER_FLUSH_INTERVAL", "must be at least 1ms, got %s", l.FlushInterval)
	}
	if l.MaxRecordBytes < 1 {
		p.Addf("LOADER_MAX_RECORD_BYTES", "must be positive, got %d", l.MaxRecordBytes)
	}
	if l.RetryMaxBackoff < time.Millisecond {
		p.Addf("LOADER_RETRY_MAX_BACKOFF", "must be at least 1ms, got %s", l.RetryMaxBackoff)
	}
	if l.FlushTimeout < time.Second || l.FlushTimeout >= c.Kafka.RebalanceTimeout {
		p.Addf("LOADER_FLUSH_TIMEOUT", "must be at least 1s and shorter than SLUICE_KAFKA_REBALANCE_TIMEOUT (%s), got %s", c.Kafka.RebalanceTimeout, l.FlushTimeout)
	}
	if l.DrainTimeout <= 0 || l.DrainTimeout >= c.ShutdownTimeout {
		p.Addf("LOADER_DRAIN_TIMEOUT", "must be positive and shorter than SLUICE_SHUTDOWN_TIMEOUT (%s), got %s", c.ShutdownTimeout, l.DrainTimeout)
	}
	if l.SchemaGrace < time.Second {
		p.Addf("LOADER_SCHEMA_GRACE", "must be at least 1s, got %s", l.SchemaGrace)
	}
	if l.UnclassifiedAttempts < 1 || l.UnclassifiedAttempts > 1000 {
		p.Addf("LOADER_UNCLASSIFIED_ATTEMPTS", "must be between 1 and 1000, got %d", l.UnclassifiedAttempts)
	}
	if l.UnclassifiedGrace < 0 {
		p.Addf("LOADER_UNCLASSIFIED_GRACE", "must not be negative, got %s", l.UnclassifiedGrace)
	}
	if l.InsertConcurrency < 1 || l.InsertConcurrency > 64 {
		p.Addf("LOADER_INSERT_CONCURRENCY", "must be between 1 and 64, got %d", l.InsertConcurrency)
	}
	if l.MaxPendingBytes < l.BatchBytes {
		p.Addf("LOADER_MAX_PENDING_BYTES", "must be at least SLUICE_LOADER_BATCH_BYTES (%d), got %d", l.BatchBytes, l.MaxPendingBytes)
	}
	return p.Err()
}
