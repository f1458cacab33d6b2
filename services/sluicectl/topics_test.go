package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"maps"
	"strings"
	"testing"

	"github.com/sethvargo/go-envconfig"

	"github.com/sluicedata/sluice/pkg/stacktest"
)

// TestTopicsAgainstBroker runs `sluicectl topics` on the real broker: the first run creates the
// four topics, the second finds them, --check passes, and --check fails with exit code 3 when a
// topic is missing or has fewer partitions than configured.
func TestTopicsAgainstBroker(t *testing.T) {
	kcfg := stacktest.Kafka(t)
	env := stacktest.Env(kcfg, nil)
	ctx := context.Background()

	statuses := func(args []string, env map[string]string, wantCode int) map[string]string {
		t.Helper()
		var out, errOut bytes.Buffer
		code, err := run(ctx, append(args, "-o", "json"), envconfig.MapLookuper(env), &out, &errOut)
		if err != nil || code != wantCode {
			t.Fatalf("sluicectl %v = %d, %v (want %d); stderr: %s", args, code, err, wantCode, errOut.String())
		}
		var rows []topicRow
		if err := json.Unmarshal(out.Bytes(), &rows); err != nil {
			t.Fatalf("output %q: %v", out.String(), err)
		}
		got := map[string]string{}
		for _, r := range rows {
			got[r.Topic] = r.Status
		}
		return got
	}

	first := statuses([]string{"topics"}, env, exitOK)
	second := statuses([]string{"topics"}, env, exitOK)
	checked := statuses([]string{"topics", "--check"}, env, exitOK)

	wider := maps.Clone(env)
	wider["SLUICE_KAFKA_RAW_PARTITIONS"] = "8"
	fewer := statuses([]string{"topics", "--check"}, wider, exitNotReady)

	other := maps.Clone(env)
	other["SLUICE_KAFKA_DLQ_TOPIC"] = stacktest.Name(t, "absent")
	missing := statuses([]string{"topics", "--check"}, other, exitNotReady)

	tests := []struct {
		name        string
		got         map[string]string
		topic, want string
	}{
		{"first run creates tasks", first, kcfg.TasksTopic, "created"},
		{"first run creates raw", first, kcfg.RawTopic, "created"},
		{"first run creates dlq", first, kcfg.DLQTopic, "created"},
		{"first run creates events", first, kcfg.EventsTopic, "created"},
		{"second run finds raw", second, kcfg.RawTopic, "exists"},
		{"check finds events", checked, kcfg.EventsTopic, "exists"},
		{"check reports fewer partitions", fewer, kcfg.RawTopic, "fewer_partitions"},
		{"check reports a missing topic", missing, other["SLUICE_KAFKA_DLQ_TOPIC"], "missing"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.got[tt.topic] != tt.want {
				t.Fatalf("%s: status %q, want %q (all: %v)", tt.topic, tt.got[tt.topic], tt.want, tt.got)
			}
		})
	}
}

func TestUsage(t *testing.T) {
	tests := []struct {
		args []string
		code int
	}{
		{nil, exitUsage},
		{[]string{"help"}, exitOK},
		{[]string{"frobnicate"}, exitUsage},
		{[]string{"topics", "-o", "xml"}, exitUsage},
		{[]string{"topics", "--no-such-flag"}, exitUsage},
		{[]string{"jobs", "--help"}, exitOK},
		{[]string{"dlq", "list", "-h"}, exitOK},
		{[]string{"submit"}, exitUsage},
		{[]string{"status", "a", "b"}, exitUsage},
		{[]string{"dlq"}, exitUsage},
		{[]string{"dlq", "list", "--stage", "transform"}, exitUsage},
		{[]string{"infer", "x.yaml", "--pages", "0"}, exitUsage},
		{[]string{"validate"}, exitUsage},
		{[]string{"version"}, exitOK},
		{[]string{"completion", "bash"}, exitOK},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			var stderr bytes.Buffer
			code, _ := run(context.Background(), tt.args, envconfig.MapLookuper(nil), io.Discard, &stderr)
			if code != tt.code {
				t.Fatalf("exit code %d, want %d; stderr: %s", code, tt.code, stderr.String())
			}
		})
	}
}
