package deploy

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	"github.com/sluicedata/sluice/pkg/chconn"
	"github.com/sluicedata/sluice/pkg/chsink"
	"github.com/sluicedata/sluice/pkg/demosource"
	"github.com/sluicedata/sluice/pkg/dlq"
	"github.com/sluicedata/sluice/pkg/events"
	"github.com/sluicedata/sluice/pkg/kafka"
	"github.com/sluicedata/sluice/pkg/stacktest"
	sluicev1 "github.com/sluicedata/sluice/proto/sluice/v1"
)

// The fault suite's machinery: a tail that reads a topic as it grows, the invariant monitor that
// samples the groups' commits during a case, and the checker that ends every case.

// tail reads a topic from its start, record by record, as far as it ends at each catchUp.
type topicTail struct {
	topic string
	cl    *kgo.Client
	next  map[int32]int64
	fn    func(*kgo.Record)
}

func newTail(t testing.TB, k kafka.Config, topic string, fn func(*kgo.Record)) *topicTail {
	t.Helper()
	cl, err := kafka.NewClient(k, "chaos-monitor", stacktest.Logger(t), nil,
		kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return &topicTail{topic: topic, cl: cl, next: map[int32]int64{}, fn: fn}
}

// catchUp reads what the topic holds now.
func (tl *topicTail) catchUp(ctx context.Context) error {
	ends, err := kadm.NewClient(tl.cl).ListEndOffsets(ctx, tl.topic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return fmt.Errorf("list the end of %s: %w", tl.topic, err)
	}
	behind := func() bool {
		b := false
		ends.Each(func(o kadm.ListedOffset) { b = b || tl.next[o.Partition] < o.Offset })
		return b
	}
	for behind() {
		pollCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
		fetches := tl.cl.PollFetches(pollCtx)
		expired := pollCtx.Err()
		cancel()
		if expired != nil {
			return fmt.Errorf("read %s to its end: %w", tl.topic, expired)
		}
		fetches.EachRecord(func(r *kgo.Record) {
			tl.next[r.Partition] = r.Offset + 1
			tl.fn(r)
		})
	}
	return nil
}

// monitor samples, during a case, the committed offsets of the extractor and loader groups and
// checks each against what is durable: a committed raw offset needs every record before it in
// ClickHouse or in the dead-letter topic; a committed task needs its end (extracted or
// dead-lettered) published, which the extractor does only once every record of the task is
// acknowledged. It reads the commits first and the evidence after, so a pass is sound.
type monitor struct {
	t     testing.TB
	p     *deployment
	table string
	adm   *kadm.Client

	raw, tasks, letters, evs *topicTail
	// rawKeys are the raw records' keys by partition and offset ("" for one that did not decode).
	rawKeys map[int32][]string
	rawBase map[int32]int64
	// runs counts the raw records of each task run.
	runs map[string]int
	// taskIDs are the tasks by partition and offset of the tasks topic.
	taskIDs  map[int32]map[int64]string
	finished map[string]*sluicev1.JobEvent // task id → its first end
	// deadRaw and deadTasks are the originals the dead letters name.
	deadRaw, deadTasks map[[2]int64]bool

	checkedRaw, checkedTasks map[int32]int64
	samples                  int
	skipped                  string // why the last sample was not taken
	violations               []string
	stop                     func()
	done                     chan struct{}
}

func watch(t testing.TB, p *deployment, table string) *monitor {
	t.Helper()
	cl, err := kafka.NewClient(p.kafka, "chaos-monitor-admin", stacktest.Logger(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	m := &monitor{t: t, p: p, table: table, adm: kadm.NewClient(cl),
		rawKeys: map[int32][]string{}, rawBase: map[int32]int64{}, runs: map[string]int{},
		taskIDs: map[int32]map[int64]string{}, finished: map[string]*sluicev1.JobEvent{},
		deadRaw: map[[2]int64]bool{}, deadTasks: map[[2]int64]bool{},
		checkedRaw: map[int32]int64{}, checkedTasks: map[int32]int64{}, done: make(chan struct{})}
	m.raw = newTail(t, p.kafka, p.kafka.RawTopic, func(r *kgo.Record) {
		if _, ok := m.rawBase[r.Partition]; !ok {
			m.rawBase[r.Partition] = r.Offset
		}
		var env sluicev1.Record
		key := ""
		if proto.Unmarshal(r.Value, &env) == nil {
			key = env.Key
			m.runs[env.TaskId+"/"+env.Run]++
		}
		for int64(len(m.rawKeys[r.Partition]))+m.rawBase[r.Partition] < r.Offset {
			m.rawKeys[r.Partition] = append(m.rawKeys[r.Partition], "")
		}
		m.rawKeys[r.Partition] = append(m.rawKeys[r.Partition], key)
	})
	m.tasks = newTail(t, p.kafka, p.kafka.TasksTopic, func(r *kgo.Record) {
		var task sluicev1.Task
		if proto.Unmarshal(r.Value, &task) == nil {
			if m.taskIDs[r.Partition] == nil {
				m.taskIDs[r.Partition] = map[int64]string{}
			}
			m.taskIDs[r.Partition][r.Offset] = task.TaskId
		}
	})
	m.letters = newTail(t, p.kafka, p.kafka.DLQTopic, func(r *kgo.Record) {
		dl, err := dlq.Decode(r)
		if err != nil {
			return
		}
		at := [2]int64{int64(dl.OriginalPartition), dl.OriginalOffset}
		switch dl.OriginalTopic {
		case p.kafka.RawTopic:
			m.deadRaw[at] = true
		case p.kafka.TasksTopic:
			if dl.ErrorClass != "too_large" { // a record's stub names its task, not the task's end
				m.deadTasks[at] = true
			}
		}
	})
	m.evs = newTail(t, p.kafka, p.kafka.EventsTopic, func(r *kgo.Record) {
		ev, err := events.Decode(r)
		if err != nil {
			return
		}
		var task string
		switch e := ev.Event.(type) {
		case *sluicev1.JobEvent_TaskExtracted:
			task = e.TaskExtracted.TaskId
		case *sluicev1.JobEvent_TaskDeadLettered:
			task = e.TaskDeadLettered.TaskId
		default:
			return
		}
		if m.finished[task] == nil {
			m.finished[task] = ev
		}
	})
	ctx, cancel := context.WithCancel(context.Background())
	m.stop = cancel
	go func() {
		defer close(m.done)
		for ctx.Err() == nil {
			m.sample(ctx)
			select {
			case <-ctx.Done():
			case <-time.After(300 * time.Millisecond):
			}
		}
	}()
	return m
}

// committed returns a group's committed offsets of topic; nil when the broker could not be asked.
func (m *monitor) committed(ctx context.Context, group, topic string) map[int32]int64 {
	offs, err := m.adm.FetchOffsets(ctx, group)
	if err != nil {
		return nil
	}
	out := map[int32]int64{}
	offs.Each(func(o kadm.OffsetResponse) {
		if o.Topic == topic && o.Err == nil && o.At >= 0 {
			out[o.Partition] = o.At
		}
	})
	return out
}

func (m *monitor) sample(ctx context.Context) {
	rawCommitted := m.committed(ctx, m.p.env["SLUICE_LOADER_GROUP"], m.p.kafka.RawTopic)
	taskCommitted := m.committed(ctx, m.p.env["SLUICE_EXTRACTOR_GROUP"], m.p.kafka.TasksTopic)
	if rawCommitted == nil || taskCommitted == nil {
		m.skipped = "the groups' commits could not be fetched"
		return // the broker is away: nothing to judge
	}
	for _, tl := range []*topicTail{m.raw, m.tasks, m.letters, m.evs} {
		if err := tl.catchUp(ctx); err != nil {
			m.skipped = err.Error()
			return
		}
	}
	keys, err := m.keys(ctx)
	if err != nil {
		m.skipped = err.Error()
		return
	}
	m.samples++
	for p, c := range rawCommitted {
		for o := max(m.checkedRaw[p], m.rawBase[p]); o < c; o++ {
			i := o - m.rawBase[p]
			if i >= int64(len(m.rawKeys[p])) {
				m.violate("loader committed raw %d/%d, past the records the topic holds", p, c)
				break
			}
			if key := m.rawKeys[p][i]; !m.deadRaw[[2]int64{int64(p), o}] && (key == "" || !keys[key]) {
				m.violate("loader committed raw %d/%d while the record at %d (key %q) is neither in ClickHouse nor dead-lettered", p, c, o, key)
			}
		}
		m.checkedRaw[p] = max(m.checkedRaw[p], c)
	}
	for p, c := range taskCommitted {
		for o := m.checkedTasks[p]; o < c; o++ {
			id, known := m.taskIDs[p][o]
			if !known || m.deadTasks[[2]int64{int64(p), o}] || m.finished[id] != nil {
				continue
			}
			m.violate("extractor committed task %d/%d while task %s at %d has not published its end", p, c, id, o)
		}
		m.checkedTasks[p] = max(m.checkedTasks[p], c)
	}
}

// keys returns the keys in the case's table now. On a cluster they are read from the local table
// of every node, since a replica read through the Distributed table may not have caught up yet; a
// node that does not answer skips the sample.
func (m *monitor) keys(ctx context.Context) (map[string]bool, error) {
	if len(m.p.nodes) == 0 {
		return m.keysAt(ctx, m.p.conn, m.table)
	}
	out := map[string]bool{}
	for _, addr := range m.p.nodes {
		cfg := m.p.ch
		cfg.Addr, cfg.DialTimeout = []string{addr}, 2*time.Second
		conn, err := chconn.Open(ctx, cfg, stacktest.Logger(m.t))
		if err != nil {
			return nil, fmt.Errorf("node %s: %w", addr, err)
		}
		keys, err := m.keysAt(ctx, conn, m.table+chsink.LocalSuffix)
		conn.Close()
		if err != nil {
			return nil, fmt.Errorf("node %s: %w", addr, err)
		}
		for k := range keys {
			out[k] = true
		}
	}
	return out, nil
}

func (m *monitor) keysAt(ctx context.Context, conn *chconn.Conn, table string) (map[string]bool, error) {
	qctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	rows, err := conn.Query(qctx, "SELECT DISTINCT key FROM `"+table+"`")
	if err != nil {
		if strings.Contains(err.Error(), "doesn't exist") {
			return nil, nil // no table yet: no key
		}
		return nil, fmt.Errorf("read the keys: %w", err)
	}
	defer rows.Close()
	out := map[string]bool{}
	for rows.Next() {
		var k string
		if rows.Scan(&k) == nil {
			out[k] = true
		}
	}
	return out, rows.Err()
}

func (m *monitor) violate(format string, args ...any) {
	if len(m.violations) < 20 {
		m.violations = append(m.violations, fmt.Sprintf(format, args...))
	}
}

// finish stops the monitor after a last sample and fails the test on any violation; it also checks
// that every task end claims no more records than its run put on the raw topic.
func (m *monitor) finish() string {
	m.t.Helper()
	m.stop()
	<-m.done
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	m.sample(ctx)
	for id, ev := range m.finished {
		if x := ev.GetTaskExtracted(); x != nil && uint64(m.runs[id+"/"+x.Run])+x.DeadLettered < x.Records {
			m.violate("task %s ended claiming %d records of run %s; the raw topic holds %d of it", id, x.Records, x.Run, m.runs[id+"/"+x.Run])
		}
	}
	if len(m.violations) > 0 {
		m.t.Fatalf("invariant monitor, %d samples: %s", m.samples, strings.Join(m.violations, "; "))
	}
	if m.samples == 0 {
		m.t.Fatalf("invariant monitor took no sample: %s", m.skipped)
	}
	return fmt.Sprintf("monitor %d samples, no violation", m.samples)
}

// want is what a case must end with.
type want struct {
	records int64 // the source's records 0..records-1
	size    int
	// malformedEvery is the injected bad input: exactly those records are dead-lettered.
	malformedEvery int64
	state          string
}

// verify is the checker every case ends with: every expected key exactly once after FINAL or in the
// dead-letter topic with a reason, the dead letters exactly the injected bad input, and the job's
// state truthful.
func verify(t testing.TB, p *deployment, table string, j job, w want) string {
	t.Helper()
	if j.State != w.state {
		t.Fatalf("job ended %s, want %s: %+v", j.State, w.state, j)
	}
	got := p.rows(t, table) // fails on a key twice after FINAL
	// Dead letters are counted by what they hold: a redelivered batch or a task run again letters
	// the same bad record twice, at other offsets.
	lettered := map[string]bool{}
	for _, dl := range p.deadLetters(t) {
		if dl.Stage != sluicev1.DeadLetter_STAGE_LOAD || dl.ErrorMessage == "" {
			t.Fatalf("dead letter %+v: want only load-stage letters with a reason", dl)
		}
		i, err := strconv.ParseInt(string(dl.OriginalKey), 10, 64)
		if len(dl.OriginalKey) > 0 && err == nil && !(w.malformedEvery > 0 && demosource.IsMalformed(i, w.malformedEvery)) {
			t.Fatalf("healthy record %d was dead-lettered (%s): %s", i, dl.ErrorClass, dl.ErrorMessage)
		}
		lettered[string(dl.PayloadSha256)] = true
	}
	var bad int64
	for i := range w.records {
		key := strconv.FormatInt(i, 10)
		payload, in := got[key]
		switch isBad := w.malformedEvery > 0 && demosource.IsMalformed(i, w.malformedEvery); {
		case isBad && in:
			t.Fatalf("malformed record %d is in ClickHouse", i)
		case isBad:
			bad++
		case !in:
			t.Fatalf("record %d is neither in ClickHouse nor dead-lettered", i)
		case payload != string(demosource.Record(i, w.size)):
			t.Fatalf("record %d differs from what the source served", i)
		}
	}
	if int64(len(lettered)) != bad || int64(len(got)) != w.records-bad {
		t.Fatalf("%d rows and %d distinct dead letters, want %d rows and the %d malformed records", len(got), len(lettered), w.records-bad, bad)
	}
	if j.State == "succeeded" && (j.Records.Loaded+j.Records.DeadLettered != uint64(w.records) || j.Records.Loaded != uint64(len(got))) {
		t.Fatalf("job says %+v; ClickHouse holds %d of %d records", j.Records, len(got), w.records)
	}
	return fmt.Sprintf("%d keys exact, %d dead letters (the injected bad records), job %s", len(got), len(lettered), j.State)
}

// report collects the suite's result lines, and writes them to SLUICE_CHAOS_RESULTS when set.
type report struct {
	mu    sync.Mutex
	lines []string
}

func (r *report) add(t testing.TB, id, name string, began time.Time, detail func() string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	result := "FAIL"
	d := ""
	if !t.Failed() {
		result, d = "PASS", detail()
	}
	line := fmt.Sprintf("%s %s: %s in %s; %s", id, name, result, time.Since(began).Round(time.Second), d)
	r.lines = append(r.lines, line)
	t.Log(line)
}

func (r *report) write(t testing.TB) {
	path := os.Getenv("SLUICE_CHAOS_RESULTS")
	if path == "" {
		return
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Error(err)
		return
	}
	if err := os.WriteFile(path, []byte(strings.Join(r.lines, "\n")+"\n"), 0o644); err != nil {
		t.Error(err)
	}
}
