package deploy

import (
	"cmp"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/sluicedata/sluice/pkg/chconn"
	"github.com/sluicedata/sluice/pkg/chsink"
	"github.com/sluicedata/sluice/pkg/stacktest"
)

// BenchmarkBlocks measures what ClickHouse spends on a million rows of the raw landing table by
// the size of the blocks they are inserted in, the merges they set off included: why the loader
// makes its blocks as large as its memory allows, and why a loader that owns many raw partitions
// makes ClickHouse work harder (a block holds the records of one partition). The rows (about 300
// bytes of payload each) come from a table on the server, so that only the inserts and merges
// are measured; BLOCK_ROWS lists the sizes, comma-separated.
func BenchmarkBlocks(b *testing.B) {
	cfg := stacktest.ClickHouse(b)
	ctx := context.Background()
	conn, err := chconn.Open(ctx, cfg, stacktest.Logger(b))
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	chPid := stackPid(b, "clickhouse/clickhouse.pid")
	if chPid <= 0 {
		b.Skip("ClickHouse is not the stack's: its CPU cannot be read")
	}
	const n = 1_000_000
	cols := "key, payload, job_id, task_id, kafka_partition, kafka_offset, extracted_at, loaded_at, version"
	for _, sql := range []string{
		"CREATE TABLE blocks_src (n UInt64, key String, payload String, job_id String, task_id String, kafka_partition Int32, " +
			"kafka_offset Int64, extracted_at DateTime, loaded_at DateTime, version UInt64) ENGINE = MergeTree ORDER BY n",
		fmt.Sprintf("INSERT INTO blocks_src (n, %s) SELECT number, toString(cityHash64(number) %% 100000000), "+
			"concat('{\"id\": ', toString(number), ', \"doc\": \"', hex(SHA256(toString(number))), hex(SHA256(toString(number + 1))), "+
			"hex(SHA256(toString(number + 2))), hex(SHA256(toString(number + 3))), '\"}'), '7f3c1a2e-5b6d-4c8e-9f0a-1b2c3d4e5f60', '7f3c1a2e-5b6d-4c8e-9f0a-1b2c3d4e5f60-t0007', "+
			"toInt32(number %% 6), toInt64(number), now(), now(), number FROM numbers(%d)", cols, n),
	} {
		if err := conn.Exec(ctx, sql); err != nil {
			b.Fatalf("%s: %v", sql, err)
		}
	}
	var sizes []int
	for _, s := range strings.Split(cmp.Or(os.Getenv("BLOCK_ROWS"), "8000,15000,25000,50000,100000"), ",") {
		v, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || v <= 0 {
			b.Fatalf("BLOCK_ROWS: %q is not a row count", s)
		}
		sizes = append(sizes, v)
	}
	w := chsink.NewWriter(conn, stacktest.Logger(b))
	for range b.N {
		fmt.Printf("\nClickHouse CPU seconds per million rows of the raw landing table, by insert block, merges included\n")
		for _, rows := range sizes {
			table := fmt.Sprintf("blocks_%d", rows)
			if err := w.EnsureTable(ctx, table); err != nil {
				b.Fatal(err)
			}
			settle(b, conn)
			before := cpuOf(map[string]int{"clickhouse": chPid})
			for first := 0; first < n; first += rows {
				sql := fmt.Sprintf("INSERT INTO %s (%s) SELECT %s FROM blocks_src WHERE n >= %d AND n < %d", table, cols, cols, first, first+rows)
				if err := conn.Exec(ctx, sql); err != nil {
					b.Fatalf("%s: %v", sql, err)
				}
			}
			settle(b, conn)
			cpu := cpuOf(map[string]int{"clickhouse": chPid})["clickhouse"] - before["clickhouse"]
			fmt.Printf("  %8d rows a block  %6d inserts  %6.2f CPU-s\n", rows, (n+rows-1)/rows, cpu/(n/1e6))
			b.ReportMetric(cpu/(n/1e6), fmt.Sprintf("clickhouse-cpu-s/M@%d", rows))
			if err := conn.Exec(ctx, "DROP TABLE "+table); err != nil {
				b.Fatal(err)
			}
			w.Forget(table)
		}
	}
}
