package main

import (
	"github.com/sluicedata/sluice/pkg/config"
	"github.com/sluicedata/sluice/pkg/service"
)

// Config is the planner's configuration, from SLUICE_ variables.
type Config struct {
	service.Config
	// HTTPAddr serves /metrics, /healthz and /readyz.
	HTTPAddr string `env:"HTTP_ADDR, default=:8080"`
}

// Validate reports every problem at once.
func (c *Config) Validate() error {
	var p config.Problems
	p.Add(c.Config.Validate())
	if c.HTTPAddr == "" {
		p.Addf("HTTP_ADDR", "must not be empty")
	}
	return p.Err()
}
