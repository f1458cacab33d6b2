package deploy

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluicedata/sluice/pkg/chconn"
	"github.com/sluicedata/sluice/pkg/demosource"
	"github.com/sluicedata/sluice/pkg/stacktest"
)

// clusterNode is node n (1–4) of the stack's ClickHouse cluster: nodes 1 and 2 hold shard 1, 3 and
// 4 shard 2.
func clusterNode(t testing.TB, n int) *privateStack {
	t.Helper()
	state := stackState(t)
	addrs := strings.Split(os.Getenv("SLUICE_STACK_CLUSTER_ADDR"), ",")
	return &privateStack{addr: addrs[n-1], state: state, env: append(os.Environ(), "SLUICE_STACK_CLICKHOUSE=cluster"),
		pidFile: filepath.Join(state, "clickhouse-cluster", fmt.Sprintf("node%d", n), "clickhouse.pid")}
}

// nodeCount is count() of table on one node, without FINAL; -1 when the node does not answer.
func nodeCount(t testing.TB, ch chconn.Config, addr, table string) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ch.Addr = []string{addr}
	ch.DialTimeout = 2 * time.Second
	conn, err := chconn.Open(ctx, ch, stacktest.Logger(t))
	if err != nil {
		return -1
	}
	defer conn.Close()
	var n uint64
	if err := conn.QueryRow(ctx, "SELECT count() FROM `"+table+"`").Scan(&n); err != nil {
		return -1
	}
	return int64(n)
}

// TestClusterPipeline runs a job into the stack's 2×2 cluster while the replica that shard 1's
// rows go to is SIGKILLed and later restarted: the loader falls over to the shard's other replica,
// the job succeeds, and once replication caught up every replica holds its shard's rows and the
// Distributed table counts, without FINAL, exactly the job's keys: the blocks sent again after the
// failover were dropped by the replicated tables. The table and its local tables were made ON
// CLUSTER: a Distributed table over replicated ones, sharded by cityHash64(key).
func TestClusterPipeline(t *testing.T) {
	stacktest.Require(t)
	const n = 30_000
	src := demosource.DefaultConfig()
	src.Records = n
	src.PageLatency = 40 * time.Millisecond
	ch := stacktest.ClickHouseClusterAlone(t)
	p := newPipelineWith(t, src, stacktest.Kafka(t), ch)
	env := p.with(map[string]string{"SLUICE_LOADER_BATCH_ROWS": "1000", "SLUICE_LOADER_RETRY_MAX_BACKOFF": "1s"})
	planner := start(t, "planner", env).ready(t)
	start(t, "extractor", env).ready(t)
	start(t, "loader", env).ready(t)
	j := submit(t, planner, jobSpec("users", p.srcURL, "users", 4, 100, 3))

	node1, node2 := clusterNode(t, 1), clusterNode(t, 2)
	p.waitRows(t, "users", 2000, 2*time.Minute)
	node1.kill(t)
	t.Cleanup(func() { node1.start(t) }) // the stack's cluster stays whole for the tests after this one
	// While node 1 is down its shard's rows go on landing, on node 2.
	was := nodeCount(t, ch, node2.addr, "users_local")
	deadline := time.Now().Add(2 * time.Minute)
	for nodeCount(t, ch, node2.addr, "users_local") <= was {
		if time.Now().After(deadline) {
			t.Fatalf("shard 1's rows stopped landing when node 1 was killed (node 2 holds %d)", was)
		}
		time.Sleep(100 * time.Millisecond)
	}
	node1.start(t)
	if got := await(t, planner, j.ID, 5*time.Minute); got.State != "succeeded" || got.Records.Loaded != n {
		t.Fatalf("job ended %+v", got)
	}

	// Replication catches up: both replicas of a shard hold the same rows, and the shards' rows
	// add up to the keys, each once.
	addrs := strings.Split(os.Getenv("SLUICE_STACK_CLUSTER_ADDR"), ",")
	deadline = time.Now().Add(2 * time.Minute)
	for {
		c := make([]int64, 4)
		for i, a := range addrs {
			c[i] = nodeCount(t, ch, a, "users_local")
		}
		if c[0] == c[1] && c[2] == c[3] && c[0]+c[2] == n && c[0] > 0 && c[2] > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the replicas hold %v rows, want equal per shard and %d in all", c, n)
		}
		time.Sleep(200 * time.Millisecond)
	}
	rows, keys := p.count(t, "users")
	if rows != n || keys != n {
		t.Fatalf("count() without FINAL = %d with %d keys over the Distributed table, want %d", rows, keys, n)
	}
	checkExact(t, p, "users", n, src.RecordSize)
	var engine, local string
	ctx := context.Background()
	if err := p.conn.QueryRow(ctx, "SELECT engine_full FROM system.tables WHERE database = ? AND name = 'users'", ch.Database).Scan(&engine); err != nil {
		t.Fatal(err)
	}
	if err := p.conn.QueryRow(ctx, "SELECT engine FROM system.tables WHERE database = ? AND name = 'users_local'", ch.Database).Scan(&local); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(engine, "Distributed(sluice") || !strings.Contains(engine, "cityHash64(key)") || local != "ReplicatedReplacingMergeTree" {
		t.Fatalf("users is %q over a %s, want a Distributed table sharded by cityHash64(key) over a ReplicatedReplacingMergeTree", engine, local)
	}
}
