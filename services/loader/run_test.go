package main

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sethvargo/go-envconfig"

	"github.com/sluicedata/sluice/pkg/chconn"
	"github.com/sluicedata/sluice/pkg/kafka"
	"github.com/sluicedata/sluice/pkg/stacktest"
)

// TestRunAgainstStack starts the loader on the real Kafka and ClickHouse, waits until /readyz says
// both answer, checks that it created the topics and the database, and stops it with its context
// as SIGTERM would.
func TestRunAgainstStack(t *testing.T) {
	kcfg := stacktest.Kafka(t)
	chcfg := stacktest.ClickHouse(t)
	env := stacktest.Env(kcfg, &chcfg)
	env["SLUICE_HTTP_ADDR"] = "127.0.0.1:0"

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	logs := &stacktest.LogWriter{}
	done := make(chan error, 1)
	go func() { done <- run(ctx, envconfig.MapLookuper(env), logs) }()

	listening := logs.Await(t, "ops server listening", 60*time.Second)
	base := "http://" + listening["addr"].(string)
	waitReady(t, base+"/readyz", 30*time.Second)

	connected := logs.Await(t, "connected to clickhouse", time.Second)
	if v, _ := connected["version"].(string); !strings.HasPrefix(v, "1") && !strings.HasPrefix(v, "2") {
		t.Errorf("logged clickhouse version %q", v)
	}

	cl, err := kafka.NewClient(kcfg, "test", stacktest.Logger(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	report, err := kafka.CheckTopics(context.Background(), cl, kcfg.Topics())
	if err != nil {
		t.Fatal(err)
	}
	if len(report.Missing) > 0 {
		t.Fatalf("loader left topics missing: %v", report.Missing)
	}
	conn, err := chconn.Open(context.Background(), chcfg, stacktest.Logger(t))
	if err != nil {
		t.Fatalf("database %s was not created: %v", chcfg.Database, err)
	}
	conn.Close()

	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), "kafka_connects_total") {
		t.Error("/metrics lacks the franz-go client metrics (kafka_connects_total)")
	}

	stacktest.AwaitStop(t, cancel, done, logs, 30*time.Second)
}

// TestRunRejectsBadConfig fails before connecting anywhere, naming every bad variable.
func TestRunRejectsBadConfig(t *testing.T) {
	env := map[string]string{
		"SLUICE_CLICKHOUSE_ADDR":     "nowhere",
		"SLUICE_CLICKHOUSE_DATABASE": "1; DROP",
		"SLUICE_KAFKA_BROKERS":       "x",
		"SLUICE_HTTP_ADDR":           "",
	}
	err := run(context.Background(), envconfig.MapLookuper(env), io.Discard)
	if err == nil {
		t.Fatal("run accepted a bad configuration")
	}
	for _, want := range []string{"SLUICE_CLICKHOUSE_ADDR", "SLUICE_CLICKHOUSE_DATABASE", "SLUICE_KAFKA_BROKERS"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %s:\n%v", want, err)
		}
	}
}

func waitReady(t *testing.T, url string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		resp, err := http.Get(url)
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && strings.Contains(string(body), `"clickhouse":"ok"`) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s = %d %s after %s", url, resp.StatusCode, body, timeout)
			}
		} else if time.Now().After(deadline) {
			t.Fatalf("%s: %v", url, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
