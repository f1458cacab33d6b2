package main

import (
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
