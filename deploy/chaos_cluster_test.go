package deploy

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sluicedata/sluice/pkg/chconn"
	"github.com/sluicedata/sluice/pkg/demosource"
	"github.com/sluicedata/sluice/pkg/stacktest"
)

// The fault cases on the stack's ClickHouse cluster (2 shards x 2 replicas, ZooKeeper): each ends
// with the job succeeded, every key exactly once, both replicas of each shard holding the same
// rows, and count() without FINAL over the Distributed table equal to the keys: the blocks sent
// again were dropped by the replicated tables.

// newClusterChaos is newChaos on the stack's cluster, which no other test uses meanwhile.
func newClusterChaos(t *testing.T, src demosource.Config, table string, extra map[string]string) *chaosRig {
	t.Helper()
	p := newPipelineWith(t, src, stacktest.Kafka(t), stacktest.ClickHouseClusterAlone(t))
	env := p.with(extra)
	r := &chaosRig{p: p, env: env, table: table, src: src}
	r.planner = start(t, "planner", env).ready(t)
	return r
}

// clusterPart is a process of the stack's cluster: ZooKeeper (0) or ClickHouse node n (1–4; nodes
// 1 and 2 hold shard 1, 3 and 4 shard 2). Started again by the stack script, which starts whatever
// part of the cluster is down.
func clusterPart(t testing.TB, n int) *privateStack {
	t.Helper()
	state := stackState(t)
	s := &privateStack{state: state, env: append(os.Environ(), "SLUICE_STACK_CLICKHOUSE=cluster"),
		pidFile: filepath.Join(state, "zookeeper", "zookeeper.pid")}
	if n > 0 {
		s.addr = strings.Split(os.Getenv("SLUICE_STACK_CLUSTER_ADDR"), ",")[n-1]
		s.pidFile = filepath.Join(state, "clickhouse-cluster", fmt.Sprintf("node%d", n), "clickhouse.pid")
	}
	// Whatever a case did, the cluster is whole again for the tests after it.
	t.Cleanup(func() { s.start(t) })
	return s
}

// nodeCount is count() of table on one node, without FINAL; -1 when the node does not answer.
func nodeCount(t testing.TB, ch chconn.Config, addr, table string) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ch.Addr, ch.DialTimeout = []string{addr}, 2*time.Second
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

// growing waits until count() of the local table on node addr rises above what it is now.
func (r *chaosRig) growing(t *testing.T, addr, why string) {
	t.Helper()
	local := r.table + "_local"
	was := nodeCount(t, r.p.ch, addr, local)
	deadline := time.Now().Add(2 * time.Minute)
	for nodeCount(t, r.p.ch, addr, local) <= was {
		if time.Now().After(deadline) {
			t.Fatalf("%s: node %s holds %d rows for 2 minutes", why, addr, was)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// endCluster waits for the job, then for replication to catch up (both replicas of a shard equal,
// the shards adding up to the records), and runs the checker and the monitor; count() without
// FINAL over the Distributed table must be the keys.
func (r *chaosRig) endCluster(t *testing.T, j job, timeout time.Duration) string {
	t.Helper()
	j = await(t, r.planner, j.ID, timeout)
	n := r.src.Records
	c := make([]int64, len(r.p.nodes))
	deadline := time.Now().Add(3 * time.Minute)
	for {
		for i, a := range r.p.nodes {
			c[i] = nodeCount(t, r.p.ch, a, r.table+"_local")
		}
		if c[0] == c[1] && c[2] == c[3] && c[0]+c[2] == n && c[0] > 0 && c[2] > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the replicas hold %v rows, want both replicas of a shard equal and %d in all (job %+v)", c, n, j)
		}
		time.Sleep(200 * time.Millisecond)
	}
	rows, keys := r.p.count(t, r.table)
	if rows != uint64(n) || keys != uint64(n) {
		t.Fatalf("count() without FINAL over the Distributed table = %d with %d keys, want %d", rows, keys, n)
	}
	checked := verify(t, r.p, r.table, j, want{records: n, size: r.src.RecordSize, state: "succeeded"})
	return fmt.Sprintf("count() without FINAL %d = keys (nodes %v); %s; %s", rows, c, checked, r.m.finish())
}

// clusterJob starts a job of 30,000 records on the cluster, with an extractor and a loader (its
// retries backing off up to backoff), the source answering each page after latency.
func clusterJob(t *testing.T, table string, latency, backoff time.Duration) (*chaosRig, *proc, job) {
	t.Helper()
	src := demosource.DefaultConfig()
	src.Records = 30_000
	src.PageLatency = latency
	r := newClusterChaos(t, src, table, map[string]string{"SLUICE_LOADER_BATCH_ROWS": "1000", "SLUICE_LOADER_RETRY_MAX_BACKOFF": backoff.String()})
	r.service(t, "extractor")
	loader := r.service(t, "loader")
	return r, loader, r.submit(t, 4, 100)
}

// replicaKill SIGKILLs the replica that shard 1's rows go to while the loader inserts, and starts it
// again after down: the shard's rows go on landing on its other replica meanwhile.
func replicaKill(t *testing.T, down time.Duration) string {
	r, loader, j := clusterJob(t, "replicakill", 40*time.Millisecond, time.Second)
	node1, node2 := clusterPart(t, 1), clusterPart(t, 2)
	r.growing(t, node1.addr, "before the kill")
	for before := inserted(t, loader.addr(t)); inserted(t, loader.addr(t)) == before; {
		time.Sleep(2 * time.Millisecond)
	}
	node1.kill(t)
	r.growing(t, node2.addr, "shard 1's rows stopped landing when its replica was killed")
	time.Sleep(down) // the outage itself
	node1.start(t)
	return fmt.Sprintf("node 1 (shard 1) SIGKILLed while inserting, its rows went to node 2, restarted %s later; %s", down, r.endCluster(t, j, 5*time.Minute))
}

// zookeeperStop SIGSTOPs ZooKeeper for 30 s: the replicated tables go read-only, inserts fail and
// wait, and land once it is back.
func zookeeperStop(t *testing.T) string {
	r, loader, j := clusterJob(t, "zkstop", 60*time.Millisecond, 2*time.Second)
	zk := clusterPart(t, 0)
	r.p.waitRows(t, r.table, 2000, 2*time.Minute)
	zk.signal(t, syscall.SIGSTOP)
	stopped := time.Now()
	deadline := stopped.Add(90 * time.Second)
	// The replicated tables go read-only once the servers' ZooKeeper sessions expire: no replica
	// of a shard takes its rows, and the loader says so.
	for metric(t, loader.addr(t), "loader_shard_unavailable") == 0 {
		if time.Now().After(deadline) {
			zk.signal(t, syscall.SIGCONT)
			t.Fatal("no insert failed while ZooKeeper was stopped")
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(time.Until(stopped.Add(30 * time.Second)))
	zk.signal(t, syscall.SIGCONT)
	return fmt.Sprintf("ZooKeeper SIGSTOPped 30 s, the shards unavailable meanwhile (loader_shard_unavailable); %s", r.endCluster(t, j, 5*time.Minute))
}

// shardDown kills both replicas of shard 2 for 60 s: shard 1's rows go on landing, the loader says
// which shard is unavailable, and shard 2's rows land once it is back.
func shardDown(t *testing.T) string {
	r, loader, j := clusterJob(t, "sharddown", 60*time.Millisecond, 2*time.Second)
	node1, node3, node4 := clusterPart(t, 1), clusterPart(t, 3), clusterPart(t, 4)
	r.p.waitRows(t, r.table, 2000, 2*time.Minute)
	node3.kill(t)
	node4.kill(t)
	killed := time.Now()
	r.growing(t, node1.addr, "shard 1's rows stopped landing when shard 2 went down")
	deadline := time.Now().Add(time.Minute)
	for metric(t, loader.addr(t), "loader_shard_unavailable", `shard="2"`) != 1 {
		if time.Now().After(deadline) {
			t.Fatal("the loader never said shard 2 was unavailable")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if up := metric(t, loader.addr(t), "loader_shard_unavailable", `shard="1"`); up != 0 {
		t.Fatalf("loader_shard_unavailable{shard=\"1\"} = %v while shard 1 takes rows", up)
	}
	time.Sleep(time.Until(killed.Add(time.Minute)))
	node3.start(t)
	return fmt.Sprintf("shard 2 (nodes 3 and 4) SIGKILLed for 60 s, shard 1 kept landing, loader_shard_unavailable said shard 2; %s",
		r.endCluster(t, j, 6*time.Minute))
}

// clusterLoaderKills SIGKILLs the loader three times while its blocks are in flight to the shards:
// the blocks its successor forms again are dropped by the replicated tables.
func clusterLoaderKills(t *testing.T) string {
	src := demosource.DefaultConfig()
	src.Records = 30_000
	src.PageLatency = 300 * time.Millisecond
	r := newClusterChaos(t, src, "clusterkill", map[string]string{"SLUICE_LOADER_BATCH_ROWS": "1000"})
	r.service(t, "extractor")
	loader := start(t, "loader-0", r.env)
	base := loader.ready(t)
	j := r.submit(t, 6, 200)
	kills := 0
	for i := range 3 {
		before := inserted(t, base)
		deadline := time.Now().Add(time.Minute)
		for inserted(t, base) == before {
			if time.Now().After(deadline) {
				t.Fatalf("kill %d: the loader inserted nothing for a minute", i)
			}
			time.Sleep(2 * time.Millisecond)
		}
		if j := poll(t, r.planner, j.ID); j.State != "running" {
			break
		}
		loader.stop(t, syscall.SIGKILL)
		kills++
		loader = start(t, fmt.Sprintf("loader-%d", i+1), r.env)
		base = loader.ready(t)
	}
	if kills < 2 {
		t.Fatalf("only %d of 3 kills came while the job was loading", kills)
	}
	return fmt.Sprintf("%d loader SIGKILLs with blocks in flight; %s", kills, r.endCluster(t, j, 5*time.Minute))
}
