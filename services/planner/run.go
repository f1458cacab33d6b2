package main

import (
	"context"
	"io"

	"github.com/sethvargo/go-envconfig"

	"github.com/sluicedata/sluice/pkg/config"
	"github.com/sluicedata/sluice/pkg/service"
)

// run loads the configuration, connects to Kafka, bootstraps the topics and serves the ops endpoints
// until ctx ends.
func run(ctx context.Context, lookup envconfig.Lookuper, stdout io.Writer) error {
	var cfg Config
	if err := config.Load(ctx, lookup, &cfg); err != nil {
		return err
	}
	rt, err := service.Start(ctx, "planner", stdout, cfg.Config)
	if err != nil {
		return err
	}
	return rt.Run(ctx, rt.NewServer(cfg.HTTPAddr))
}
