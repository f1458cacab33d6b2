package demosource_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/sethvargo/go-envconfig"

	"github.com/sluicedata/sluice/pkg/config"
	"github.com/sluicedata/sluice/pkg/demosource"
)

// loadable lets config.Load fill a demosource.Config the way a service that embeds it does.
type loadable struct {
	demosource.Config
}

func TestConfigDefaultsMatchTags(t *testing.T) {
	var got loadable
	if err := config.Load(context.Background(), envconfig.MapLookuper(nil), &got); err != nil {
		t.Fatal(err)
	}
	if got.Config != demosource.DefaultConfig() {
		t.Fatalf("defaults from the tags %+v differ from DefaultConfig %+v", got.Config, demosource.DefaultConfig())
	}
}

func TestConfigReadsVariables(t *testing.T) {
	env := envconfig.MapLookuper(map[string]string{
		"SLUICE_DEMO_RECORDS":         "5000",
		"SLUICE_DEMO_RATE_429":        "0.1",
		"SLUICE_DEMO_RETRY_AFTER":     "1500ms",
		"SLUICE_DEMO_BURST_5XX":       "3",
		"SLUICE_DEMO_MALFORMED_EVERY": "100",
		"SLUICE_DEMO_FAIL_RANGES":     "1000-1999, 5000-5099,7",
	})
	var got loadable
	if err := config.Load(context.Background(), env, &got); err != nil {
		t.Fatal(err)
	}
	want := demosource.DefaultConfig()
	want.Records, want.Rate429, want.RetryAfter, want.Burst5xx = 5000, 0.1, 1500*time.Millisecond, 3
	want.MalformedEvery, want.FailRanges = 100, "1000-1999, 5000-5099,7"
	if got.Config != want {
		t.Fatalf("loaded %+v, want %+v", got.Config, want)
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	env := envconfig.MapLookuper(map[string]string{
		"SLUICE_DEMO_RECORDS":         "-1",
		"SLUICE_DEMO_RECORD_SIZE":     "0",
		"SLUICE_DEMO_PAGE_LATENCY":    "-1s",
		"SLUICE_DEMO_MAX_LIMIT":       "0",
		"SLUICE_DEMO_RATE_429":        "1.5",
		"SLUICE_DEMO_RETRY_AFTER":     "0s",
		"SLUICE_DEMO_RATE_5XX":        "-0.1",
		"SLUICE_DEMO_BURST_5XX":       "0",
		"SLUICE_DEMO_RATE_SLOW":       "NaN",
		"SLUICE_DEMO_SLOW_DELAY":      "-2s",
		"SLUICE_DEMO_RATE_TRUNCATED":  "2",
		"SLUICE_DEMO_MALFORMED_EVERY": "-5",
		"SLUICE_DEMO_FAIL_RANGES":     "10-5,abc,,7-",
	})
	err := config.Load(context.Background(), env, &loadable{})
	if err == nil {
		t.Fatal("Load accepted a configuration with thirteen problems")
	}
	for _, want := range []string{
		"SLUICE_DEMO_RECORDS: must not be negative",
		"SLUICE_DEMO_RECORD_SIZE: must be positive",
		"SLUICE_DEMO_PAGE_LATENCY: must not be negative",
		"SLUICE_DEMO_MAX_LIMIT: must be positive",
		"SLUICE_DEMO_RATE_429: must be between 0 and 1, got 1.5",
		"SLUICE_DEMO_RETRY_AFTER: must be positive",
		"SLUICE_DEMO_RATE_5XX: must be between 0 and 1",
		"SLUICE_DEMO_BURST_5XX: must be at least 1",
		"SLUICE_DEMO_RATE_SLOW: must be between 0 and 1, got NaN",
		"SLUICE_DEMO_SLOW_DELAY: must not be negative",
		"SLUICE_DEMO_RATE_TRUNCATED: must be between 0 and 1",
		"SLUICE_DEMO_MALFORMED_EVERY: must not be negative",
		`SLUICE_DEMO_FAIL_RANGES: "10-5" is not a range of non-negative indices from low to high; "abc" is not a range; "" is not a range; "7-" is not a range`,
	} {
		t.Run(want, func(t *testing.T) {
			if !strings.Contains(err.Error(), want) {
				t.Fatalf("error lacks %q:\n%v", want, err)
			}
		})
	}
}

func TestNewRejectsInvalidConfig(t *testing.T) {
	cfg := demosource.DefaultConfig()
	cfg.FailRanges = "5-1"
	if _, err := demosource.New(cfg, nil); err == nil || !strings.Contains(err.Error(), "SLUICE_DEMO_FAIL_RANGES") {
		t.Fatalf("New = %v, want an error naming SLUICE_DEMO_FAIL_RANGES", err)
	}
}
