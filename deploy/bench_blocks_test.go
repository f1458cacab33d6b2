package deploy

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sluicedata/sluice/pkg/chconn"
	"github.com/sluicedata/sluice/pkg/chsink"
	"github.com/sluicedata/sluice/pkg/stacktest"
)

// BenchmarkBlocks measures what ClickHouse spends on a million rows of the raw landing table by
// the size of the blocks they are inserted in, the merges they set off included: why the loader
// makes its blocks as large as its memory allows, and why a loader that owns many raw partitions
// makes ClickHouse work harder (a block holds the records of one partition). The rows (a JSON
// payload of about 300 bytes each) are made once and sent as the loader sends them, a native block
// per insert, uncompressed on loopback; only ClickHouse's CPU is counted. BLOCK_ROWS lists the
// sizes, comma-separated.
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
	var sizes []int
	for _, s := range strings.Split(cmp.Or(os.Getenv("BLOCK_ROWS"), "8000,15000,25000,50000,100000"), ",") {
		v, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || v <= 0 {
			b.Fatalf("BLOCK_ROWS: %q is not a row count", s)
		}
		sizes = append(sizes, v)
	}
	rows := blockRows(1_000_000)
	w := chsink.NewWriter(conn, stacktest.Logger(b))
	for range b.N {
		fmt.Printf("\nClickHouse CPU seconds per million rows of the raw landing table, by insert block, merges included\n")
		for _, size := range sizes {
			table := fmt.Sprintf("blocks_%d", size)
			if err := w.EnsureTable(ctx, table); err != nil {
				b.Fatal(err)
			}
			settle(b, conn)
			before := cpuOf(map[string]int{"clickhouse": chPid})
			for first := 0; first < len(rows.key); first += size {
				rows.insert(b, conn, table, first, min(first+size, len(rows.key)))
			}
			settle(b, conn)
			cpu := (cpuOf(map[string]int{"clickhouse": chPid})["clickhouse"] - before["clickhouse"]) / (float64(len(rows.key)) / 1e6)
			fmt.Printf("  %8d rows a block  %6d inserts  %6.2f CPU-s\n", size, (len(rows.key)+size-1)/size, cpu)
			b.ReportMetric(cpu, fmt.Sprintf("clickhouse-cpu-s/M@%d", size))
			if err := conn.Exec(ctx, "DROP TABLE "+table); err != nil {
				b.Fatal(err)
			}
			w.Forget(table)
		}
	}
}

// rawRows are the columns of raw landing rows, as the loader appends them.
type rawRows struct {
	key, payload, job, task []string
	partition               []int32
	offset                  []int64
	extracted, loaded       []time.Time
	version                 []uint64
}

// blockRows makes n rows: keys in no order, as a source's ids arrive, and payloads of hex text.
func blockRows(n int) *rawRows {
	r := &rawRows{}
	now := time.Now().UTC().Truncate(time.Second)
	for i := range n {
		sum := sha256.Sum256([]byte(strconv.Itoa(i)))
		doc := strings.Repeat(hex.EncodeToString(sum[:]), 4)
		r.key = append(r.key, strconv.FormatUint(uint64(sum[0])<<24|uint64(sum[1])<<16|uint64(sum[2])<<8|uint64(sum[3]), 10))
		r.payload = append(r.payload, `{"id": `+strconv.Itoa(i)+`, "doc": "`+doc+`"}`)
		r.job = append(r.job, "7f3c1a2e-5b6d-4c8e-9f0a-1b2c3d4e5f60")
		r.task = append(r.task, "7f3c1a2e-5b6d-4c8e-9f0a-1b2c3d4e5f60-t0007")
		r.partition = append(r.partition, int32(i%6))
		r.offset = append(r.offset, int64(i))
		r.extracted, r.loaded = append(r.extracted, now), append(r.loaded, now)
		r.version = append(r.version, uint64(now.UnixNano())+uint64(i))
	}
	return r
}

// insert sends rows [i, j) into table as one block.
func (r *rawRows) insert(b *testing.B, conn *chconn.Conn, table string, i, j int) {
	batch, err := conn.PrepareBatch(context.Background(), "INSERT INTO "+table+
		" (key, payload, job_id, task_id, kafka_partition, kafka_offset, extracted_at, loaded_at, version)")
	if err != nil {
		b.Fatal(err)
	}
	for c, col := range []any{r.key[i:j], r.payload[i:j], r.job[i:j], r.task[i:j], r.partition[i:j], r.offset[i:j],
		r.extracted[i:j], r.loaded[i:j], r.version[i:j]} {
		if err := batch.Column(c).Append(col); err != nil {
			b.Fatal(err)
		}
	}
	if err := batch.Send(); err != nil {
		b.Fatal(err)
	}
}
