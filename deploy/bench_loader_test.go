package deploy

import (
	"context"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sluicedata/sluice/pkg/demosource"
	"github.com/sluicedata/sluice/pkg/stacktest"
)

// BenchmarkLoader measures the loader leg alone, against its floor, on the same records: a job of
// RECORDS demo records (200,000 by default) is extracted into the raw topic with no loader
// running; then
//
//   - the floor: a lean loop in a process of its own (franz-go polls the raw topic, clickhouse-go
//     appends each record's Kafka key and value as they are and sends every 50,000 rows, nothing
//     else) lands them in a key, payload table of the raw landing table's engine;
//   - the loader lands them in the raw landing table;
//   - another job of the same records, extracted the same way, lands through a typed sink of 4
//     columns (id Int64, name String, email String, created_at DateTime), and the difference per
//     column is reported;
//   - a third job lands in a raw landing table with Go's soft memory limit (GOMEMLIMIT) set, as a
//     deployment with a memory limit would set it;
//   - a fourth lands in a raw landing table with Go's default collector (GOGC=100) instead of the
//     loader's own (loader.GCPercent), to show what that costs and saves.
//
// Each reports records/s, its own CPU seconds and ClickHouse's per million records, and the
// loader's peak resident memory.
func BenchmarkLoader(b *testing.B) {
	stacktest.Require(b)
	n := envInt("RECORDS", 200_000)
	src := demosource.DefaultConfig()
	src.Records = int64(n)
	for range b.N {
		p := newPipeline(b, src)
		planner := start(b, "planner", p.env).ready(b)
		chPid := stackPid(b, "clickhouse/clickhouse.pid")
		m := float64(n) / 1e6

		fill := func(name, sink string) string {
			b.Helper()
			extractor := start(b, "extractor-"+name, p.env)
			extractor.ready(b)
			spec := fmt.Sprintf("name: %s\nsource:\n  url: %s/api/users\n  records_path: data\n  key: id\n  pagination: {type: offset, page_size: 1000, total_path: total}\ntasks: 16\nsink:\n%s",
				name, p.srcURL, sink)
			id := submit(b, planner, spec).ID
			for j := poll(b, planner, id); j.Records.Extracted < uint64(n); j = poll(b, planner, id) {
				time.Sleep(50 * time.Millisecond)
			}
			extractor.stop(b, syscall.SIGTERM)
			return id
		}

		rawJob := fill("raw", "  table: bench_raw\n")
		floorRate, floorCPU, floorCH := leanLoop(b, p, n, chPid)

		drain := func(id string, env map[string]string) (rate, cpu, ch, rssMiB float64) {
			b.Helper()
			dir := os.Getenv("PROFILE_DIR")
			if dir != "" {
				env = maps.Clone(env)
				env["SLUICE_PPROF"] = "true"
			}
			settle(b, p.conn) // the last leg's merges are its own
			loader := start(b, "loader-"+id, env)
			base := loader.ready(b)
			profiled := make(chan struct{})
			if dir != "" {
				go func() {
					defer close(profiled)
					profile(b, base, filepath.Join(dir, "loader-"+id+".pprof"))
				}()
			} else {
				close(profiled)
			}
			pid := loader.cmd.Process.Pid
			before := cpuOf(map[string]int{"loader": pid, "clickhouse": chPid})
			began := time.Now()
			j := await(b, planner, id, 20*time.Minute)
			took := time.Since(began)
			after := cpuOf(map[string]int{"loader": pid})
			settle(b, p.conn) // ClickHouse's CPU with the merges the leg set off
			after["clickhouse"] = cpuOf(map[string]int{"clickhouse": chPid})["clickhouse"]
			rssMiB = float64(peakRSS(b, loader)) / (1 << 20)
			<-profiled // the profiles are taken from the running loader
			loader.stop(b, syscall.SIGTERM)
			if j.State != "succeeded" || j.Records.Loaded != uint64(n) {
				b.Fatalf("job ended %+v", j)
			}
			return float64(n) / took.Seconds(), (after["loader"] - before["loader"]) / m, (after["clickhouse"] - before["clickhouse"]) / m, rssMiB
		}
		rawRate, rawCPU, rawCH, rawRSS := drain(rawJob, p.env)
		typedJob := fill("typed", "  table: bench_typed\n  create: true\n  columns:\n    - {name: id, type: Int64}\n    - {name: name, type: String}\n    - {name: email, type: String}\n    - {name: created_at, type: DateTime}\n")
		typedRate, typedCPU, typedCH, typedRSS := drain(typedJob, p.env)
		// The same raw landing with Go's soft memory limit, as a deployment with a memory limit sets it.
		limitedJob := fill("limited", "  table: bench_limited\n")
		limitedRate, limitedCPU, limitedCH, limitedRSS := drain(limitedJob, p.with(map[string]string{"GOMEMLIMIT": memLimit}))
		// The same raw landing with Go's default collector, which the loader does not use unless told.
		gcJob := fill("gc100", "  table: bench_gc100\n")
		gcRate, gcCPU, gcCH, gcRSS := drain(gcJob, p.with(map[string]string{"GOGC": "100"}))

		fmt.Printf("\nsluice loader benchmark: %d records of %d bytes pre-filled in the raw topic (6 partitions), 1 loader\n", n, src.RecordSize)
		fmt.Printf("  %-40s %10s %7s %14s %14s %10s\n", "", "records/s", "ratio", "own CPU-s/M", "ClickHouse/M", "peak RSS")
		fmt.Printf("  %-40s %10.0f %7s %14.2f %14.2f %10s\n", "floor: poll + append + send, own process", floorRate, "1.00", floorCPU, floorCH, "")
		line := func(name string, rate, cpu, ch, rss float64) {
			fmt.Printf("  %-40s %10.0f %6.2fx %14.2f %14.2f %7.0f MiB\n", name, rate, rate/floorRate, cpu, ch, rss)
		}
		line("loader: raw landing table", rawRate, rawCPU, rawCH, rawRSS)
		line("loader: typed table, 4 columns", typedRate, typedCPU, typedCH, typedRSS)
		line("loader: raw, GOMEMLIMIT="+memLimit, limitedRate, limitedCPU, limitedCH, limitedRSS)
		line("loader: raw, GOGC=100 (Go's default)", gcRate, gcCPU, gcCH, gcRSS)
		fmt.Printf("  raw landing: %.2f x the floor's records/s, %.2f x its own CPU, %.2f x its ClickHouse CPU; typed landing costs %+.2f loader CPU-s/M per column over raw\n",
			rawRate/floorRate, rawCPU/floorCPU, rawCH/floorCH, (typedCPU-rawCPU)/4)
		summarize(b, "loader leg: raw landing table (own + CH)", rawRate, floorRate, "rec/s", fmt.Sprintf("%.2f + %.2f", rawCPU, rawCH), rawRSS)
		summarize(b, "  its floor: poll + append + send", floorRate, 0, "rec/s", fmt.Sprintf("%.2f + %.2f", floorCPU, floorCH), 0)
		summarize(b, "loader leg: typed table, 4 columns", typedRate, floorRate, "rec/s", fmt.Sprintf("%.2f + %.2f", typedCPU, typedCH), typedRSS)
		b.ReportMetric(floorRate, "floor-records/s")
		b.ReportMetric(rawRate, "raw-records/s")
		b.ReportMetric(typedRate, "typed-records/s")
		b.ReportMetric(rawCPU, "raw-loader-cpu-s/M")
		b.ReportMetric(typedCPU, "typed-loader-cpu-s/M")
		b.ReportMetric(floorCPU, "floor-cpu-s/M")
		b.ReportMetric(rawRSS, "raw-loader-peak-MiB")
		b.ReportMetric(limitedRSS, "limited-loader-peak-MiB")
		b.ReportMetric(gcRSS, "gogc100-loader-peak-MiB")
	}
}

// profile writes the CPU profile of the service at base over its next 5 seconds to path, and its
// heap profile 1.5 s in (about halfway through 500,000 records: in use then, and allocated since
// start) beside it, for go tool pprof; PROFILE_DIR=dir sets it off in BenchmarkLoader. A profiled
// leg's CPU includes the profiler's (a few per cent).
func profile(b *testing.B, base, path string) {
	get := func(url, path string) {
		resp, err := http.Get(url)
		if err != nil {
			b.Logf("profile: %v", err)
			return
		}
		defer resp.Body.Close()
		f, err := os.Create(path)
		if err != nil {
			b.Logf("profile: %v", err)
			return
		}
		defer f.Close()
		if _, err := io.Copy(f, resp.Body); err != nil {
			b.Logf("profile: %v", err)
		}
	}
	heap := make(chan struct{})
	go func() {
		defer close(heap)
		time.Sleep(1500 * time.Millisecond)
		get(base+"/debug/pprof/heap", strings.TrimSuffix(path, ".pprof")+".heap.pprof")
	}()
	get(base+"/debug/pprof/profile?seconds=5", path)
	<-heap
}

// memLimit is the soft memory limit of the benchmark's third loader leg.
const memLimit = "230MiB"

// leanLoop is the loader leg's floor (loaderFloor), run as a process of its own over the raw topic
// the loader drains, into a key, payload table of the raw landing table's engine. It returns
// records/s, the floor's own CPU seconds per million records and ClickHouse's.
func leanLoop(b *testing.B, p *deployment, n, chPid int) (rate, cpu, ch float64) {
	b.Helper()
	ctx := context.Background()
	if err := p.conn.Exec(ctx, "CREATE TABLE floor (key String, payload String) ENGINE = ReplacingMergeTree ORDER BY key"); err != nil {
		b.Fatal(err)
	}
	settle(b, p.conn)
	before := cpuOf(map[string]int{"clickhouse": chPid})
	res := floor(b, "loader", map[string]string{"FLOOR_BROKERS": strings.Join(p.kafka.Brokers, ","), "FLOOR_TOPIC": p.kafka.RawTopic,
		"FLOOR_CLICKHOUSE": p.ch.Addr[0], "FLOOR_DATABASE": p.ch.Database, "FLOOR_TABLE": "floor",
		"FLOOR_RECORDS": strconv.Itoa(n), "FLOOR_BATCH": "50000"})
	settle(b, p.conn)
	after := cpuOf(map[string]int{"clickhouse": chPid})
	var rows uint64
	if err := p.conn.QueryRow(ctx, "SELECT count() FROM floor").Scan(&rows); err != nil || rows != uint64(n) {
		b.Fatalf("the floor landed %d rows of %d (%v)", rows, n, err)
	}
	m := float64(n) / 1e6
	return float64(n) / res.Seconds, res.CPU / m, (after["clickhouse"] - before["clickhouse"]) / m
}
