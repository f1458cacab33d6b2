package deploy

import (
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/sluicedata/sluice/pkg/demosource"
	"github.com/sluicedata/sluice/pkg/stacktest"
)

// BenchmarkCluster measures the loader into the stack's 2×2 ClickHouse cluster beside the single
// server, in the same run, on the same records: for each, a job of RECORDS demo records (200,000
// by default) is extracted into the raw topic with no loader running, then one loader lands it.
// It reports records/s, the loader's CPU seconds per million records, and the ClickHouse servers'
// (the single server; the cluster's four and ZooKeeper, replication included) per million.
func BenchmarkCluster(b *testing.B) {
	stacktest.Require(b)
	n := envInt("RECORDS", 200_000)
	src := demosource.DefaultConfig()
	src.Records = int64(n)
	m := float64(n) / 1e6
	for range b.N {
		leg := func(p *deployment, servers map[string]int) (rate, loaderCPU, chCPU float64) {
			b.Helper()
			planner := start(b, "planner", p.env).ready(b)
			extractor := start(b, "extractor", p.env)
			extractor.ready(b)
			spec := fmt.Sprintf("name: bench\nsource:\n  url: %s/api/users\n  records_path: data\n  key: id\n  pagination: {type: offset, page_size: 1000, total_path: total}\ntasks: 16\nsink:\n  table: bench\n", p.srcURL)
			id := submit(b, planner, spec).ID
			for j := poll(b, planner, id); j.Records.Extracted < uint64(n); j = poll(b, planner, id) {
				time.Sleep(50 * time.Millisecond)
			}
			extractor.stop(b, syscall.SIGTERM)
			settle(b, p.conn)
			loader := start(b, "loader", p.env)
			loader.ready(b)
			procs := map[string]int{"loader": loader.cmd.Process.Pid}
			for k, v := range servers {
				procs[k] = v
			}
			before := cpuOf(procs)
			began := time.Now()
			j := await(b, planner, id, 20*time.Minute)
			took := time.Since(began)
			settle(b, p.conn)
			after := cpuOf(procs)
			loader.stop(b, syscall.SIGTERM)
			if j.State != "succeeded" || j.Records.Loaded != uint64(n) {
				b.Fatalf("job ended %+v", j)
			}
			for k := range servers {
				chCPU += after[k] - before[k]
			}
			return float64(n) / took.Seconds(), (after["loader"] - before["loader"]) / m, chCPU / m
		}
		single := newPipeline(b, src)
		sRate, sLoader, sCH := leg(single, map[string]int{"clickhouse": stackPid(b, "clickhouse/clickhouse.pid")})
		cluster := newPipelineWith(b, src, stacktest.Kafka(b), stacktest.ClickHouseCluster(b))
		servers := map[string]int{"zookeeper": stackPid(b, "zookeeper/zookeeper.pid")}
		for i := 1; i <= 4; i++ {
			servers[fmt.Sprintf("node%d", i)] = stackPid(b, fmt.Sprintf("clickhouse-cluster/node%d/clickhouse.pid", i))
		}
		cRate, cLoader, cCH := leg(cluster, servers)
		var rows, keys uint64
		if err := cluster.conn.QueryRow(b.Context(), "SELECT count(), uniqExact(key) FROM bench").Scan(&rows, &keys); err != nil {
			b.Fatal(err)
		}
		fmt.Printf("\nsluice cluster benchmark: %d records of %d bytes pre-filled in the raw topic (6 partitions), 1 loader\n", n, src.RecordSize)
		fmt.Printf("  %-44s %10s %14s %16s\n", "", "records/s", "loader CPU-s/M", "ClickHouse CPU-s/M")
		fmt.Printf("  %-44s %10.0f %14.2f %16.2f\n", "single server", sRate, sLoader, sCH)
		fmt.Printf("  %-44s %10.0f %14.2f %16.2f\n", "cluster: 2 shards x 2 replicas, ZooKeeper", cRate, cLoader, cCH)
		fmt.Printf("  cluster at %.2f x the single server's records/s; count() without FINAL %d for %d keys\n", cRate/sRate, rows, keys)
		summarize(b, "load leg: 2x2 cluster, against the single", cRate, sRate, "rec/s", fmt.Sprintf("%.2f + %.2f", cLoader, cCH), 0)
		b.ReportMetric(sRate, "single-records/s")
		b.ReportMetric(cRate, "cluster-records/s")
		b.ReportMetric(sLoader, "single-loader-cpu-s/M")
		b.ReportMetric(cLoader, "cluster-loader-cpu-s/M")
		b.ReportMetric(sCH, "single-clickhouse-cpu-s/M")
		b.ReportMetric(cCH, "cluster-clickhouse-cpu-s/M")
	}
}
