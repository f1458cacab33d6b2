package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/sethvargo/go-envconfig"

	"github.com/sluicedata/sluice/pkg/config"
)

// TestRetentionConfig reads the retention's defaults and refuses bounds that would forget a job
// as it ends, naming the variable.
func TestRetentionConfig(t *testing.T) {
	var cfg Config
	if err := config.Load(context.Background(), envconfig.MapLookuper(nil), &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.Planner.KeepFinished != 168*time.Hour || cfg.Planner.KeepFinishedMax != 10_000 {
		t.Fatalf("defaults %s and %d, want 168h and 10000", cfg.Planner.KeepFinished, cfg.Planner.KeepFinishedMax)
	}
	for _, c := range []struct{ name, value, says string }{
		{"SLUICE_PLANNER_KEEP_FINISHED", "30s", "SLUICE_PLANNER_KEEP_FINISHED: must be at least 1m"},
		{"SLUICE_PLANNER_KEEP_FINISHED", "-1h", "SLUICE_PLANNER_KEEP_FINISHED: must be at least 1m"},
		{"SLUICE_PLANNER_KEEP_FINISHED_MAX", "0", "SLUICE_PLANNER_KEEP_FINISHED_MAX: must be between 1 and 10000000"},
		{"SLUICE_PLANNER_KEEP_FINISHED_MAX", "20000000", "SLUICE_PLANNER_KEEP_FINISHED_MAX: must be between 1 and 10000000"},
	} {
		t.Run(c.name+"="+c.value, func(t *testing.T) {
			var cfg Config
			err := config.Load(context.Background(), envconfig.MapLookuper(map[string]string{c.name: c.value}), &cfg)
			if err == nil || !strings.Contains(err.Error(), c.says) {
				t.Fatalf("%v, want %q", err, c.says)
			}
		})
	}
}

// TestLeaseConfig reads the lease's defaults (no peers: a follower forwards nothing) and refuses a
// session the brokers would not take, an advertised address that is no http(s) address, or a peer
// that is no address, naming the variable.
func TestLeaseConfig(t *testing.T) {
	var cfg Config
	if err := config.Load(context.Background(), envconfig.MapLookuper(nil), &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.Planner.LeaseGroup != "sluice-planner-lead" || cfg.Planner.LeaseTimeout != 10*time.Second || cfg.Planner.Advertise != "" ||
		cfg.Kafka.LeaseTopic != "sluice.planner-lease" || len(cfg.Planner.Peers) != 0 {
		t.Fatalf("defaults %q, %s, %q, %q", cfg.Planner.LeaseGroup, cfg.Planner.LeaseTimeout, cfg.Planner.Advertise, cfg.Kafka.LeaseTopic)
	}
	for _, c := range []struct{ name, value, says string }{
		{"SLUICE_PLANNER_LEASE_TIMEOUT", "2s", "SLUICE_PLANNER_LEASE_TIMEOUT: must be between 6s"},
		{"SLUICE_PLANNER_LEASE_TIMEOUT", "1h", "SLUICE_PLANNER_LEASE_TIMEOUT: must be between 6s"},
		{"SLUICE_PLANNER_ADVERTISE", "10.0.0.7:8080", "SLUICE_PLANNER_ADVERTISE: must be an http(s) address"},
		{"SLUICE_PLANNER_ADVERTISE", "http://user:pw@10.0.0.7:8080", "SLUICE_PLANNER_ADVERTISE: must be an http(s) address"},
		{"SLUICE_PLANNER_LEASE_GROUP", "", "SLUICE_PLANNER_LEASE_GROUP: must not be empty"},
		{"SLUICE_PLANNER_PEERS", "10.0.0.0/8,http://user:pw@planner-0:8080", "SLUICE_PLANNER_PEERS: \"http://user:pw@planner-0:8080\" is not a base URL"},
		{"SLUICE_PLANNER_PEERS", "10.0.0.0/40", "SLUICE_PLANNER_PEERS: \"10.0.0.0/40\" is not a CIDR range"},
	} {
		t.Run(c.name+"="+c.value, func(t *testing.T) {
			var cfg Config
			err := config.Load(context.Background(), envconfig.MapLookuper(map[string]string{c.name: c.value}), &cfg)
			if err == nil || !strings.Contains(err.Error(), c.says) {
				t.Fatalf("%v, want %q", err, c.says)
			}
		})
	}
}
