package main

import (
	"net/url"
	"time"

	"github.com/sluicedata/sluice/pkg/chconn"
	"github.com/sluicedata/sluice/pkg/config"
	"github.com/sluicedata/sluice/pkg/service"
	"github.com/sluicedata/sluice/pkg/source"
)

// Config is the planner's configuration, from SLUICE_ variables.
type Config struct {
	service.Config
	// HTTPAddr serves /metrics, /healthz and /readyz.
	HTTPAddr string        `env:"HTTP_ADDR, default=:8080"`
	Planner  PlannerConfig `env:", prefix=PLANNER_"`
	// SecretDirs are where a source's ${file:…} references may point, comma-separated.
	SecretDirs []string `env:"SECRET_DIRS, default=/run/secrets/sluice"`
	// SecretHosts binds secrets to the hosts they may go to: NAME=host|host,NAME=host.
	SecretHosts string `env:"SECRET_HOSTS"`
	// SourceAllow lets sources reach these hosts, addresses and CIDR ranges although they are
	// loopback, link-local, private or multicast ones, which are refused otherwise.
	SourceAllow []string `env:"SOURCE_ALLOW"`
	// ExtractorGroup and LoaderGroup are the groups whose lag the planner measures, on the tasks and
	// the raw topic: the same variables the extractor and the loader read.
	ExtractorGroup string `env:"EXTRACTOR_GROUP, default=sluice-extractor"`
	LoaderGroup    string `env:"LOADER_GROUP, default=sluice-loader"`
	// ClickHouse is where the planner checks, at submit, that an existing sink table can take the
	// landing rows; the planner works without it, and the loaders check again.
	ClickHouse chconn.Config `env:", prefix=CLICKHOUSE_"`
}

// PlannerConfig is how the planner watches its jobs, from SLUICE_PLANNER_… variables.
type PlannerConfig struct {
	// JobStallTimeout fails a running job that had no news (no task taken or finished, no record
	// loaded) for that long while it was worked on, with the reason. Time its tasks only waited on
	// the tasks topic does not count: a job queued behind others is not stalled.
	JobStallTimeout time.Duration `env:"JOB_STALL_TIMEOUT, default=30m"`
	// RepublishAfter is how long a planned job may go without its tasks reported published before
	// a planner publishes them again (the planner that planned it stopped in between).
	RepublishAfter time.Duration `env:"REPUBLISH_AFTER, default=30s"`
	// Auth is how the jobs API tells who calls: "tokens" (bearer tokens from TokensFile) or
	// "none", which serves it to whoever reaches the port.
	Auth string `env:"AUTH, default=tokens"`
	// TokensFile holds the API's bearer tokens, a line "name role token" each (role: read,
	// submit or admin); it is read again when it changes.
	TokensFile string `env:"TOKENS_FILE, default=/run/secrets/sluice/planner-tokens"`
	// MaxConcurrentSubmits bounds the submits served at once; more get 429.
	MaxConcurrentSubmits int `env:"MAX_CONCURRENT_SUBMITS, default=4"`
	// LagInterval is how often the planner measures the groups' lag.
	LagInterval time.Duration `env:"LAG_INTERVAL, default=15s"`
	// FirstPageMaxBytes bounds the body of the page a submit reads to learn a source's extent.
	FirstPageMaxBytes int64 `env:"FIRST_PAGE_MAX_BYTES, default=8388608"`
	// FirstPageMaxRecords bounds the records of that page.
	FirstPageMaxRecords int `env:"FIRST_PAGE_MAX_RECORDS, default=100000"`
	// RecentDeadLetters is how many of the newest dead letters the planner keeps for the status page
	// and GET /v1/deadletters (it counts all of them by job, stage and class).
	RecentDeadLetters int `env:"RECENT_DEAD_LETTERS, default=1000"`
	// MarkMaxSkew is how far past the clock a time cursor may lie and still count towards an
	// incremental job's mark: further, it is a record stamped ahead (or garbage), and as the mark it
	// would leave every later run nothing to read.
	MarkMaxSkew time.Duration `env:"MARK_MAX_SKEW, default=24h"`
	// KeepFinished is how long the planner keeps a finished job (succeeded, failed or cancelled)
	// after it ended, and KeepFinishedMax how many finished jobs it keeps: past either, it forgets
	// the oldest. Running jobs are always kept.
	KeepFinished    time.Duration `env:"KEEP_FINISHED, default=168h"`
	KeepFinishedMax int           `env:"KEEP_FINISHED_MAX, default=10000"`
	// LeaseGroup is the consumer group through which planners hold the lease (partition 0 of
	// SLUICE_KAFKA_LEASE_TOPIC): its holder leads, the others follow.
	LeaseGroup string `env:"LEASE_GROUP, default=sluice-planner-lead"`
	// LeaseTimeout is the lease group's session timeout: a leader that stops answering loses the
	// lease after it, and another planner leads a few seconds later.
	LeaseTimeout time.Duration `env:"LEASE_TIMEOUT, default=10s"`
	// Advertise is where the other planners reach this one's API (http://10.0.0.7:8080), to
	// forward writes to it while it leads; empty, they answer writes 503 with Retry-After.
	Advertise string `env:"ADVERTISE"`
	// Peers are the addresses a follower forwards writes to, the caller's token with them: base
	// URLs, host names, addresses and CIDR ranges. The leader's address on the lease topic must be
	// among them; empty, a follower forwards nothing and answers writes 503 with Retry-After.
	Peers []string `env:"PEERS"`
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
	p.Add(c.ClickHouse.Validate())
	if c.Planner.JobStallTimeout < time.Minute {
		p.Addf("PLANNER_JOB_STALL_TIMEOUT", "must be at least 1m, got %s", c.Planner.JobStallTimeout)
	}
	switch c.Planner.Auth {
	case "tokens":
		if c.Planner.TokensFile == "" {
			p.Addf("PLANNER_TOKENS_FILE", "must name the file of the API's tokens (or set SLUICE_PLANNER_AUTH=none)")
		}
	case "none":
	default:
		p.Addf("PLANNER_AUTH", "must be tokens or none, got %q", c.Planner.Auth)
	}
	if c.Planner.MaxConcurrentSubmits < 1 || c.Planner.MaxConcurrentSubmits > 1000 {
		p.Addf("PLANNER_MAX_CONCURRENT_SUBMITS", "must be between 1 and 1000, got %d", c.Planner.MaxConcurrentSubmits)
	}
	if c.Planner.FirstPageMaxBytes < 4096 || c.Planner.FirstPageMaxBytes > 1<<30 {
		p.Addf("PLANNER_FIRST_PAGE_MAX_BYTES", "must be between 4096 and 1073741824, got %d", c.Planner.FirstPageMaxBytes)
	}
	if c.Planner.FirstPageMaxRecords < 1 || c.Planner.FirstPageMaxRecords > 10_000_000 {
		p.Addf("PLANNER_FIRST_PAGE_MAX_RECORDS", "must be between 1 and 10000000, got %d", c.Planner.FirstPageMaxRecords)
	}
	if c.Planner.RecentDeadLetters < 1 || c.Planner.RecentDeadLetters > 100_000 {
		p.Addf("PLANNER_RECENT_DEAD_LETTERS", "must be between 1 and 100000, got %d", c.Planner.RecentDeadLetters)
	}
	if c.Planner.KeepFinished < time.Minute {
		p.Addf("PLANNER_KEEP_FINISHED", "must be at least 1m, got %s", c.Planner.KeepFinished)
	}
	if c.Planner.KeepFinishedMax < 1 || c.Planner.KeepFinishedMax > 10_000_000 {
		p.Addf("PLANNER_KEEP_FINISHED_MAX", "must be between 1 and 10000000, got %d", c.Planner.KeepFinishedMax)
	}
	if c.Planner.LagInterval < time.Second {
		p.Addf("PLANNER_LAG_INTERVAL", "must be at least 1s, got %s", c.Planner.LagInterval)
	}
	if c.ExtractorGroup == "" || c.LoaderGroup == "" {
		p.Addf("EXTRACTOR_GROUP", "and SLUICE_LOADER_GROUP must not be empty")
	}
	if c.Planner.MarkMaxSkew < time.Second {
		p.Addf("PLANNER_MARK_MAX_SKEW", "must be at least 1s, got %s", c.Planner.MarkMaxSkew)
	}
	if c.Planner.RepublishAfter < time.Second {
		p.Addf("PLANNER_REPUBLISH_AFTER", "must be at least 1s, got %s", c.Planner.RepublishAfter)
	}
	if c.Planner.LeaseGroup == "" {
		p.Addf("PLANNER_LEASE_GROUP", "must not be empty")
	}
	if c.Planner.LeaseTimeout < 6*time.Second || c.Planner.LeaseTimeout > 5*time.Minute {
		p.Addf("PLANNER_LEASE_TIMEOUT", "must be between 6s (the brokers' least group session) and 5m, got %s", c.Planner.LeaseTimeout)
	}
	if a := c.Planner.Advertise; a != "" {
		if u, err := url.Parse(a); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil {
			p.Addf("PLANNER_ADVERTISE", "must be an http(s) address without credentials such as http://10.0.0.7:8080, got %q", a)
		}
	}
	if _, err := parsePeers(c.Planner.Peers); err != nil {
		p.Addf("PLANNER_PEERS", "%v", err)
	}
	return p.Err()
}
