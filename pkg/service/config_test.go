package service_test

import (
	"context"
	"strings"
	"testing"

	"github.com/sethvargo/go-envconfig"

	"github.com/sluicedata/sluice/pkg/config"
	"github.com/sluicedata/sluice/pkg/service"
)

// TestConfigReportsEveryProblem loads a configuration with several mistakes and expects one error
// that names each variable.
func TestConfigReportsEveryProblem(t *testing.T) {
	env := envconfig.MapLookuper(map[string]string{
		"SLUICE_LOG_LEVEL":                "loud",
		"SLUICE_SHUTDOWN_TIMEOUT":         "0s",
		"SLUICE_KAFKA_BROKERS":            "broker-without-port,127.0.0.1:9092",
		"SLUICE_KAFKA_RAW_PARTITIONS":     "0",
		"SLUICE_KAFKA_DLQ_TOPIC":          "sluice.raw",
		"SLUICE_KAFKA_EVENTS_TOPIC":       "bad topic name",
		"SLUICE_KAFKA_REPLICATION_FACTOR": "0",
	})
	var cfg service.Config
	err := config.Load(context.Background(), env, &cfg)
	if err == nil {
		t.Fatal("Load accepted a configuration with seven problems")
	}
	for _, want := range []string{
		"SLUICE_LOG_LEVEL",
		"SLUICE_SHUTDOWN_TIMEOUT",
		`SLUICE_KAFKA_BROKERS: "broker-without-port" is not host:port`,
		"SLUICE_KAFKA_RAW_PARTITIONS: must be between 1 and 100000, got 0",
		`SLUICE_KAFKA_DLQ_TOPIC: "sluice.raw" is also SLUICE_KAFKA_RAW_TOPIC`,
		`SLUICE_KAFKA_EVENTS_TOPIC: "bad topic name" is not a legal topic name`,
		"SLUICE_KAFKA_REPLICATION_FACTOR",
	} {
		t.Run(want, func(t *testing.T) {
			if !strings.Contains(err.Error(), want) {
				t.Fatalf("error lacks %q:\n%v", want, err)
			}
		})
	}
}

func TestConfigDefaultsAreValid(t *testing.T) {
	var cfg service.Config
	if err := config.Load(context.Background(), envconfig.MapLookuper(nil), &cfg); err != nil {
		t.Fatal(err)
	}
	if got := cfg.Kafka.Topics(); len(got) != 7 || got[0].Name != "sluice.tasks" || got[4].Name != "sluice.jobs" || *got[4].Configs["cleanup.policy"] != "compact" ||
		got[1].Partitions != 12 || got[5].Name != "sluice.schemas" || *got[5].Configs["cleanup.policy"] != "compact" ||
		got[6].Name != "sluice.planner-lease" || got[6].Partitions != 1 || *got[6].Configs["cleanup.policy"] != "compact" {
		t.Fatalf("default topics %v", got)
	}
}
