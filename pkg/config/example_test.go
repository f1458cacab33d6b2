package config_test

import (
	"context"
	"fmt"

	"github.com/sethvargo/go-envconfig"

	"github.com/sluicedata/sluice/pkg/config"
)

type exampleConfig struct {
	Workers  int           `env:"WORKERS, default=4"`
	Password config.Secret `env:"PASSWORD"`
}

func (c *exampleConfig) Validate() error {
	var p config.Problems
	if c.Workers < 1 {
		p.Addf("WORKERS", "must be at least 1, got %d", c.Workers)
	}
	return p.Err()
}

// Load reads SLUICE_ variables; a Secret prints redacted wherever it goes.
func ExampleLoad() {
	env := envconfig.MapLookuper(map[string]string{"SLUICE_PASSWORD": "s3cret"})
	var cfg exampleConfig
	if err := config.Load(context.Background(), env, &cfg); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(cfg.Workers, cfg.Password)

	bad := envconfig.MapLookuper(map[string]string{"SLUICE_WORKERS": "0"})
	fmt.Println(config.Load(context.Background(), bad, &exampleConfig{}))
	// Output:
	// 4 [redacted]
	// invalid configuration:
	// SLUICE_WORKERS: must be at least 1, got 0
}
