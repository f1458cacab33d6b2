package deploy

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/sluicedata/sluice/pkg/chsink"
	"github.com/sluicedata/sluice/pkg/demosource"
	"github.com/sluicedata/sluice/pkg/kafka"
	"github.com/sluicedata/sluice/pkg/stacktest"
)

// TestChaos is the fault suite: each case runs a job through the real services while it injects
// one kind of fault, proves the fault happened, and ends with the invariant monitor and the checker.
// `make test` runs the quick cases; `make chaos` (SLUICE_CHAOS=all) runs every case and writes the
// result lines to SLUICE_CHAOS_RESULTS.
func TestChaos(t *testing.T) {
	stacktest.Require(t)
	all := os.Getenv("SLUICE_CHAOS") == "all"
	r := &report{}
	defer r.write(t)
	for _, c := range chaosCases() {
		if c.full && !all {
			continue
		}
		t.Run(c.id+" "+c.name, func(t *testing.T) {
			began := time.Now()
			var detail string
			defer func() { r.add(t, c.id, c.name, began, func() string { return detail }) }()
			detail = c.run(t)
		})
	}
}

type chaosCase struct {
	id, name string
	full     bool // only in make chaos
	run      func(t *testing.T) string
}

func chaosCases() []chaosCase {
	return []chaosCase{
		{"F1", "loader SIGKILL 3 times mid-batch", false, func(t *testing.T) string { return loaderKills(t, 3) }},
		{"F1", "loader SIGKILL 20 times at random points", true, func(t *testing.T) string { return loaderKills(t, 20) }},
		{"F2", "loader SIGTERM drains and commits what it inserted", false, loaderTerm},
		{"F3", "extractor SIGKILL mid-page", false, extractorKill},
		{"F4", "planner SIGKILL between planning and publishing, and a double submission", false, plannerCut},
		{"F5", "Kafka SIGSTOP 5 s", false, func(t *testing.T) string { return brokerStop(t, 5*time.Second) }},
		{"F5", "Kafka SIGSTOP 30 s", true, func(t *testing.T) string { return brokerStop(t, 30*time.Second) }},
		{"F5", "Kafka SIGSTOP 120 s", true, func(t *testing.T) string { return brokerStop(t, 120*time.Second) }},
		{"F5", "Kafka SIGKILL and restart 15 s later", false, brokerKill},
		{"F5", "3-broker cluster: the leader of a raw partition SIGKILLed mid-job", true, leaderKill},
		{"F6", "ClickHouse SIGKILL mid-insert, down 10 s", false, func(t *testing.T) string { return clickhouseKill(t, 10*time.Second) }},
		{"F6", "ClickHouse SIGKILL, down 5 min", true, func(t *testing.T) string { return clickhouseKill(t, 5*time.Minute) }},
		{"F7", "TOO_MANY_PARTS from a lowered parts_to_throw_insert (10)", false, tooManyParts},
		{"F8", "connections to Kafka and ClickHouse cut every 0.5–1.5 s for 30 s", false, func(t *testing.T) string { return connectionChaos(t, 30*time.Second) }},
		{"F8", "connections to Kafka and ClickHouse cut every 0.5–1.5 s for 5 minutes", true, func(t *testing.T) string { return connectionChaos(t, 5*time.Minute) }},
		{"F9", "rebalance storm and a SIGSTOPped extractor resumed after its session expired", false, rebalanceStorm},
		{"F10", "source 429, 5xx, requests past their timeout, truncated bodies", false, sourceFaults},
		{"F10", "source down for 10 minutes", true, func(t *testing.T) string { return sourceOutage(t, 10*time.Minute) }},
		{"F11", "poison records at 0.1 %", false, func(t *testing.T) string { return poison(t, 1000) }},
		{"F11", "poison records at 10 %", true, func(t *testing.T) string { return poison(t, 10) }},
		{"F12", "dead-letter topic unavailable", false, deadLetterTopicDown},
		{"F13", "a source three times faster than the loader, memory bounded", true, slowLoader},
		{"F14", "a 60 MiB page of tiny records mid-job and a view that throws on marker records", true, hostileSource},
		{"F15", "cluster: the replica a shard's rows go to SIGKILLed mid-insert, restarted 10 s later", false, func(t *testing.T) string { return replicaKill(t, 10*time.Second) }},
		{"F16", "cluster: ZooKeeper SIGSTOPped 30 s", true, zookeeperStop},
		{"F17", "cluster: a whole shard down 60 s", true, shardDown},
		{"F18", "cluster: loader SIGKILLed 3 times with blocks in flight to the shards", false, clusterLoaderKills},
	}
}

// chaosRig is a deployment with its services and its monitor.
type chaosRig struct {
	p       *deployment
	env     map[string]string
	planner string
	m       *monitor
	table   string
	src     demosource.Config
}

// newChaos prepares a deployment of src on k (nil: the stack's Kafka) with extra variables, starts
// a planner, and starts the monitor on table.
func newChaos(t *testing.T, src demosource.Config, k *kafka.Config, table string, extra map[string]string) *chaosRig {
	t.Helper()
	var p *deployment
	if k != nil {
		p = newPipelineOn(t, src, *k)
	} else {
		p = newPipeline(t, src)
	}
	env := p.with(extra)
	r := &chaosRig{p: p, env: env, table: table, src: src}
	r.planner = start(t, "planner", env).ready(t)
	return r
}

// service starts one more member or service and waits until it is ready.
func (r *chaosRig) service(t *testing.T, name string) *proc {
	t.Helper()
	s := start(t, name, r.env)
	s.ready(t)
	return s
}

// submit submits the case's job and starts the monitor.
func (r *chaosRig) submit(t *testing.T, tasks, pageSize int) job {
	t.Helper()
	j := submit(t, r.planner, jobSpec(r.table, r.p.srcURL, r.table, tasks, pageSize, 12))
	r.m = watch(t, r.p, r.table)
	return j
}

// end waits for the job and runs the checker and the monitor.
func (r *chaosRig) end(t *testing.T, j job, timeout time.Duration, malformedEvery int64) string {
	t.Helper()
	j = await(t, r.planner, j.ID, timeout)
	checked := verify(t, r.p, r.table, j, want{records: r.src.Records, size: r.src.RecordSize, malformedEvery: malformedEvery, state: "succeeded"})
	return checked + "; " + r.m.finish()
}

// inserted is the loader's loader_rows_inserted_total.
func inserted(t *testing.T, base string) float64 {
	return metric(t, base, "loader_rows_inserted_total")
}

func loaderKills(t *testing.T, kills int) string {
	src := demosource.DefaultConfig()
	src.Records = 40_000
	// The job must outlast the kills: each takes a few seconds (the new member joins the group).
	src.PageLatency = time.Duration(kills) * 120 * time.Millisecond
	r := newChaos(t, src, nil, "loaderkill", map[string]string{"SLUICE_LOADER_BATCH_ROWS": "1000"})
	r.service(t, "extractor")
	loader := start(t, "loader-0", r.env)
	base := loader.ready(t)
	j := r.submit(t, 6, 200)
	inFlight := 0
	for i := range kills {
		// The loader is inserting: its insert counter moved since it started.
		before := inserted(t, base)
		deadline := time.Now().Add(time.Minute)
		for inserted(t, base) == before {
			if time.Now().After(deadline) {
				t.Fatalf("kill %d: the loader inserted nothing for a minute", i)
			}
			time.Sleep(5 * time.Millisecond)
		}
		time.Sleep(time.Duration(rand.IntN(150)) * time.Millisecond)
		if j := poll(t, r.planner, j.ID); j.State != "running" {
			break // the job ended: no batch left to kill
		}
		inFlight++
		loader.stop(t, syscall.SIGKILL)
		loader = start(t, fmt.Sprintf("loader-%d", i+1), r.env)
		base = loader.ready(t)
	}
	if inFlight < kills*3/4 {
		t.Fatalf("only %d of %d kills came while the job was loading", inFlight, kills)
	}
	checked := r.end(t, j, 5*time.Minute, 0)
	rows, keys := r.p.count(t, r.table)
	return fmt.Sprintf("%d kills while the loader was inserting; %d rows before FINAL for %d keys; %s", inFlight, rows, keys, checked)
}

func loaderTerm(t *testing.T) string {
	src := demosource.DefaultConfig()
	src.Records = 30_000
	src.PageLatency = 150 * time.Millisecond // about 6 s of extraction
	r := newChaos(t, src, nil, "loaderterm", map[string]string{"SLUICE_LOADER_BATCH_ROWS": "2000"})
	r.service(t, "extractor")
	loader := r.service(t, "loader-1")
	j := r.submit(t, 4, 200)
	r.p.waitRows(t, r.table, 4000, time.Minute)
	if j := poll(t, r.planner, j.ID); j.State != "running" || j.Records.Extracted >= uint64(src.Records) {
		t.Fatalf("the job was extracted before the loader was stopped: %+v", j)
	}
	// Right after an insert: its batch's dead letters, events and commit are what the drain must do.
	base := loader.addr(t)
	for before := inserted(t, base); inserted(t, base) == before; {
		time.Sleep(2 * time.Millisecond)
	}
	began := time.Now()
	loader.stop(t, syscall.SIGTERM)
	took := time.Since(began)
	if code := loader.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("loader exited %d after SIGTERM", code)
	}
	if took > 20*time.Second {
		t.Fatalf("loader took %s to drain, more than SLUICE_SHUTDOWN_TIMEOUT (20s)", took)
	}
	// Everything it inserted is committed: no row lies at or past its partition's commit.
	committed := r.m.committed(context.Background(), r.env["SLUICE_LOADER_GROUP"], r.p.kafka.RawTopic)
	rows, err := r.p.conn.Query(context.Background(), "SELECT kafka_partition, max(kafka_offset) FROM `"+r.table+"` GROUP BY kafka_partition")
	if err != nil {
		t.Fatal(err)
	}
	parts := 0
	for rows.Next() {
		var p int32
		var last int64
		if err := rows.Scan(&p, &last); err != nil {
			t.Fatal(err)
		}
		if c, ok := committed[p]; !ok || last >= c {
			t.Fatalf("partition %d: row at offset %d inserted, commit at %d: the drain left inserted rows uncommitted", p, last, c)
		}
		parts++
	}
	rows.Close()
	if parts == 0 {
		t.Fatal("nothing was inserted before SIGTERM")
	}
	r.service(t, "loader-2")
	return fmt.Sprintf("SIGTERM right after an insert, drained in %s, exit 0, inserted rows committed on %d partitions; %s",
		took.Round(time.Millisecond), parts, r.end(t, j, 3*time.Minute, 0))
}

func extractorKill(t *testing.T) string {
	src := demosource.DefaultConfig()
	src.Records = 20_000
	src.PageLatency = 200 * time.Millisecond
	r := newChaos(t, src, nil, "extractorkill", map[string]string{"SLUICE_EXTRACTOR_CONCURRENCY": "4"})
	x := r.service(t, "extractor-1")
	r.service(t, "loader")
	j := r.submit(t, 4, 200)
	r.p.waitRows(t, r.table, 2000, time.Minute)
	// A page is in flight: the source took a request it has not answered.
	deadline := time.Now().Add(30 * time.Second)
	for {
		st := r.p.source.Stats()
		var answered int64
		for _, n := range st.ByStatus {
			answered += n
		}
		if st.Requests > answered {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no page in flight within 30 s")
		}
		time.Sleep(2 * time.Millisecond)
	}
	x.stop(t, syscall.SIGKILL)
	r.service(t, "extractor-2")
	return "killed with a page in flight; " + r.end(t, j, 3*time.Minute, 0)
}

func plannerCut(t *testing.T) string {
	src := demosource.DefaultConfig()
	src.Records = 10_000
	p := newPipeline(t, src)
	const table = "plannercut"
	r := &chaosRig{p: p, env: p.with(map[string]string{"SLUICE_PLANNER_REPUBLISH_AFTER": "2s"}), table: table, src: src}
	r.service(t, "extractor")
	r.service(t, "loader")
	// The first planner publishes its tasks to a topic that does not exist: its planned event is
	// out, its tasks are not. It is killed then.
	cut := start(t, "planner-1", p.with(map[string]string{"SLUICE_KAFKA_TASKS_TOPIC": stacktest.Name(t, "missing"),
		"SLUICE_KAFKA_CREATE_TOPICS": "false"}))
	first := cut.ready(t)
	spec := jobSpec(table, p.srcURL, table, 4, 500, 3)
	status, body := post(t, first, spec, "key-1")
	if status != http.StatusServiceUnavailable || !strings.Contains(body, "planned but its tasks") {
		t.Fatalf("submit to the planner without a tasks topic: %d %s", status, body)
	}
	cut.stop(t, syscall.SIGKILL)
	r.planner = start(t, "planner-2", r.env).ready(t)
	// The killed planner held the lease: the next leads once its session expires.
	waitLeads(t, r.planner)
	r.m = watch(t, p, table)
	// The client retries its submission with the same key: the job it made, not another.
	status, body = post(t, r.planner, spec, "key-1")
	var j job
	if status != http.StatusOK || decode(body, &j) != nil || j.ID == "" {
		t.Fatalf("resubmit with the key: %d %s", status, body)
	}
	again, _ := post(t, r.planner, spec, "key-1")
	if again != http.StatusOK {
		t.Fatalf("a second resubmission answered %d", again)
	}
	checked := r.end(t, j, 3*time.Minute, 0)
	var jobs struct{ Jobs []job }
	if _, body := get(t, r.planner+"/v1/jobs"); decode(body, &jobs) != nil || len(jobs.Jobs) != 1 {
		t.Fatalf("planner knows %s, want the one job", body)
	}
	return "tasks published again by the next planner, 3 submissions with one key gave one job; " + checked
}

func brokerStop(t *testing.T, pause time.Duration) string {
	return brokerFault(t, "brokerstop", pause, func(broker *privateStack) string {
		broker.signal(t, syscall.SIGSTOP)
		time.Sleep(pause) // the fault itself
		broker.signal(t, syscall.SIGCONT)
		return fmt.Sprintf("broker stopped %s mid-job", pause)
	})
}

func brokerKill(t *testing.T) string {
	const down = 15 * time.Second
	return brokerFault(t, "brokerkill", down, func(broker *privateStack) string {
		broker.kill(t)
		time.Sleep(down) // the outage itself
		broker.start(t)
		return fmt.Sprintf("broker SIGKILLed mid-job and started %s later", down)
	})
}

// brokerFault runs a job on a broker of the case's own and injects fault into it while the job is
// loading.
func brokerFault(t *testing.T, table string, outage time.Duration, fault func(*privateStack) string) string {
	src := demosource.DefaultConfig()
	src.Records = 30_000
	src.PageLatency = 60 * time.Millisecond
	broker := ownKafka(t)
	k := stacktest.KafkaAt(t, broker.addr)
	r := newChaos(t, src, &k, table, map[string]string{"SLUICE_LOADER_BATCH_ROWS": "2000"})
	r.service(t, "extractor")
	r.service(t, "loader")
	j := r.submit(t, 6, 100)
	r.p.waitRows(t, r.table, 3000, time.Minute)
	if j := poll(t, r.planner, j.ID); j.State != "running" {
		t.Fatalf("the job ended before the fault: %+v", j)
	}
	what := fault(broker)
	return what + "; " + r.end(t, j, outage+4*time.Minute, 0)
}

func leaderKill(t *testing.T) string {
	src := demosource.DefaultConfig()
	src.Records = 40_000
	src.PageLatency = 60 * time.Millisecond
	cluster, addrs := ownKafkaCluster(t)
	k := stacktest.KafkaAt(t, addrs...)
	r := newChaos(t, src, &k, "leaderkill", map[string]string{"SLUICE_LOADER_BATCH_ROWS": "2000"})
	r.service(t, "extractor")
	r.service(t, "loader")
	j := r.submit(t, 6, 100)
	r.p.waitRows(t, r.table, 4000, time.Minute)
	cl, err := kafka.NewClient(k, "chaos-admin", stacktest.Logger(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	topics, err := kadm.NewClient(cl).ListTopics(context.Background(), k.RawTopic)
	if err != nil {
		t.Fatal(err)
	}
	raw := topics[k.RawTopic]
	leader := raw.Partitions[0].Leader
	if n := len(raw.Partitions[0].Replicas); n != 3 {
		t.Fatalf("raw partition 0 has %d replicas, want 3", n)
	}
	cluster.node(leader).kill(t)
	return fmt.Sprintf("node %d, leader of raw partition 0, SIGKILLed mid-job and left down; %s", leader, r.end(t, j, 5*time.Minute, 0))
}

func clickhouseKill(t *testing.T, down time.Duration) string {
	src := demosource.DefaultConfig()
	src.Records = 30_000
	src.PageLatency = 60 * time.Millisecond
	own := ownClickHouse(t)
	r := newChaos(t, src, nil, "chkill", map[string]string{"SLUICE_CLICKHOUSE_ADDR": own.addr, "SLUICE_LOADER_BATCH_ROWS": "2000",
		"SLUICE_LOADER_RETRY_MAX_BACKOFF": "1s", "SLUICE_LOADER_FLUSH_TIMEOUT": "5s"})
	r.p.useClickHouse(t, own.addr)
	r.service(t, "extractor")
	loader := r.service(t, "loader")
	j := r.submit(t, 4, 100)
	r.p.waitRows(t, r.table, 2000, time.Minute)
	before := inserted(t, loader.addr(t))
	for inserted(t, loader.addr(t)) == before {
		time.Sleep(5 * time.Millisecond)
	}
	own.kill(t)
	time.Sleep(down) // the outage itself
	own.start(t)
	if retries := metric(t, loader.addr(t), "pipeline_retries_total", `op="insert"`); retries == 0 {
		t.Fatal("no insert was retried while ClickHouse was down")
	}
	return fmt.Sprintf("ClickHouse SIGKILLed while inserting, down %s; %s", down, r.end(t, j, down+4*time.Minute, 0))
}

func tooManyParts(t *testing.T) string {
	src := demosource.DefaultConfig()
	src.Records = 30_000
	// Merges of the table stop until inserts are refused: then its parts pass the lowered threshold
	// for certain, and the loader must hold and retry until merges bring them back under it.
	own := ownClickHouse(t, `<yandex><merge_tree><parts_to_delay_insert>10</parts_to_delay_insert><parts_to_throw_insert>10</parts_to_throw_insert></merge_tree></yandex>`)
	r := newChaos(t, src, nil, "parts", map[string]string{"SLUICE_CLICKHOUSE_ADDR": own.addr, "SLUICE_LOADER_BATCH_ROWS": "500",
		"SLUICE_LOADER_FLUSH_INTERVAL": "5ms", "SLUICE_LOADER_RETRY_MAX_BACKOFF": "500ms"})
	r.p.useClickHouse(t, own.addr)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := chsink.NewWriter(r.p.conn, stacktest.Logger(t)).EnsureTable(ctx, r.table); err != nil {
		t.Fatal(err)
	}
	merges := func(verb string) {
		if err := r.p.conn.Exec(ctx, fmt.Sprintf("SYSTEM %s MERGES `%s`.`%s`", verb, r.p.conn.Database, r.table)); err != nil {
			t.Fatal(err)
		}
	}
	merges("STOP")
	r.service(t, "extractor")
	loader := r.service(t, "loader")
	j := r.submit(t, 8, 200)
	refused := func() float64 {
		return metric(t, loader.addr(t), "pipeline_retries_total", `op="insert"`, `reason="too_many_parts"`)
	}
	for deadline := time.Now().Add(2 * time.Minute); refused() < 3; {
		if time.Now().After(deadline) {
			t.Fatalf("ClickHouse refused %v inserts with TOO_MANY_PARTS in 2 minutes of stopped merges, want 3", refused())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if state := poll(t, r.planner, j.ID).State; state != "running" {
		t.Fatalf("job %s while its table refused inserts", state)
	}
	merges("START")
	checked := r.end(t, j, 5*time.Minute, 0)
	return fmt.Sprintf("%v inserts refused with TOO_MANY_PARTS and retried, merges stopped until the third; %s", refused(), checked)
}

func connectionChaos(t *testing.T, span time.Duration) string {
	src := demosource.DefaultConfig()
	// The job lasts about the span: 8 tasks of 200-record pages, each answered after the latency
	// (under the job's 5 s request timeout).
	src.Records, src.PageLatency = 100_000, span/60
	if span > time.Minute {
		src.Records, src.PageLatency = 160_000, 3*time.Second
	}
	// The broker tells clients to come through the proxy, so that every connection to it does.
	kp := freePort(t)
	toKafka := newProxy(t, "127.0.0.1:"+strconv.Itoa(kp), "")
	ownKafkaAdvertised(t, kp, toKafka.to)
	toClickHouse := newProxy(t, "127.0.0.1:0", stacktest.ClickHouseAddr())
	k := stacktest.KafkaAt(t, toKafka.addr())
	// Eight slots for the eight tasks: they all run while the connections are cut.
	r := newChaos(t, src, &k, "cuts", map[string]string{"SLUICE_CLICKHOUSE_ADDR": toClickHouse.addr(), "SLUICE_LOADER_BATCH_ROWS": "5000",
		"SLUICE_EXTRACTOR_CONCURRENCY": "8"})
	r.service(t, "extractor")
	r.service(t, "loader")
	j := r.submit(t, 8, 200)
	stop := make(chan struct{})
	go toKafka.chaos(stop)
	go toClickHouse.chaos(stop)
	deadline := time.Now().Add(span)
	for time.Now().Before(deadline) && poll(t, r.planner, j.ID).State == "running" {
		time.Sleep(time.Second)
	}
	close(stop)
	// Every cut that found connections open counts; the loader holds ClickHouse connections only
	// around its inserts, so fewer of its cuts find one.
	if toKafka.cuts.Load() < int64(span/(3*time.Second)) || toClickHouse.cuts.Load() < 3 {
		t.Fatalf("%d cuts to Kafka and %d to ClickHouse with connections open: too few", toKafka.cuts.Load(), toClickHouse.cuts.Load())
	}
	return fmt.Sprintf("%d cuts of open connections to Kafka, %d to ClickHouse; %s", toKafka.cuts.Load(), toClickHouse.cuts.Load(),
		r.end(t, j, 5*time.Minute, 0))
}

func rebalanceStorm(t *testing.T) string {
	src := demosource.DefaultConfig()
	src.Records = 40_000
	src.PageLatency = 60 * time.Millisecond
	r := newChaos(t, src, nil, "storm", map[string]string{"SLUICE_LOADER_BATCH_ROWS": "2000"})
	steady := r.service(t, "extractor-steady")
	r.service(t, "loader-steady")
	zombie := r.service(t, "extractor-zombie")
	j := r.submit(t, 12, 200)
	r.p.waitRows(t, r.table, 2000, time.Minute)
	// The zombie stops for longer than its session (10 s): the group gives its partitions away.
	zombie.signal(syscall.SIGSTOP)
	storm := 0
	for i := 0; i < 4 && poll(t, r.planner, j.ID).State == "running"; i++ {
		x := start(t, fmt.Sprintf("extractor-storm-%d", i), r.env)
		l := start(t, fmt.Sprintf("loader-storm-%d", i), r.env)
		x.ready(t)
		l.ready(t)
		time.Sleep(3 * time.Second)
		sig := syscall.SIGTERM
		if i%2 == 1 {
			sig = syscall.SIGKILL
		}
		x.stop(t, sig)
		l.stop(t, sig)
		storm++
	}
	zombie.signal(syscall.SIGCONT)
	checked := r.end(t, j, 5*time.Minute, 0)
	sessions := strings.Count(readLog(t, steady), `"new group session begun"`)
	if sessions < 3 || !strings.Contains(readLog(t, zombie), "partitions lost") {
		t.Fatalf("the steady extractor began %d group sessions; the zombie's log mentions no lost partitions", sessions)
	}
	return fmt.Sprintf("%d members joined and left, the steady extractor saw %d group sessions, the zombie lost its partitions; %s", 2*storm, sessions, checked)
}

func sourceFaults(t *testing.T) string {
	src := demosource.DefaultConfig()
	src.Records = 30_000
	src.Rate429, src.RetryAfter = 0.05, time.Second
	src.Rate5xx, src.Burst5xx = 0.05, 3
	src.RateSlow, src.SlowDelay = 0.03, 6*time.Second // past the job's 5 s request timeout
	src.RateTruncated = 0.05
	r := newChaos(t, src, nil, "sourcefaults", map[string]string{"SLUICE_EXTRACTOR_CONCURRENCY": "8",
		"SLUICE_EXTRACTOR_RETRY_BASE": "50ms", "SLUICE_EXTRACTOR_RETRY_MAX": "2s"})
	x := r.service(t, "extractor")
	r.service(t, "loader")
	j := r.submit(t, 12, 500)
	checked := r.end(t, j, 5*time.Minute, 0)
	st := r.p.source.Stats()
	if st.EarlyRequests != 0 || st.ByStatus["429"] == 0 || st.Slow == 0 || st.Truncated == 0 {
		t.Fatalf("source stats %+v: want every fault served and no request before its Retry-After", st)
	}
	for _, reason := range []string{"http_429", "http_5xx", "truncated", "timeout"} {
		if metric(t, x.addr(t), "pipeline_retries_total", `op="fetch"`, `reason="`+reason+`"`) == 0 {
			t.Fatalf("no fetch retried for %s", reason)
		}
	}
	if metric(t, x.addr(t), "pipeline_retry_after_waits_total", `op="fetch"`) == 0 {
		t.Fatal("no retry waited for a Retry-After")
	}
	return fmt.Sprintf("%d answers 429, %d 5xx, %d past the timeout, %d truncated, %v retries, none early; %s",
		st.ByStatus["429"], st.ByStatus["500"]+st.ByStatus["502"]+st.ByStatus["503"], st.Slow, st.Truncated,
		metric(t, x.addr(t), "pipeline_retries_total", `op="fetch"`), checked)
}

func sourceOutage(t *testing.T, down time.Duration) string {
	src := demosource.DefaultConfig()
	src.Records = 20_000
	src.PageLatency = 50 * time.Millisecond
	r := newChaos(t, src, nil, "sourceoutage", map[string]string{"SLUICE_EXTRACTOR_PAGE_DEADLINE": (down + 5*time.Minute).String(),
		"SLUICE_EXTRACTOR_RETRY_MAX": "20s"})
	r.service(t, "extractor")
	r.service(t, "loader")
	// Retries enough to outlast the outage: a transient failure is retried, not dead-lettered.
	j := submit(t, r.planner, jobSpec(r.table, r.p.srcURL, r.table, 4, 200, 100))
	r.m = watch(t, r.p, r.table)
	r.p.waitRows(t, r.table, 1000, time.Minute)
	r.p.sourceDown.Store(true)
	time.Sleep(down) // the outage itself
	r.p.sourceDown.Store(false)
	return fmt.Sprintf("source answered 503 to everything for %s; %s", down, r.end(t, j, 10*time.Minute, 0))
}

func poison(t *testing.T, every int64) string {
	src := demosource.DefaultConfig()
	src.Records = 20_000
	src.MalformedEvery = every
	r := newChaos(t, src, nil, "poison", nil)
	r.service(t, "extractor")
	r.service(t, "loader")
	j := r.submit(t, 4, 500)
	return r.end(t, j, 3*time.Minute, every)
}

func deadLetterTopicDown(t *testing.T) string {
	src := demosource.DefaultConfig()
	src.Records = 20_000
	src.MalformedEvery = 100
	src.PageLatency = 40 * time.Millisecond
	broker := ownKafka(t)
	k := stacktest.KafkaAt(t, broker.addr)
	r := newChaos(t, src, &k, "dlqdown", map[string]string{"SLUICE_LOADER_FLUSH_TIMEOUT": "3s"})
	r.service(t, "extractor")
	loader := r.service(t, "loader")
	// The topic takes no record as large as a dead letter: every write to it fails.
	setTopicConfig(t, k, k.DLQTopic, "max.message.bytes", "64")
	j := r.submit(t, 4, 200)
	deadline := time.Now().Add(time.Minute)
	for !strings.Contains(readLog(t, loader), "dead letters, events or commit not written in time") {
		if time.Now().After(deadline) {
			t.Fatal("the loader never failed to write its dead letters")
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(10 * time.Second) // the outage goes on; the monitor watches the commits meanwhile
	setTopicConfig(t, k, k.DLQTopic, "max.message.bytes", "1048588")
	return "every dead letter refused by the topic for 10 s and more; " + r.end(t, j, 3*time.Minute, 100)
}

func slowLoader(t *testing.T) string {
	src := demosource.DefaultConfig()
	src.Records = 6_000_000 // about ten minutes at what this loader takes
	r := newChaos(t, src, nil, "slowloader", map[string]string{"SLUICE_LOADER_BATCH_ROWS": "150", "SLUICE_LOADER_FLUSH_INTERVAL": "10ms"})
	x := r.service(t, "extractor")
	l := r.service(t, "loader")
	j := r.submit(t, 12, 1000)
	ends := time.Now().Add(10 * time.Minute)
	var maxLag float64
	for time.Now().Before(ends) && poll(t, r.planner, j.ID).State == "running" {
		maxLag = max(maxLag, metric(t, l.addr(t), "pipeline_consumer_lag_records"))
		time.Sleep(5 * time.Second)
	}
	if maxLag < 100_000 {
		t.Fatalf("loader lag peaked at %v records: the source was not faster than the loader", maxLag)
	}
	checked := r.end(t, j, 30*time.Minute, 0)
	const bound = 768 << 20
	var peaks []string
	for _, s := range []*proc{x, l} {
		hwm := peakRSS(t, s)
		if hwm > bound {
			t.Fatalf("%s peaked at %d MiB, above the %d MiB bound", s.name, hwm>>20, bound>>20)
		}
		peaks = append(peaks, fmt.Sprintf("%s %d MiB", s.name, hwm>>20))
	}
	return fmt.Sprintf("lag peaked at %.0f records; peak memory %s (bound %d MiB); %s", maxLag, strings.Join(peaks, ", "), bound>>20, checked)
}

// signal sends sig to the process.
func (p *proc) signal(sig syscall.Signal) { _ = p.cmd.Process.Signal(sig) }

// readLog returns the process's log so far.
func readLog(t *testing.T, p *proc) string {
	t.Helper()
	b, err := os.ReadFile(p.log)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// peakRSS is the process's peak resident memory (VmHWM).
func peakRSS(t testing.TB, p *proc) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		var kb int64
		if n, _ := fmt.Sscanf(line, "VmHWM: %d kB", &kb); n == 1 {
			return kb << 10
		}
	}
	t.Fatalf("no VmHWM for %s", p.name)
	return 0
}

// setTopicConfig changes one config of a topic on the broker.
func setTopicConfig(t *testing.T, k kafka.Config, topic, key, value string) {
	t.Helper()
	cl, err := kafka.NewClient(k, "chaos-admin", stacktest.Logger(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	resp, err := kadm.NewClient(cl).AlterTopicConfigs(context.Background(), []kadm.AlterConfig{{Op: kadm.SetConfig, Name: key, Value: &value}}, topic)
	if err == nil {
		_, err = resp.On(topic, nil)
	}
	if err != nil {
		t.Fatalf("set %s=%s on %s: %v", key, value, topic, err)
	}
}

// post submits a spec with an idempotency key and returns the status and body.
func post(t *testing.T, planner, spec, key string) (int, string) {
	t.Helper()
	resp, err := apiDo(http.MethodPost, planner+"/v1/jobs", strings.NewReader(spec), "Idempotency-Key", key)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// get asks a planner's API with the tests' token.
func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := apiDo(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

func decode(body string, v any) error { return json.Unmarshal([]byte(body), v) }

// hostileSource is a job whose source answers one page, mid-task, with 60 MiB of tiny records (a
// body under the limit, 31 million records), into a table whose materialized view throws on marker
// keys (ClickHouse code 395, which sluice does not classify). The page's task is dead-lettered as
// one letter (page_too_large), the marker records alone are dead-lettered (unclassified) once the
// loader's bounds pass, every other record is loaded, and no member restarts or nears its memory
// limit.
func hostileSource(t *testing.T) string {
	src := demosource.DefaultConfig()
	src.Records = 20_000
	r := newChaos(t, src, nil, "hostile", map[string]string{"SLUICE_LOADER_UNCLASSIFIED_GRACE": "5s", "SLUICE_LOADER_UNCLASSIFIED_ATTEMPTS": "3"})
	huge := []byte(`{"data":[` + strings.Repeat("0,", 31<<20) + `0],"total":20000}`)
	var hugeServed atomic.Int32
	api := r.p.source.Handler()
	hostile := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.URL.Query().Get("offset") == "12000" {
			hugeServed.Add(1)
			_, _ = w.Write(huge)
			return
		}
		api.ServeHTTP(w, req)
	}))
	t.Cleanup(hostile.Close)
	ctx := context.Background()
	if err := r.p.conn.Exec(ctx, chsink.Raw.CreateSQL(r.p.ch.Database, r.table)); err != nil {
		t.Fatal(err)
	}
	if err := r.p.conn.Exec(ctx, fmt.Sprintf("CREATE MATERIALIZED VIEW `%s`.`%s_throws` ENGINE = Memory AS SELECT throwIf(endsWith(key, '777')) AS thrown FROM `%s`.`%s`",
		r.p.ch.Database, r.table, r.p.ch.Database, r.table)); err != nil {
		t.Fatal(err)
	}
	x := r.service(t, "extractor")
	l := r.service(t, "loader")
	j := submit(t, r.planner, jobSpec(r.table, hostile.URL, r.table, 4, 500, 2))
	r.m = watch(t, r.p, r.table)
	j = await(t, r.planner, j.ID, 5*time.Minute)
	if hugeServed.Load() == 0 {
		t.Fatal("the 60 MiB page was never asked for")
	}
	if j.State != "failed" || j.Tasks.DeadLettered != 1 {
		t.Fatalf("job ended %+v, want failed with the huge page's task dead-lettered", j)
	}
	// The letters: the page's task once, and exactly the marker records that were extracted.
	wantMarkers := map[string]bool{}
	for k := 777; k < 20_000; k += 1000 {
		if k < 12_000 || k >= 15_000 {
			wantMarkers[strconv.Itoa(k)] = true
		}
	}
	var pageLetters int
	gotMarkers := map[string]bool{}
	for _, dl := range r.p.deadLetters(t) {
		switch dl.ErrorClass {
		case "page_too_large":
			pageLetters++
			if !strings.HasPrefix(string(dl.ResponseHead), `{"data":[0,0,`) {
				t.Fatalf("the page's letter keeps no head: %.60q", dl.ResponseHead)
			}
		case "unclassified":
			gotMarkers[string(dl.OriginalKey)] = true
			if !strings.Contains(dl.ErrorMessage, "395") {
				t.Fatalf("a marker's letter: %s", dl.ErrorMessage)
			}
		default:
			t.Fatalf("a letter of class %s: %s", dl.ErrorClass, dl.ErrorMessage)
		}
	}
	if pageLetters != 1 || len(gotMarkers) != len(wantMarkers) {
		t.Fatalf("%d page letters and %d marker letters (%v), want 1 and %d", pageLetters, len(gotMarkers), gotMarkers, len(wantMarkers))
	}
	for k := range wantMarkers {
		if !gotMarkers[k] {
			t.Fatalf("marker %s was not dead-lettered", k)
		}
	}
	// Every other record extracted is in the table (ClickHouse keeps a block in the table when a
	// view throws on it, so the marker rows may be there too).
	rows := r.p.rows(t, r.table)
	for k := range 20_000 {
		key := strconv.Itoa(k)
		if _, ok := rows[key]; !ok && !wantMarkers[key] && (k < 12_000 || k >= 15_000) {
			t.Fatalf("record %s was not loaded", key)
		}
	}
	var peaks []string
	for _, s := range []*proc{x, l} {
		select {
		case err := <-s.done:
			t.Fatalf("%s stopped: %v", s.name, err)
		default:
		}
		hwm := peakRSS(t, s)
		if hwm > 1<<30 {
			t.Fatalf("%s peaked at %d MiB, past a 1 GiB container limit", s.name, hwm>>20)
		}
		peaks = append(peaks, fmt.Sprintf("%s %d MiB", s.name, hwm>>20))
	}
	return fmt.Sprintf("the 60 MiB page asked %d times, its task one page_too_large letter; %d marker records dead-lettered as unclassified, every other record loaded; no member restarted, peaks %s; %s",
		hugeServed.Load(), len(gotMarkers), strings.Join(peaks, ", "), r.m.finish())
}
