package main

import (
	"time"

	"github.com/sluicedata/sluice/pkg/config"
	"github.com/sluicedata/sluice/pkg/service"
	"github.com/sluicedata/sluice/pkg/source"
)

// Config is the extractor's configuration, from SLUICE_ variables.
type Config struct {
	service.Config
	// HTTPAddr serves /metrics, /healthz and /readyz.
	HTTPAddr  string          `env:"HTTP_ADDR, default=:8082"`
	Extractor ExtractorConfig `env:", prefix=EXTRACTOR_"`
	// SecretDirs are where a source's ${file:…} references may point, comma-separated.
	SecretDirs []string `env:"SECRET_DIRS, default=/run/secrets/sluice"`
	// SecretHosts binds secrets to the hosts they may go to: NAME=host|host,NAME=host.
	SecretHosts string `env:"SECRET_HOSTS"`
	// SourceAllow lets sources reach these hosts, addresses and CIDR ranges although they are
	// loopback, link-local, private or multicast ones, which are refused otherwise.
	SourceAllow []string `env:"SOURCE_ALLOW"`
}

// ExtractorConfig is how the extractor fetches and produces, from SLUICE_EXTRACTOR_… variables.
type ExtractorConfig struct {
	// Group is the consumer group of all extractor members.
	Group string `env:"GROUP, default=sluice-extractor"`
	// Concurrency is how many tasks one member works on at once.
	Concurrency int `env:"CONCURRENCY, default=4"`
	// PageDeadline bounds all attempts at one page, waits included.
	PageDeadline time.Duration `env:"PAGE_DEADLINE, default=5m"`
	// RetryBase and RetryMax shape the exponential backoff with full jitter between attempts.
	RetryBase time.Duration `env:"RETRY_BASE, default=200ms"`
	RetryMax  time.Duration `env:"RETRY_MAX, default=30s"`
	// MaxBodyBytes caps one response body.
	MaxBodyBytes int64 `env:"MAX_BODY_BYTES, default=67108864"`
	// MaxPageRecords caps the records of one page: a page of tiny records costs memory by the
	// record, not by the byte. A page over it is dead-lettered as page_too_large.
	MaxPageRecords int `env:"MAX_PAGE_RECORDS, default=100000"`
	// SourceWait is how long a task that names its job's source waits for it to be read from the
	// jobs topic.
	SourceWait time.Duration `env:"SOURCE_WAIT, default=30s"`
	// MaxTaskStarts is how many members may start a task and neither finish it nor hand it over
	// (killed by it, out of memory) before the next one dead-letters it instead of running it.
	MaxTaskStarts int `env:"MAX_TASK_STARTS, default=3"`
	// MaxRecordBytes caps a dead letter's copy of what failed; larger ones keep size and sha256.
	MaxRecordBytes int `env:"MAX_RECORD_BYTES, default=1048576"`
	// MaxBufferedRecords bounds the records waiting for Kafka; producing blocks beyond it.
	MaxBufferedRecords int `env:"MAX_BUFFERED_RECORDS, default=50000"`
	// MaxBufferedBytes bounds the same buffer by size.
	MaxBufferedBytes int `env:"MAX_BUFFERED_BYTES, default=268435456"`
	// ChainPages is how many pages of a crawl one member reads in a row without waiting for each
	// page's task to come back from the tasks topic (each read while the page before is produced);
	// 0 reads every page from its task.
	ChainPages int `env:"CHAIN_PAGES, default=1000"`
	// DrainTimeout is how long tasks in flight at shutdown or revocation may still take.
	DrainTimeout time.Duration `env:"DRAIN_TIMEOUT, default=15s"`
}

// Validate reports every problem at once.
func (c *Config) Validate() error {
	var p config.Problems
	p.Add(c.Config.Validate())
	if _, err := source.ParseEgress(c.SourceAllow); err != nil {
		p.Addf("SOURCE_ALLOW", "%v", err)
	}
	if c.HTTPAddr == "" {
		p.Addf("HTTP_ADDR", "must not be empty")
	}
	x := c.Extractor
	if x.Group == "" {
		p.Addf("EXTRACTOR_GROUP", "must not be empty")
	}
	if x.Concurrency < 1 || x.Concurrency > 1024 {
		p.Addf("EXTRACTOR_CONCURRENCY", "must be between 1 and 1024, got %d", x.Concurrency)
	}
	if x.PageDeadline < time.Second {
		p.Addf("EXTRACTOR_PAGE_DEADLINE", "must be at least 1s, got %s", x.PageDeadline)
	}
	if x.RetryBase <= 0 || x.RetryMax < x.RetryBase {
		p.Addf("EXTRACTOR_RETRY_BASE", "must be positive and at most SLUICE_EXTRACTOR_RETRY_MAX, got %s and %s", x.RetryBase, x.RetryMax)
	}
	if x.MaxBodyBytes < 1024 {
		p.Addf("EXTRACTOR_MAX_BODY_BYTES", "must be at least 1024, got %d", x.MaxBodyBytes)
	}
	if x.SourceWait < time.Second {
		p.Addf("EXTRACTOR_SOURCE_WAIT", "must be at least 1s, got %s", x.SourceWait)
	}
	if x.MaxTaskStarts < 1 || x.MaxTaskStarts > 100 {
		p.Addf("EXTRACTOR_MAX_TASK_STARTS", "must be between 1 and 100, got %d", x.MaxTaskStarts)
	}
	if x.MaxPageRecords < 1 || x.MaxPageRecords > 10_000_000 {
		p.Addf("EXTRACTOR_MAX_PAGE_RECORDS", "must be between 1 and 10000000, got %d", x.MaxPageRecords)
	}
	if x.MaxRecordBytes < 1 {
		p.Addf("EXTRACTOR_MAX_RECORD_BYTES", "must be positive, got %d", x.MaxRecordBytes)
	}
	if x.MaxBufferedRecords < 1 {
		p.Addf("EXTRACTOR_MAX_BUFFERED_RECORDS", "must be positive, got %d", x.MaxBufferedRecords)
	}
	if x.MaxBufferedBytes < 1<<20 {
		p.Addf("EXTRACTOR_MAX_BUFFERED_BYTES", "must be at least 1 MiB, got %d", x.MaxBufferedBytes)
	}
	if x.ChainPages < 0 || x.ChainPages > 1_000_000 {
		p.Addf("EXTRACTOR_CHAIN_PAGES", "must be between 0 and 1000000, got %d", x.ChainPages)
	}
	if x.DrainTimeout <= 0 || x.DrainTimeout >= c.ShutdownTimeout {
		p.Addf("EXTRACTOR_DRAIN_TIMEOUT", "must be positive and shorter than SLUICE_SHUTDOWN_TIMEOUT (%s), got %s", c.ShutdownTimeout, x.DrainTimeout)
	}
	return p.Err()
}
