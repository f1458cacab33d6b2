package main

import (
	"log/slog"
	"net/url"
	"time"

	"github.com/sluicedata/sluice/pkg/config"
	"github.com/sluicedata/sluice/pkg/kafka"
	"github.com/sluicedata/sluice/pkg/logging"
)

// Config is what sluicectl reads from SLUICE_ variables: the same Kafka settings as the services.
type Config struct {
	Log   logging.Config `env:", prefix=LOG_"`
	Kafka kafka.Config   `env:", prefix=KAFKA_"`
}

// Validate reports every problem at once.
func (c *Config) Validate() error {
	var p config.Problems
	p.Add(c.Log.Validate())
	p.Add(c.Kafka.Validate())
	return p.Err()
}

// logger is the log of the Kafka client: warnings and errors on stderr, so that a command's output
// is not lost among the client's news, unless SLUICE_LOG_LEVEL asks for more.
func (c *cli) logger(cfg logging.Config) (*slog.Logger, error) {
	if _, set := c.lookup.Lookup("SLUICE_LOG_LEVEL"); !set {
		cfg.Level = "warn"
	}
	return logging.New(c.stderr, cfg, "sluicectl")
}

// PlannerConfig is where sluicectl finds the planner's jobs API.
type PlannerConfig struct {
	URL     string        `env:"PLANNER_URL, default=http://127.0.0.1:8080"`
	Timeout time.Duration `env:"PLANNER_TIMEOUT, default=30s"`
	// Token is the bearer token sent with every request (SLUICE_PLANNER_TOKEN), or read from
	// TokenFile.
	Token     config.Secret `env:"PLANNER_TOKEN"`
	TokenFile string        `env:"PLANNER_TOKEN_FILE"`
}

// token returns the token to send: SLUICE_PLANNER_TOKEN, else the first line of
// SLUICE_PLANNER_TOKEN_FILE, else none.
func (c *PlannerConfig) token() (config.Secret, error) {
	return config.ReadSecret(c.Token, c.TokenFile, "PLANNER_TOKEN_FILE")
}

// Validate reports every problem at once.
func (c *PlannerConfig) Validate() error {
	var p config.Problems
	if u, err := url.Parse(c.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		p.Addf("PLANNER_URL", "%q is not an http or https URL", c.URL)
	}
	config.CheckSecretSource(&p, c.Token, c.TokenFile, "PLANNER_TOKEN_FILE")
	if c.Timeout <= 0 {
		p.Addf("PLANNER_TIMEOUT", "must be positive, got %s", c.Timeout)
	}
	return p.Err()
}
