package main

import (
	"time"

	"github.com/sluicedata/sluice/pkg/chconn"
	"github.com/sluicedata/sluice/pkg/config"
	"github.com/sluicedata/sluice/pkg/service"
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
	// ClickHouse is where the planner checks, at submit, that an existing sink table can take the
	// landing rows; the planner works without it, and the loaders check again.
	ClickHouse chconn.Config `env:", prefix=CLICKHOUSE_"`
}

// PlannerConfig is how the planner watches its jobs, from SLUICE_PLANNER_… variables.
type PlannerConfig struct {
	// JobStallTimeout fails a running job that had no news (no task finished, no record loaded)
	// for that long, with the reason.
	JobStallTimeout time.Duration `env:"JOB_STALL_TIMEOUT, default=30m"`
	// RepublishAfter is how long a planned job may go without its tasks reported published before
	// a planner publishes them again (the planner that planned it stopped in between).
	RepublishAfter time.Duration `env:"REPUBLISH_AFTER, default=30s"`
}

// Validate reports every problem at once.
func (c *Config) Validate() error {
	var p config.Problems
	p.Add(c.Config.Validate())
	if c.HTTPAddr == "" {
		p.Addf("HTTP_ADDR", "must not be empty")
	}
	p.Add(c.ClickHouse.Validate())
	if c.Planner.JobStallTimeout < time.Minute {
		p.Addf("PLANNER_JOB_STALL_TIMEOUT", "must be at least 1m, got %s", c.Planner.JobStallTimeout)
	}
	if c.Planner.RepublishAfter < time.Second {
		p.Addf("PLANNER_REPUBLISH_AFTER", "must be at least 1s, got %s", c.Planner.RepublishAfter)
	}
	return p.Err()
}
