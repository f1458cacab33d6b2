package deploy

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestMain runs the tests, or, with SLUICE_FLOOR set, one of the benchmarks' floors as a process of
// its own: a floor's CPU is then its own, not shared with the benchmark's harness and demo source.
func TestMain(m *testing.M) {
	if name := os.Getenv("SLUICE_FLOOR"); name != "" {
		os.Exit(runFloor(name))
	}
	os.Exit(m.Run())
}

// floorResult is what a floor process reports on its standard output.
type floorResult struct {
	Records int     `json:"records"`
	Seconds float64 `json:"seconds"` // from its first poll to its last insert acknowledged
	CPU     float64 `json:"cpu"`     // its own CPU seconds, user and system, over the same span
}

func runFloor(name string) int {
	var (
		res floorResult
		err error
	)
	switch name {
	case "loader":
		res, err = loaderFloor(os.Getenv("FLOOR_BROKERS"), os.Getenv("FLOOR_TOPIC"), os.Getenv("FLOOR_CLICKHOUSE"),
			os.Getenv("FLOOR_DATABASE"), os.Getenv("FLOOR_TABLE"), atoi(os.Getenv("FLOOR_RECORDS")), atoi(os.Getenv("FLOOR_BATCH")))
	default:
		err = fmt.Errorf("no floor %q", name)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "floor:", err)
		return 1
	}
	if err := json.NewEncoder(os.Stdout).Encode(res); err != nil {
		return 1
	}
	return 0
}

func atoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}

// loaderFloor is the least work that lands a raw topic in ClickHouse: franz-go polls the topic
// from its start, clickhouse-go appends each record's Kafka key and value as they are (no
// decoding, no copy) and sends every batch rows, until n records are in. It is what any loader
// must do at least, with Go's default collector.
func loaderFloor(brokers, topic, chAddr, database, table string, n, batch int) (floorResult, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	ch, err := clickhouse.Open(&clickhouse.Options{Addr: []string{chAddr}, Auth: clickhouse.Auth{Database: database, Username: "default"}})
	if err != nil {
		return floorResult{}, err
	}
	defer ch.Close()
	cl, err := kgo.NewClient(kgo.SeedBrokers(strings.Split(brokers, ",")...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		return floorResult{}, err
	}
	defer cl.Close()
	if err := ch.Ping(ctx); err != nil {
		return floorResult{}, err
	}
	began, cpu0 := time.Now(), ownCPU()
	keys, values := make([]string, 0, batch), make([]string, 0, batch)
	send := func() error {
		b, err := ch.PrepareBatch(ctx, "INSERT INTO "+table+" (key, payload)")
		if err != nil {
			return err
		}
		if err := b.Column(0).Append(keys); err != nil {
			return err
		}
		if err := b.Column(1).Append(values); err != nil {
			return err
		}
		keys, values = keys[:0], values[:0]
		return b.Send()
	}
	for got := 0; got < n; {
		fetches := cl.PollRecords(ctx, batch-len(keys))
		if err := fetches.Err0(); err != nil {
			return floorResult{}, err
		}
		for it := fetches.RecordIter(); !it.Done(); {
			r := it.Next()
			keys = append(keys, unsafe.String(unsafe.SliceData(r.Key), len(r.Key)))
			values = append(values, unsafe.String(unsafe.SliceData(r.Value), len(r.Value)))
			got++
		}
		if len(keys) >= batch || got >= n {
			if err := send(); err != nil {
				return floorResult{}, err
			}
		}
	}
	return floorResult{Records: n, Seconds: time.Since(began).Seconds(), CPU: ownCPU() - cpu0}, nil
}

// ownCPU is the process's CPU seconds so far, user and system.
func ownCPU() float64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// floor runs the named floor as a process of its own, this test binary again, with env, and
// returns what it reports.
func floor(b testing.TB, name string, env map[string]string) floorResult {
	b.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "SLUICE_FLOOR="+name)
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		b.Fatalf("floor %s: %v\n%s", name, err, stderr.String())
	}
	var res floorResult
	if err := json.Unmarshal(out, &res); err != nil {
		b.Fatalf("floor %s said %q: %v", name, out, err)
	}
	return res
}

// summarize adds a line to the table that `make bench` prints at its end (SLUICE_BENCH_SUMMARY
// names its file): a leg, its rate and unit, its floor's rate (0: none), its CPU seconds per
// million as the leg says them, and its peak resident memory (0: not measured).
func summarize(b testing.TB, leg string, rate, floorRate float64, unit, cpuPerM string, rssMiB float64) {
	b.Helper()
	path := os.Getenv("SLUICE_BENCH_SUMMARY")
	if path == "" {
		return
	}
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		b.Logf("bench summary: %v", err)
		return
	}
	defer f.Close()
	cell := func(v float64, format string) string {
		if v <= 0 {
			return "-"
		}
		return fmt.Sprintf(format, v)
	}
	if cpuPerM == "" {
		cpuPerM = "-"
	}
	ratio := "-"
	if floorRate > 0 {
		ratio = fmt.Sprintf("%.2fx", rate/floorRate)
	}
	fmt.Fprintf(f, "  %-44s %12s %12s %7s %16s %10s\n", leg, cell(rate, "%.0f "+unit), cell(floorRate, "%.0f "+unit), ratio,
		cpuPerM, cell(rssMiB, "%.0f MiB"))
}
