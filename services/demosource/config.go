package main

import (
	"github.com/sluicedata/sluice/pkg/config"
	"github.com/sluicedata/sluice/pkg/demosource"
	"github.com/sluicedata/sluice/pkg/logging"
)

// Config is the demo source's configuration, from SLUICE_ variables; the source's own are
// SLUICE_DEMO_….
type Config struct {
	// HTTPAddr serves the API, /stats, /metrics and /healthz.
	HTTPAddr string         `env:"HTTP_ADDR, default=:8081"`
	Log      logging.Config `env:", prefix=LOG_"`
	demosource.Config
}

// Validate reports every problem at once.
func (c *Config) Validate() error {
	var p config.Problems
	if c.HTTPAddr == "" {
		p.Addf("HTTP_ADDR", "must not be empty")
	}
	p.Add(c.Log.Validate())
	p.Add(c.Config.Validate())
	return p.Err()
}
