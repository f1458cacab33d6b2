package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sluicedata/sluice/pkg/chsink"
	"github.com/sluicedata/sluice/pkg/delivery"
	"github.com/sluicedata/sluice/pkg/dlq"
	"github.com/sluicedata/sluice/pkg/events"
	"github.com/sluicedata/sluice/pkg/kafka"
	"github.com/sluicedata/sluice/pkg/kafkatest"
	"github.com/sluicedata/sluice/pkg/pipeline"
	sluicev1 "github.com/sluicedata/sluice/proto/sluice/v1"
)

// The tests in this file drive the real loader against a kfake cluster and an in-process writer
// that plays ClickHouse: it can block an insert, reject rows as bad data, or refuse a table.

// fakeWriter is ClickHouse for the loader: rows by table, with faults.
type fakeWriter struct {
	mu   sync.Mutex
	rows map[string]map[string]string // table → key → payload
	// gate, when set, blocks every insert until it is closed; entered is closed at the first insert.
	gate    chan struct{}
	entered chan struct{}
	// poison makes a block fail as bad data when one of its payloads contains it.
	poison string
	// refuse makes inserts into that table fail with a schema error while it is true.
	refuse map[string]bool
	blocks int
	// ranges are the planned blocks inserted, as raw partition, first offset and last offset (an
	// insert of several blocks adds each), and landed how many inserts took rows.
	ranges [][3]int64
	landed int
	// hold blocks the inserts into a table until its channel is closed; holding is closed at the
	// first of them.
	hold    map[string]chan struct{}
	holding chan struct{}
	// throwOn, when set, fails a block holding a payload with it as a materialized view's throwIf
	// fails the insert: an error of a code sluice does not classify.
	throwOn string
	// maxRows, when set, refuses a block of more rows as ClickHouse refuses one whose rows fall in
	// more partitions than one insert may write; an insert of more than slowRows rows, when set,
	// lasts until its context ends.
	maxRows, slowRows int
	// dedup drops a block whose token it saw, as a table with a deduplication window does; tokens
	// are the tokens of the blocks it took or dropped.
	dedup  bool
	tokens map[string]bool
	// versions are the versions of the rows kept, table → key: a row of a lower version than the
	// one kept is dropped, as ReplacingMergeTree drops it when it merges.
	versions map[string]map[string]uint64
}

func newFakeWriter() *fakeWriter {
	return &fakeWriter{rows: map[string]map[string]string{}, refuse: map[string]bool{}, entered: make(chan struct{}),
		hold: map[string]chan struct{}{}, holding: make(chan struct{}), tokens: map[string]bool{}, versions: map[string]map[string]uint64{}}
}

func (w *fakeWriter) Schema(_ context.Context, _ string, sink *chsink.Sink) (*chsink.Schema, error) {
	if sink != nil {
		return nil, delivery.New(delivery.Schema, "schema", errors.New("the fake writer lands raw rows only"))
	}
	return chsink.Raw, nil
}

func (w *fakeWriter) Evolve(context.Context, string, map[string]*chsink.Inference) error { return nil }

// DropsRepeats is dedup: a table that drops a block it saw takes each block alone.
func (w *fakeWriter) DropsRepeats(context.Context, string) (bool, error) { return w.dedup, nil }

func (w *fakeWriter) Insert(ctx context.Context, table string, block *chsink.Block, _ time.Time, token string) error {
	keys, payloads := block.Column("key").([]string), block.Column("payload").([]string)
	w.mu.Lock()
	gate, entered, hold := w.gate, w.entered, w.hold[table]
	if hold != nil {
		gate, entered = hold, w.holding
	}
	w.mu.Unlock()
	if gate != nil {
		select {
		case <-entered:
		default:
			close(entered)
		}
		select {
		case <-gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.blocks++
	if w.refuse[table] {
		return delivery.New(delivery.Schema, "schema", fmt.Errorf("code: 16, message: No such column key in table %s", table))
	}
	if w.slowRows > 0 && block.Len() > w.slowRows {
		w.blocks++
		w.mu.Unlock()
		<-ctx.Done()
		w.mu.Lock()
		return ctx.Err()
	}
	if w.maxRows > 0 && block.Len() > w.maxRows {
		// As chsink.Classify classifies ClickHouse's exception.
		return delivery.New(delivery.Transient, "too_many_parts", errors.New("code: 252, message: Too many partitions for single INSERT block (more than 100). The limit is controlled by 'max_partitions_per_insert_block' setting"))
	}
	if w.throwOn != "" {
		for _, p := range payloads {
			if strings.Contains(p, w.throwOn) {
				// As chsink.Classify classifies ClickHouse's exception.
				return delivery.New(delivery.Transient, chsink.Unclassified, errors.New("code: 395, message: Value passed to 'throwIf' function is non zero"))
			}
		}
	}
	if w.poison != "" {
		for _, p := range payloads {
			if strings.Contains(p, w.poison) {
				return delivery.New(delivery.Data, "data", errors.New("code: 27, message: Cannot parse input"))
			}
		}
	}
	if w.dedup && w.tokens[token] {
		return nil // dropped by the server: a block with this token is in already
	}
	w.tokens[token] = true
	if w.rows[table] == nil {
		w.rows[table] = map[string]string{}
		w.versions[table] = map[string]uint64{}
	}
	parts, offs := block.Column("kafka_partition").([]int32), block.Column("kafka_offset").([]int64)
	versions := block.Column("version").([]uint64)
	w.landed++
	for i, start := 0, 0; i < len(parts); i++ {
		if i == len(parts)-1 || parts[i+1] != parts[i] {
			w.ranges = append(w.ranges, [3]int64{int64(parts[i]), offs[start], offs[i]})
			start = i + 1
		}
	}
	for i, k := range keys {
		if v, ok := w.versions[table][k]; ok && versions[i] < v {
			continue
		}
		w.rows[table][k] = payloads[i]
		w.versions[table][k] = versions[i]
	}
	return nil
}

func (w *fakeWriter) count(table string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.rows[table])
}

// rig is a loader on a kfake cluster with the raw, dead-letter and events topics.
type rig struct {
	cl    *kgo.Client // the test's own client
	c     *kfake.Cluster
	w     *fakeWriter
	cfg   kafka.Config
	group string
	stop  func() // stops the rig's loader
	// opts are more options of the loader's client; aroundLost, when set, runs the loader's
	// handling of lost partitions.
	opts       []kgo.Opt
	aroundLost func(lost func())
}

func newRig(t *testing.T, w *fakeWriter, tune func(*LoaderConfig)) *rig {
	t.Helper()
	return newRigAfter(t, w, tune, nil)
}

// newRigAfter is newRig that runs before, on the cluster, before the loader joins its group.
func newRigAfter(t *testing.T, w *fakeWriter, tune func(*LoaderConfig), before func(*rig)) *rig {
	t.Helper()
	cfg := kafka.Config{RawTopic: "raw", DLQTopic: "dlq", EventsTopic: "events"}
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(2, cfg.RawTopic), kfake.SeedTopics(1, cfg.DLQTopic, cfg.EventsTopic))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	r := &rig{w: w, c: c, cfg: cfg, group: "loader"}
	r.cl, err = kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.cl.Close)
	if before != nil {
		before(r)
	}

	r.stop = r.start(t, w, tune)
	t.Cleanup(r.stop)
	return r
}

// start runs a loader member on the rig's cluster, with writer w, and returns what stops it.
func (r *rig) start(t *testing.T, w *fakeWriter, tune func(*LoaderConfig)) (stop func()) {
	t.Helper()
	lcfg := LoaderConfig{BatchRows: 100, BatchBytes: 1 << 20, FlushInterval: 20 * time.Millisecond, MaxRecordBytes: 1 << 20,
		RetryMaxBackoff: 20 * time.Millisecond, FlushTimeout: 2 * time.Second, DrainTimeout: time.Second,
		SchemaGrace: time.Hour, MaxPendingBytes: 64 << 20, InsertConcurrency: 4, BatchRowsMin: 10,
		UnclassifiedAttempts: 3, UnclassifiedGrace: 50 * time.Millisecond}
	if tune != nil {
		tune(&lcfg)
	}
	log := slog.New(slog.DiscardHandler)
	reg := prometheus.NewRegistry()
	lcfg.Group = r.group
	cfg := r.cfg
	backoff := pipeline.Backoff{Base: time.Millisecond, Max: 20 * time.Millisecond}
	l := newLoader(lcfg, topics{raw: cfg.RawTopic, dlq: cfg.DLQTopic}, kafka.NewLagReporter("loader", cfg.RawTopic, time.Second), backoff)
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(r.c.ListenAddrs()...), kgo.ConsumerGroup(r.group), kgo.ConsumeTopics(cfg.RawTopic),
		kgo.DisableAutoCommit(), kgo.BlockRebalanceOnPoll(), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxWait(200 * time.Millisecond), // as the loader's own: a resumed partition is fetched soon
		kgo.RecordDeliveryTimeout(lcfg.FlushTimeout),
		kgo.OnPartitionsAssigned(l.assigned), kgo.OnPartitionsRevoked(l.revoked),
		kgo.OnPartitionsLost(func(ctx context.Context, cl *kgo.Client, ps map[string][]int32) {
			if r.aroundLost == nil {
				l.lost(ctx, cl, ps)
				return
			}
			r.aroundLost(func() { l.lost(ctx, cl, ps) })
		})}, r.opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	l.connect(links{cl: cl, log: log, metrics: newLoaderMetrics(reg, pipeline.NewMetrics(reg)), writer: w,
		core:   delivery.NewCore(cl, delivery.NewRetrier(reg, log), cfg.EventsTopic, kafka.DefaultMaxMessageBytes, backoff),
		tokens: true, // as on a server of 22.2 or later
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	var once sync.Once
	return func() {
		once.Do(func() {
			cancel()
			<-done
			cl.CloseAllowingRebalance()
		})
	}
}

// produce puts records of job on the raw topic, for table, with payloads from payload(i).
func (r *rig) produce(t *testing.T, job, table string, n int, payload func(i int) string) {
	t.Helper()
	recs := make([]*kgo.Record, n)
	for i := range n {
		key := fmt.Sprintf("%s-%d", job, i)
		v, err := proto.Marshal(&sluicev1.Record{JobId: job, TaskId: job + "-t0", Run: "r1", Key: key, Table: table,
			Payload: []byte(payload(i)), ExtractedAt: timestamppb.Now()})
		if err != nil {
			t.Fatal(err)
		}
		recs[i] = &kgo.Record{Topic: r.cfg.RawTopic, Key: []byte(key), Value: v}
	}
	if err := r.cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

// committed returns the group's committed offsets of the raw topic, summed over partitions.
func (r *rig) committed(t *testing.T) int64 {
	t.Helper()
	offs, err := kadm.NewClient(r.cl).FetchOffsets(context.Background(), r.group)
	if err != nil {
		return 0
	}
	var sum int64
	offs.Each(func(o kadm.OffsetResponse) {
		if o.Topic == r.cfg.RawTopic && o.At > 0 {
			sum += o.At
		}
	})
	return sum
}

// letters reads n dead letters.
func (r *rig) letters(t *testing.T, n int) []*sluicev1.DeadLetter {
	t.Helper()
	return readTopic(t, r, r.cfg.DLQTopic, n, func(rec *kgo.Record) (*sluicev1.DeadLetter, error) { return dlq.Decode(rec) })
}

// events reads n job events.
func (r *rig) events(t *testing.T, n int) []*sluicev1.JobEvent {
	t.Helper()
	return readTopic(t, r, r.cfg.EventsTopic, n, events.Decode)
}

func readTopic[T any](t *testing.T, r *rig, topic string, n int, decode func(*kgo.Record) (T, error)) []T {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(r.cl.OptValue(kgo.SeedBrokers).([]string)...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var out []T
	for len(out) < n {
		fetches := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("read %d of %d records of %s", len(out), n, topic)
		}
		fetches.EachRecord(func(rec *kgo.Record) {
			v, err := decode(rec)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, v)
		})
	}
	return out
}

// eventually waits up to 10 s for cond.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func payload(i int) string { return fmt.Sprintf(`{"id":%d}`, i) }

// TestLoaderCommitsOnlyAfterInsert holds the first insert open: while it is in flight nothing is
// committed; once it returns, the commit reaches the end of the topic.
func TestLoaderCommitsOnlyAfterInsert(t *testing.T) {
	w := newFakeWriter()
	w.gate = make(chan struct{})
	r := newRig(t, w, nil)
	r.produce(t, "job", "landing", 50, payload)

	<-w.entered // an insert is in flight
	// The loader's commit, were it to come before the insert, has every chance to land meanwhile.
	deadline := time.Now().Add(500 * time.Millisecond)
	for time.Now().Before(deadline) {
		if c := r.committed(t); c != 0 {
			t.Fatalf("committed %d offsets while the insert of their rows had not returned", c)
		}
		time.Sleep(10 * time.Millisecond)
	}
	close(w.gate)
	eventually(t, "the commit to reach the end", func() bool { return r.committed(t) == 50 })
	if got := w.count("landing"); got != 50 {
		t.Fatalf("%d rows inserted, want 50", got)
	}
}

// TestLoaderSplitsARejectedBlock: ClickHouse rejects a block because of two bad rows; exactly those
// are dead-lettered with class data and the server's message, and every other row is inserted.
func TestLoaderSplitsARejectedBlock(t *testing.T) {
	w := newFakeWriter()
	w.poison = "POISON"
	r := newRig(t, w, func(c *LoaderConfig) { c.FlushInterval = 200 * time.Millisecond })
	r.produce(t, "job", "landing", 80, func(i int) string {
		if i == 7 || i == 61 {
			return fmt.Sprintf(`{"id":%d,"x":"POISON"}`, i)
		}
		return payload(i)
	})
	eventually(t, "the commit to reach the end", func() bool { return r.committed(t) == 80 })
	if got := w.count("landing"); got != 78 {
		t.Fatalf("%d rows inserted, want 78", got)
	}
	letters := r.letters(t, 2)
	for _, dl := range letters {
		key := string(dl.OriginalKey)
		if dl.ErrorClass != "data" || !strings.Contains(dl.ErrorMessage, "Cannot parse input") || (key != "job-7" && key != "job-61") {
			t.Fatalf("dead letter %s: class %s, %q", key, dl.ErrorClass, dl.ErrorMessage)
		}
	}
}

// TestLoaderHoldsOnlyTheTableThatRefuses: one table refuses its rows with a schema error; another
// table's rows on the same partitions are inserted meanwhile, the commit stops at the first held
// record, the held job is told, and after the grace its records are dead-lettered with class
// schema and the commit reaches the end.
func TestLoaderHoldsOnlyTheTableThatRefuses(t *testing.T) {
	w := newFakeWriter()
	w.refuse["bad"] = true
	grace := 700 * time.Millisecond
	r := newRig(t, w, func(c *LoaderConfig) { c.SchemaGrace = grace })
	r.produce(t, "held", "bad", 20, payload)
	r.produce(t, "other", "good", 30, payload)

	eventually(t, "the good table's rows", func() bool { return w.count("good") == 30 })
	// The other job's events may come first: every event so far is read until the held one is.
	var told *sluicev1.LoadHeld
	eventually(t, "the held job told why", func() bool {
		for _, ev := range r.events(t, int(r.end(t, r.cfg.EventsTopic))) {
			if h := ev.GetLoadHeld(); h != nil && ev.JobId == "held" {
				told = h
			}
		}
		return told != nil
	})
	if told.Table != "bad" || told.Records == 0 || !strings.Contains(told.Reason, "No such column") {
		t.Fatalf("the held job was told %v", told)
	}
	if c := r.committed(t); c >= 50 {
		t.Fatalf("committed %d of 50 offsets while 20 records were held", c)
	}
	eventually(t, "the commit to reach the end after the grace", func() bool { return r.committed(t) == 50 })
	letters := r.letters(t, 20)
	for _, dl := range letters {
		if dl.ErrorClass != "schema" || dl.JobId != "held" || !strings.Contains(dl.ErrorMessage, "No such column") {
			t.Fatalf("dead letter %+v", dl)
		}
	}
	if w.count("bad") != 0 || w.count("good") != 30 {
		t.Fatalf("rows: bad %d, good %d", w.count("bad"), w.count("good"))
	}
}

// lastOwner plays a partition's last owner before the loader joins: it puts n records of table
// users on the raw topic, record i on partition partitionOf(i), and commits partition 0 at offset
// at with metadata.
func lastOwner(t *testing.T, n int, partitionOf func(i int) int32, at int64, metadata string) func(*rig) {
	return func(r *rig) {
		cl, err := kgo.NewClient(kgo.SeedBrokers(r.cl.OptValue(kgo.SeedBrokers).([]string)...), kgo.RecordPartitioner(kgo.ManualPartitioner()))
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		for i := range n {
			v, _ := proto.Marshal(&sluicev1.Record{JobId: "j", TaskId: "j-t0", Run: "r1", Key: fmt.Sprint(i), Table: "users",
				Payload: []byte(payload(i)), ExtractedAt: timestamppb.Now()})
			rec := &kgo.Record{Topic: r.cfg.RawTopic, Partition: partitionOf(i), Value: v}
			if err := cl.ProduceSync(context.Background(), rec).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
		var offsets kadm.Offsets
		offsets.Add(kadm.Offset{Topic: r.cfg.RawTopic, Partition: 0, At: at, LeaderEpoch: -1, Metadata: metadata})
		if _, err := kadm.NewClient(cl).CommitOffsets(context.Background(), r.group, offsets); err != nil {
			t.Fatal(err)
		}
	}
}

// TestLoaderTakesOverBlocks starts a loader on a partition whose last owner recorded, in its
// commit, a block inserted and a block planned: the records of the inserted one are not inserted
// again, the planned one is formed again from exactly its records, and the rest makes a new block.
func TestLoaderTakesOverBlocks(t *testing.T) {
	w := newFakeWriter()
	r := newRigAfter(t, w, nil, lastOwner(t, 60, func(int) int32 { return 0 }, 10,
		"sluice1 i:users::10-19@1700000000 p:users::20-44@1700000001"))
	eventually(t, "every record past the inserted block in", func() bool { return w.count("users") == 40 })
	eventually(t, "the commit at the end", func() bool { return r.committed(t) == 60 })
	w.mu.Lock()
	defer w.mu.Unlock()
	if fmt.Sprint(w.ranges) != "[[0 20 44] [0 45 59]]" {
		t.Fatalf("blocks %v, want the planned 20-44 again, then 45-59", w.ranges)
	}
	for i := 10; i < 20; i++ {
		if _, in := w.rows["users"][fmt.Sprint(i)]; in {
			t.Fatalf("record %d of the inserted block was inserted again", i)
		}
	}
}

// TestLoaderReadsOnForAPlannedBlock takes over a partition whose planned block is ten times what
// the loader may hold: it reads on, that partition alone, until the block is whole, and inserts
// it as one block.
func TestLoaderReadsOnForAPlannedBlock(t *testing.T) {
	w := newFakeWriter()
	r := newRigAfter(t, w, nil, lastOwner(t, 1050, func(i int) int32 { return int32(i / 1000) }, 0,
		"sluice1 p:users::0-999@1700000000"))
	eventually(t, "every record in", func() bool { return w.count("users") == 1050 })
	eventually(t, "the commit at the end", func() bool { return r.committed(t) == 1050 })
	w.mu.Lock()
	defer w.mu.Unlock()
	if !slices.Contains(w.ranges, [3]int64{0, 0, 999}) {
		t.Fatalf("blocks %v, want the planned 0-999 whole", w.ranges)
	}
}

// TestLoaderSlowTableDoesNotHoldOthers holds every insert into one table open: another table's
// records, polled after it, are inserted and reported meanwhile, and the commit waits for the held
// table's records, which come first on every partition.
func TestLoaderSlowTableDoesNotHoldOthers(t *testing.T) {
	w := newFakeWriter()
	w.hold["slow"] = make(chan struct{})
	r := newRig(t, w, nil)
	r.produce(t, "slow", "slow", 50, payload)
	<-w.holding // the slow table's insert is in flight
	r.produce(t, "fast", "fast", 60, payload)

	eventually(t, "the fast table's rows while the slow insert is held", func() bool { return w.count("fast") == 60 })
	loaded := uint64(0)
	for loaded < 60 {
		loaded = 0
		for _, ev := range r.events(t, 1) {
			if l := ev.GetRecordsLoaded(); l != nil && ev.JobId == "fast" {
				loaded += l.Records
			}
		}
	}
	// The fast table's events are out, and its commit came before them: nothing may be committed.
	if got, c := w.count("slow"), r.committed(t); got != 0 || c != 0 {
		t.Fatalf("slow table has %d rows and %d offsets are committed while its insert is held", got, c)
	}
	close(w.hold["slow"])
	eventually(t, "the commit at the end", func() bool { return r.committed(t) == 110 })
	if w.count("slow") != 50 {
		t.Fatalf("slow table has %d rows, want 50", w.count("slow"))
	}
}

// TestLoaderShrinksBlocks: ClickHouse refuses blocks of more than 30 rows as too many partitions
// for one insert. The refused blocks are planned again, halved, and the table's blocks stay at
// that size: every record lands once, none is dead-lettered, and no block is refused twice.
func TestLoaderShrinksBlocks(t *testing.T) {
	w := newFakeWriter()
	w.maxRows = 30
	r := newRig(t, w, nil)
	r.produce(t, "job", "landing", 200, payload)
	eventually(t, "the commit at the end", func() bool { return r.committed(t) == 200 })
	r.produce(t, "job", "landing", 1000, func(i int) string { return payload(1000 + i) })
	eventually(t, "the commit at the end", func() bool { return r.committed(t) == 1200 })

	w.mu.Lock()
	defer w.mu.Unlock()
	refused := w.blocks - w.landed
	covered := map[[2]int64]int{}
	for _, rg := range w.ranges {
		for o := rg[1]; o <= rg[2]; o++ {
			covered[[2]int64{rg[0], o}]++
		}
	}
	// 100 rows refused, then 50; 25 fits.
	if refused == 0 || refused > 2 || len(covered) != 1200 {
		t.Fatalf("%d blocks refused, %d offsets in blocks: want 1 or 2 refusals, and 1200 offsets", refused, len(covered))
	}
	for o, n := range covered {
		if n != 1 {
			t.Fatalf("offset %v inserted %d times", o, n)
		}
	}
}

// TestLoaderShrinksBlocksThatTimeOut: inserts of more than 30 rows run out of time. The block that
// timed out is tried again whole, then, timed out twice, planned again smaller; every record lands.
// Once inserts are fast again, the blocks grow back while the table is behind.
func TestLoaderShrinksBlocksThatTimeOut(t *testing.T) {
	w := newFakeWriter()
	w.slowRows = 30
	r := newRig(t, w, nil)
	r.produce(t, "job", "landing", 100, payload)
	eventually(t, "the commit at the end", func() bool { return r.committed(t) == 100 })
	w.mu.Lock()
	timedOut, shrunk := w.blocks-w.landed, len(w.ranges)
	for _, rg := range w.ranges {
		if n := rg[2] - rg[1] + 1; n > 30 {
			t.Errorf("block %v of %d rows went in while such blocks time out", rg, n)
		}
	}
	w.slowRows = 0
	w.mu.Unlock()
	if timedOut < 2 || w.count("landing") != 100 {
		t.Fatalf("%d inserts timed out, %d rows: want the block tried twice, then every row", timedOut, w.count("landing"))
	}

	r.produce(t, "job", "landing", 2000, func(i int) string { return payload(1000 + i) })
	eventually(t, "the commit at the end", func() bool { return r.committed(t) == 2100 })
	w.mu.Lock()
	defer w.mu.Unlock()
	largest := int64(0)
	for _, rg := range w.ranges[shrunk:] {
		largest = max(largest, rg[2]-rg[1]+1)
	}
	if largest <= 30 {
		t.Fatalf("the largest block once inserts were fast again is %d rows, want blocks grown past 30", largest)
	}
}

// TestLoaderRecordsBlocksInsertedAfterTheirLetters: rows of the blocks are rejected as bad data
// while the dead-letter topic refuses every letter. The blocks go in, but no commit may record
// them inserted before their letters are in: the member that takes over after the first one is
// stopped dead-letters every rejected record.
func TestLoaderRecordsBlocksInsertedAfterTheirLetters(t *testing.T) {
	w := newFakeWriter()
	w.poison = "POISON"
	var failDLQ atomic.Bool
	var refusedLetters atomic.Int64
	failDLQ.Store(true)
	r := newRigAfter(t, w, nil, func(r *rig) {
		topics, err := kadm.NewClient(r.cl).ListTopics(context.Background(), r.cfg.DLQTopic)
		if err != nil {
			t.Fatal(err)
		}
		dlqID := topics[r.cfg.DLQTopic].ID // produce requests name topics by id from Kafka 4
		r.c.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
			r.c.KeepControl()
			pr := req.(*kmsg.ProduceRequest)
			toDLQ := slices.ContainsFunc(pr.Topics, func(tp kmsg.ProduceRequestTopic) bool {
				return tp.Topic == r.cfg.DLQTopic || tp.TopicID == dlqID
			})
			if !failDLQ.Load() || !toDLQ {
				return nil, nil, false
			}
			refusedLetters.Add(1)
			return kafkatest.Refuse(pr, kerr.NotEnoughReplicas.Code), nil, true // retried
		})
		r.produce(t, "job", "landing", 200, func(i int) string {
			if i%10 == 3 {
				return fmt.Sprintf(`{"id":%d,"x":"POISON"}`, i)
			}
			return payload(i)
		})
	})
	eventually(t, "rows in and their neighbours' letters refused", func() bool { return w.count("landing") > 0 && refusedLetters.Load() > 0 })
	r.stop() // while the letters are still refused
	if c := r.committed(t); c != 0 {
		t.Fatalf("%d offsets committed while the letters of their rejected rows were refused", c)
	}

	failDLQ.Store(false)
	w2 := newFakeWriter()
	w2.poison = "POISON"
	t.Cleanup(r.start(t, w2, nil))
	eventually(t, "the commit at the end", func() bool { return r.committed(t) == 200 })
	keys := map[string]bool{}
	for _, dl := range r.letters(t, int(r.end(t, r.cfg.DLQTopic))) {
		keys[string(dl.OriginalKey)] = true
	}
	if len(keys) != 20 {
		t.Fatalf("%d of the 20 rejected records dead-lettered", len(keys))
	}
}

// TestLoaderIsolatesUnclassifiedFailures: a block fails with an error of a code sluice does not
// classify (a view that throws on some rows): it is retried as it is until the bounds pass, then
// split down to the rows that still fail, which are dead-lettered with class unclassified; every
// other row is inserted and the commit reaches the end.
func TestLoaderIsolatesUnclassifiedFailures(t *testing.T) {
	w := newFakeWriter()
	w.throwOn = "THROW"
	r := newRig(t, w, nil)
	r.produce(t, "job", "landing", 200, func(i int) string {
		if i%40 == 7 {
			return fmt.Sprintf(`{"id":%d,"x":"THROW"}`, i)
		}
		return payload(i)
	})
	eventually(t, "the commit at the end", func() bool { return r.committed(t) == 200 })
	if got := w.count("landing"); got != 195 {
		t.Fatalf("%d rows inserted, want 195", got)
	}
	letters := r.letters(t, 5)
	for _, dl := range letters {
		if dl.ErrorClass != "unclassified" || !strings.Contains(string(dl.Payload), "THROW") || !strings.Contains(dl.ErrorMessage, "code: 395") {
			t.Fatalf("letter of class %s: %s, %q", dl.ErrorClass, dl.Payload, dl.ErrorMessage)
		}
	}
	if end := r.end(t, r.cfg.DLQTopic); end != 5 {
		t.Fatalf("%d dead letters, want 5", end)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.blocks < 3+5 { // the bounded attempts, then at least one failing insert per bad row
		t.Fatalf("%d inserts: the failure was not tried again before the rows were isolated", w.blocks)
	}
}

// TestLoaderLostCommitsNothing loses the group session while an insert is in the air: the member
// commits nothing under the generation it lost, though the insert returns as it handles the loss
// (once it has, or 200 ms into it: a member that waited for its flights to land would commit what
// they did); the partitions' records are loaded and committed once they are owned again.
func TestLoaderLostCommitsNothing(t *testing.T) {
	w := newFakeWriter()
	w.gate = make(chan struct{})
	var (
		mu          sync.Mutex
		lostGen     = int32(-1)
		lateCommits []string // commits under the lost generation, made after the loss
		laterGen    bool
	)
	r := newRigAfter(t, w, nil, func(r *rig) {
		r.opts = []kgo.Opt{kgo.SessionTimeout(6 * time.Second), kgo.HeartbeatInterval(100 * time.Millisecond)}
		var once sync.Once
		r.aroundLost = func(lost func()) {
			handled := make(chan struct{})
			go func() {
				select {
				case <-handled:
				case <-time.After(200 * time.Millisecond):
				}
				once.Do(func() { close(w.gate) })
			}()
			lost()
			close(handled)
		}
		r.c.ControlKey(int16(kmsg.OffsetCommit), func(req kmsg.Request) (kmsg.Response, error, bool) {
			r.c.KeepControl()
			oc := req.(*kmsg.OffsetCommitRequest)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case lostGen < 0:
			case oc.Generation == lostGen:
				for _, tp := range oc.Topics {
					for _, p := range tp.Partitions {
						lateCommits = append(lateCommits, fmt.Sprintf("%d@%d", p.Partition, p.Offset))
					}
				}
			case oc.Generation > lostGen:
				laterGen = true
			}
			return nil, nil, false
		})
	})
	r.produce(t, "job", "landing", 50, payload)
	<-w.entered // an insert is in the air

	// The next heartbeat is told the member is unknown: its session, and its partitions, are gone.
	r.c.ControlKey(int16(kmsg.Heartbeat), func(req kmsg.Request) (kmsg.Response, error, bool) {
		hb := req.(*kmsg.HeartbeatRequest)
		resp := hb.ResponseKind().(*kmsg.HeartbeatResponse)
		resp.ErrorCode = kerr.UnknownMemberID.Code
		mu.Lock()
		lostGen = hb.Generation
		mu.Unlock()
		return resp, nil, true
	})
	// The member rejoins once the broker gives up on its lost session (6 s).
	deadline := time.Now().Add(30 * time.Second)
	for !func() bool {
		mu.Lock()
		defer mu.Unlock()
		if len(lateCommits) > 0 {
			t.Fatalf("committed %v under generation %d, after the session was lost", lateCommits, lostGen)
		}
		return laterGen && r.committed(t) == 50
	}() {
		if time.Now().After(deadline) {
			t.Fatalf("no commit under a later generation at the end after the session was lost (generation %d)", lostGen)
		}
		time.Sleep(20 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(lateCommits) > 0 {
		t.Fatalf("committed %v under generation %d, after the session was lost", lateCommits, lostGen)
	}
	if got := w.count("landing"); got != 50 {
		t.Fatalf("%d rows inserted, want 50", got)
	}
}

// end returns the end offsets of topic, summed over partitions.
func (r *rig) end(t *testing.T, topic string) int64 {
	t.Helper()
	ends, err := kadm.NewClient(r.cl).ListEndOffsets(context.Background(), topic)
	if err != nil {
		t.Fatal(err)
	}
	var sum int64
	ends.Each(func(o kadm.ListedOffset) { sum += o.Offset })
	return sum
}

// produceRecords puts envelopes on the rig's raw topic, each keyed by its record key.
func (r *rig) produceRecords(t *testing.T, envs ...*sluicev1.Record) {
	t.Helper()
	recs := make([]*kgo.Record, len(envs))
	for i, env := range envs {
		v, err := proto.Marshal(env)
		if err != nil {
			t.Fatal(err)
		}
		recs[i] = &kgo.Record{Topic: r.cfg.RawTopic, Key: []byte(env.Key), Value: v}
	}
	if err := r.cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

// TestLoaderTokensNameTopicAndContent loads a raw topic into a table that drops a block whose
// token it saw, then loads the same table from a second raw topic of the same name (a topic
// created again, or a second deployment): its records sit at the same offsets of the same
// partitions with other payloads, and every one of them lands. With tokens made of the topic's
// name and the offsets alone, the server dropped them all as repeats.
func TestLoaderTokensNameTopicAndContent(t *testing.T) {
	w := newFakeWriter()
	w.dedup = true
	first := newRig(t, w, nil)
	first.produce(t, "job", "landing", 40, payload)
	eventually(t, "the first topic's commit to reach the end", func() bool { return first.committed(t) == 40 })
	first.stop()

	second := newRig(t, w, nil)
	second.produce(t, "job", "landing", 40, func(i int) string { return fmt.Sprintf(`{"id":%d,"again":true}`, i) })
	eventually(t, "the second topic's commit to reach the end", func() bool { return second.committed(t) == 40 })
	w.mu.Lock()
	defer w.mu.Unlock()
	for i := range 40 {
		if got, want := w.rows["landing"][fmt.Sprintf("job-%d", i)], fmt.Sprintf(`{"id":%d,"again":true}`, i); got != want {
			t.Fatalf("row job-%d holds %s, want %s: the second topic's block was dropped as a repeat", i, got, want)
		}
	}
}

// TestLoaderToken makes the tokens of blocks: the same records (and load time) always the same,
// another payload, load time or raw topic another.
func TestLoaderToken(t *testing.T) {
	l := newInserter("raw", time.Second, pipeline.Backoff{})
	id := "f0e1d2c300004000800000000000000a"
	l.topicID.Store(&id)
	items := func(payload string) []*item {
		out := make([]*item, 3)
		for i := range out {
			v, _ := proto.Marshal(&sluicev1.Record{JobId: "job", Key: fmt.Sprint(i), Payload: []byte(payload)})
			out[i] = &item{partition: 1, offset: int64(10 + i), raw: v, schema: "00aa11bb22cc33dd"}
		}
		return out
	}
	at := time.Unix(1700000000, 0)
	base := l.token("t", items("{}"), at)
	if !strings.HasPrefix(base, "sluice2-t-00aa11bb22cc33dd-raw-"+id+"-1-10-12-") {
		t.Fatalf("token %s", base)
	}
	if again := l.token("t", items("{}"), at); again != base {
		t.Fatalf("the same records made %s, then %s", base, again)
	}
	other := "f0e1d2c300004000800000000000000b"
	for name, tok := range map[string]string{
		"payload":   l.token("t", items(`{"a":1}`), at),
		"load time": l.token("t", items("{}"), at.Add(time.Second)),
		"table":     l.token("u", items("{}"), at),
		"topic": func() string {
			l2 := newInserter("raw", time.Second, pipeline.Backoff{})
			l2.topicID.Store(&other)
			return l2.token("t", items("{}"), at)
		}(),
	} {
		if tok == base {
			t.Errorf("another %s made the same token %s", name, tok)
		}
	}
}

// TestLoaderVersionFromPlace loads a key twice within one run of its job, the second time from an
// extractor whose clock is an hour behind: the row kept (the one of the highest version, as
// ReplacingMergeTree keeps it) is the second, the later on the raw topic. A version from the
// extraction time kept the first.
func TestLoaderVersionFromPlace(t *testing.T) {
	w := newFakeWriter()
	r := newRig(t, w, nil)
	now := time.Now()
	job := "users-" + now.UTC().Format("20060102t150405") + "-abcdef"
	env := func(payload string, at time.Time) *sluicev1.Record {
		return &sluicev1.Record{JobId: job, TaskId: job + "-t0000", Run: "r1", Key: "k", Table: "landing", Payload: []byte(payload),
			ExtractedAt: timestamppb.New(at)}
	}
	r.produceRecords(t, env(`{"v":1}`, now))
	eventually(t, "the first row", func() bool { return w.count("landing") == 1 })
	r.produceRecords(t, env(`{"v":2}`, now.Add(-time.Hour)))
	eventually(t, "the commit to reach the end", func() bool { return r.committed(t) == 2 })
	w.mu.Lock()
	defer w.mu.Unlock()
	if got := w.rows["landing"]["k"]; got != `{"v":2}` {
		t.Fatalf("row k holds %s, want the record extracted again", got)
	}
}

// TestLoaderHoldsATableWhoseEveryRowFails: an unclassified failure of every row (a view that
// throws on all of them, a server that takes no insert) is the table's, not the rows': past the
// bounds the split finds every row failing alone, and the table is held like a schema failure
// instead of dead-lettering every healthy record; nothing is committed meanwhile.
func TestLoaderHoldsATableWhoseEveryRowFails(t *testing.T) {
	w := newFakeWriter()
	w.throwOn = `"id"` // every payload
	r := newRig(t, w, nil)
	r.produce(t, "job", "landing", 50, payload)
	// The job hears that its table holds its records: the loader tells it so, instead of letters.
	held := r.events(t, 1)[0].GetLoadHeld()
	if held == nil || held.Records != 50 || !strings.Contains(held.Reason, "every row of the block failed on its own") {
		t.Fatalf("the job heard %v, want its 50 records held", held)
	}
	if c := r.committed(t); c != 0 {
		t.Fatalf("%d offsets committed while every row failed", c)
	}
	if end := r.end(t, r.cfg.DLQTopic); end != 0 {
		t.Fatalf("%d healthy records dead-lettered for a failure of the table", end)
	}
}
