package deploy

import (
	"bufio"
	"bytes"
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicedata/sluice/pkg/chconn"
	"github.com/sluicedata/sluice/pkg/demosource"
	"github.com/sluicedata/sluice/pkg/dlq"
	"github.com/sluicedata/sluice/pkg/kafka"
	"github.com/sluicedata/sluice/pkg/stacktest"
	sluicev1 "github.com/sluicedata/sluice/proto/sluice/v1"
)

// The end-to-end tests run the services as the processes users run, built from this tree, against
// the stack's real Kafka and ClickHouse, with the demo source in-process.

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// binaries builds planner, extractor, loader and sluicectl once per test run.
func binaries(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "sluice-e2e-bin-")
		if buildErr != nil {
			return
		}
		cmd := exec.Command("go", "build", "-o", binDir+"/",
			"github.com/sluicedata/sluice/services/planner",
			"github.com/sluicedata/sluice/services/extractor",
			"github.com/sluicedata/sluice/services/loader",
			"github.com/sluicedata/sluice/services/sluicectl")
		cmd.Dir = repoRoot(t)
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binDir
}

// proc is one service process.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan error
}

// start runs a service binary with env added to a clean environment; its JSON log goes to a file
// that the test prints when it fails.
func start(t testing.TB, name string, env map[string]string) *proc {
	t.Helper()
	bin := filepath.Join(binaries(t), strings.SplitN(name, "-", 2)[0])
	logPath := filepath.Join(t.TempDir(), name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan error, 1)}
	go func() { p.done <- cmd.Wait(); f.Close() }()
	t.Cleanup(func() {
		keep := os.Getenv("SLUICE_TEST_LOGS")
		if t.Failed() && keep != "" && p.running() {
			// A failed case keeps the goroutines of what was still running: SIGQUIT dumps them.
			p.stop(t, syscall.SIGQUIT)
		}
		p.stop(t, syscall.SIGTERM)
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("--- %s log (last 6000 bytes) ---\n%s", name, tail(b, 6000))
			if keep != "" {
				dst := filepath.Join(keep, strings.NewReplacer("/", "_", " ", "_").Replace(t.Name())+"-"+name+".log")
				if err := os.MkdirAll(keep, 0o755); err == nil {
					_ = os.WriteFile(dst, b, 0o644)
					t.Logf("the whole %s log: %s", name, dst)
				}
			}
		}
	})
	return p
}

// stop sends sig and waits for the process to exit.
func (p *proc) stop(t testing.TB, sig syscall.Signal) {
	if p.cmd.ProcessState != nil {
		return
	}
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(40 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
		t.Errorf("%s did not stop within 40 s of %s", p.name, sig)
	}
}

// running reports whether the process has not exited.
func (p *proc) running() bool {
	select {
	case err := <-p.done:
		p.done <- err
		return false
	default:
		return true
	}
}

// addr waits for the ops server's address in the process log.
func (p *proc) addr(t testing.TB) string {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		f, err := os.Open(p.log)
		if err == nil {
			s := bufio.NewScanner(f)
			s.Buffer(make([]byte, 1<<20), 1<<20)
			for s.Scan() {
				var line map[string]any
				if json.Unmarshal(s.Bytes(), &line) == nil && line["msg"] == "ops server listening" {
					f.Close()
					return "http://" + line["addr"].(string)
				}
			}
			f.Close()
		}
		select {
		case err := <-p.done:
			p.done <- err
			t.Fatalf("%s exited before it listened: %v", p.name, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
	t.Fatalf("%s did not log its address within 60 s", p.name)
	return ""
}

// ready waits until the process answers /readyz with 200.
func (p *proc) ready(t testing.TB) string {
	t.Helper()
	base := p.addr(t)
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(base + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return base
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s not ready within 60 s", p.name)
	return ""
}

// deployment is one isolated sluice deployment: its own topics, groups and database.
type deployment struct {
	kafka  kafka.Config
	ch     chconn.Config
	env    map[string]string
	source *demosource.Server
	srcURL string
	conn   *chconn.Conn
	// nodes are the servers of the cluster the pipeline writes (ch.Cluster), none for one server.
	nodes []string
	// sourceDown makes the source answer 503 to everything.
	sourceDown atomic.Bool
	// failing, when set, makes the source answer 500 to the requests it returns true for.
	failing atomic.Pointer[func(*http.Request) bool]
}

// newPipeline prepares topics, a database and an in-process demo source with cfg.
func newPipeline(t testing.TB, src demosource.Config) *deployment {
	t.Helper()
	return newPipelineOn(t, src, stacktest.Kafka(t))
}

// newPipelineOn is newPipeline on the Kafka of k, such as a broker the test runs for itself.
func newPipelineOn(t testing.TB, src demosource.Config, k kafka.Config) *deployment {
	t.Helper()
	return newPipelineWith(t, src, k, stacktest.ClickHouse(t))
}

// newPipelineWith is newPipeline on the Kafka of k and the ClickHouse of ch, such as the stack's
// cluster (stacktest.ClickHouseCluster).
func newPipelineWith(t testing.TB, src demosource.Config, k kafka.Config, ch chconn.Config) *deployment {
	t.Helper()
	k.TasksPartitions, k.RawPartitions = 6, 6
	env := stacktest.Env(k, &ch)
	env["SLUICE_HTTP_ADDR"] = "127.0.0.1:0"
	env["SLUICE_EXTRACTOR_GROUP"] = stacktest.Name(t, "extractor")
	env["SLUICE_LOADER_GROUP"] = stacktest.Name(t, "loader")
	env["SLUICE_LOG_LEVEL"] = "info"
	tokens := filepath.Join(t.TempDir(), "planner-tokens")
	if err := os.WriteFile(tokens, []byte("# the tests' token\ntests admin "+apiToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env["SLUICE_PLANNER_TOKENS_FILE"] = tokens
	// The tests' PostgreSQL runs on this machine.
	env["SLUICE_SECRET_HOSTS"] = "SOURCE_PG_DSN=127.0.0.1"

	server, err := demosource.New(src, nil)
	if err != nil {
		t.Fatal(err)
	}
	d := &deployment{kafka: k, ch: ch, env: env, source: server}
	if ch.Cluster != "" {
		d.nodes = ch.Addr
	}
	api := server.Handler()
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if d.sourceDown.Load() { // an outage of the whole source, without Retry-After
			http.Error(w, "source down", http.StatusServiceUnavailable)
			return
		}
		if f := d.failing.Load(); f != nil && (*f)(r) { // pages that fail until the test fixes them
			http.Error(w, "this page fails", http.StatusInternalServerError)
			return
		}
		api.ServeHTTP(w, r)
	}))
	t.Cleanup(ts.Close)
	d.srcURL = ts.URL

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := chconn.Open(ctx, ch, stacktest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	d.conn = conn
	return d
}

// with returns the pipeline's environment plus extra variables.
func (p *deployment) with(extra map[string]string) map[string]string {
	env := make(map[string]string, len(p.env)+len(extra))
	for k, v := range p.env {
		env[k] = v
	}
	for k, v := range extra {
		env[k] = v
	}
	return env
}

// job is the planner's view of a job.
type job struct {
	ID        string `json:"id"`
	Name      string `json:"name"`
	State     string `json:"state"`
	Reason    string `json:"reason"`
	Since     string `json:"since"`
	MaxCursor string `json:"max_cursor"`
	// CursorRejected counts the cursor values that could not count towards the job's mark.
	CursorRejected struct {
		Unparseable uint64
		Future      uint64
	} `json:"cursor_rejected"`
	CreatedAt  time.Time  `json:"created_at"`
	FinishedAt *time.Time `json:"finished_at"`
	Tasks      struct {
		Planned      int
		Extracted    int
		DeadLettered int `json:"dead_lettered"`
	}
	Records struct {
		Expected     int64
		Extracted    uint64
		Loaded       uint64
		DeadLettered uint64 `json:"dead_lettered"`
	}
	Held *struct {
		Table  string
		Reason string
	}
}

// apiToken is the planner API's token (role admin) of every deployment the tests start.
var apiToken = func() string {
	b := make([]byte, 16)
	_, _ = crand.Read(b)
	return "sluice-tests-" + hex.EncodeToString(b)
}()

// apiDo sends a request to a planner with the tests' token; header holds name, value pairs. A 429
// (too many submits at once) is tried again after its Retry-After, as sluicectl does.
func apiDo(method, url string, body io.Reader, header ...string) (*http.Response, error) {
	var data []byte
	if body != nil {
		var err error
		if data, err = io.ReadAll(body); err != nil {
			return nil, err
		}
	}
	for attempt := 1; ; attempt++ {
		req, err := http.NewRequest(method, url, bytes.NewReader(data))
		if err != nil {
			return nil, err
		}
		req.Header.Set("Authorization", "Bearer "+apiToken)
		if body != nil {
			req.Header.Set("Content-Type", "application/yaml")
		}
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != http.StatusTooManyRequests || attempt == 60 {
			return resp, err
		}
		resp.Body.Close()
		wait, _ := strconv.Atoi(resp.Header.Get("Retry-After"))
		time.Sleep(time.Duration(max(wait, 1)) * time.Second)
	}
}

// submit posts a spec to the planner and returns the planned job.
func submit(t testing.TB, planner, spec string) job {
	t.Helper()
	resp, err := apiDo(http.MethodPost, planner+"/v1/jobs", strings.NewReader(spec))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("submit: %s %s", resp.Status, body)
	}
	var j job
	if err := json.Unmarshal(body, &j); err != nil {
		t.Fatal(err)
	}
	return j
}

// poll returns the planner's view of a job.
func poll(t testing.TB, planner, id string) job {
	t.Helper()
	resp, err := apiDo(http.MethodGet, planner+"/v1/jobs/"+id, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var j job
	if err := json.NewDecoder(resp.Body).Decode(&j); err != nil {
		t.Fatalf("job %s: %v", id, err)
	}
	return j
}

// getJSON decodes the planner's 200 answer to GET path into v.
func getJSON(t testing.TB, planner, path string, v any) {
	t.Helper()
	resp, err := apiDo(http.MethodGet, planner+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s %s", path, resp.Status, body)
	}
	if err := json.Unmarshal(body, v); err != nil {
		t.Fatalf("GET %s: %v: %s", path, err, body)
	}
}

// waitDrained waits until the planner measured, after since, no lag for the extractor and the loader
// groups of env (SLUICE_PLANNER_LAG_INTERVAL short): every task and record committed.
func waitDrained(t testing.TB, planner string, env map[string]string, since time.Time) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		var lag struct {
			Groups []struct {
				Group    string    `json:"group"`
				Records  int64     `json:"lag_records"`
				Measured time.Time `json:"measured_at"`
			} `json:"groups"`
		}
		getJSON(t, planner, "/v1/lag", &lag)
		drained := len(lag.Groups) == 2
		for _, g := range lag.Groups {
			drained = drained && g.Records == 0 && g.Measured.After(since) &&
				(g.Group == env["SLUICE_EXTRACTOR_GROUP"] || g.Group == env["SLUICE_LOADER_GROUP"])
		}
		if drained {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the groups did not drain in a minute: %+v", lag)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// await polls the job until it leaves the running state.
func await(t testing.TB, planner, id string, timeout time.Duration) job {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		j := poll(t, planner, id)
		if j.State != "running" {
			return j
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %s still running after %s: %+v", id, timeout, j)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// rows reads every row of table after deduplication, key → payload.
func (p *deployment) rows(t testing.TB, table string) map[string]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	rows, err := p.conn.Query(ctx, "SELECT key, payload FROM `"+table+"` FINAL")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var k, v string
		if err := rows.Scan(&k, &v); err != nil {
			t.Fatal(err)
		}
		if _, dup := out[k]; dup {
			t.Fatalf("key %s twice after FINAL", k)
		}
		out[k] = v
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// metric returns the sum of a metric's samples whose line contains every one of match.
func metric(t testing.TB, base, name string, match ...string) float64 {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var sum float64
	for _, line := range bytes.Split(body, []byte("\n")) {
		l := string(line)
		if !strings.HasPrefix(l, name+"{") && !strings.HasPrefix(l, name+" ") {
			continue
		}
		ok := true
		for _, m := range match {
			ok = ok && strings.Contains(l, m)
		}
		if !ok {
			continue
		}
		var v float64
		fields := strings.Fields(l)
		fmt.Sscan(fields[len(fields)-1], &v)
		sum += v
	}
	return sum
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// count returns the rows and distinct keys of table, before deduplication.
func (p *deployment) count(t testing.TB, table string) (rows, keys uint64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := p.conn.QueryRow(ctx, "SELECT count(), uniqExact(key) FROM `"+table+"`").Scan(&rows, &keys)
	if err != nil && !strings.Contains(err.Error(), "doesn't exist") {
		t.Fatal(err)
	}
	return rows, keys
}

// waitRows polls until table has at least n distinct keys, or timeout.
func (p *deployment) waitRows(t testing.TB, table string, n uint64, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if _, keys := p.count(t, table); keys >= n {
			return
		}
		if time.Now().After(deadline) {
			_, keys := p.count(t, table)
			t.Fatalf("%s has %d distinct keys after %s, want at least %d", table, keys, timeout, n)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// deadLetters reads every dead letter of the pipeline's topic.
func (p *deployment) deadLetters(t testing.TB) []*sluicev1.DeadLetter {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl, err := kafka.NewClient(p.kafka, "test-dlq", stacktest.Logger(t), nil,
		kgo.ConsumeTopics(p.kafka.DLQTopic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var out []*sluicev1.DeadLetter
	err = kafka.ReadToEnd(ctx, cl, p.kafka.DLQTopic, func(r *kgo.Record) bool {
		dl, err := dlq.Decode(r)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, dl)
		return true
	})
	if err != nil {
		t.Fatalf("read dead letters: %v", err)
	}
	return out
}

// privateStack is a component of the local stack (a Kafka broker or a ClickHouse server) that one
// test runs for itself through the stack script, with its own state directory and ports, so that the
// test can stop, kill or pause it without disturbing the others.
type privateStack struct {
	addr    string
	state   string
	env     []string
	pidFile string
}

// ownClickHouse starts a ClickHouse server of the test's own; the stack's Kafka serves it. configD
// are files for its config.d directory, such as lowered merge-tree limits.
func ownClickHouse(t testing.TB, configD ...string) *privateStack {
	t.Helper()
	tcp, httpPort := freePort(t), freePort(t)
	s := newPrivateStack(t, "SLUICE_CLICKHOUSE_ADDR",
		"SLUICE_KAFKA_BROKERS="+strings.Join(stacktest.Kafka(t).Brokers, ","), // use the stack's Kafka, start none
		"SLUICE_CLICKHOUSE_PORT="+strconv.Itoa(tcp),
		"SLUICE_CLICKHOUSE_HTTP_PORT="+strconv.Itoa(httpPort))
	s.addr, s.pidFile = "127.0.0.1:"+strconv.Itoa(tcp), filepath.Join(s.state, "clickhouse", "clickhouse.pid")
	for i, xml := range configD {
		dir := filepath.Join(s.state, "clickhouse", "config.d")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("test-%d.xml", i)), []byte(xml), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	s.start(t)
	t.Cleanup(func() { s.stop(t) })
	return s
}

// ownKafka starts a single-node KRaft broker of the test's own, from the stack's jars; the stack's
// ClickHouse serves it.
func ownKafka(t testing.TB) *privateStack {
	t.Helper()
	return ownKafkaAdvertised(t, 0)
}

// ownKafkaAdvertised is ownKafka telling its clients to connect to advertised (0: its listener),
// where a test's proxy forwards to it; listening, when not nil, learns the broker's own address
// before it starts.
func ownKafkaAdvertised(t testing.TB, advertised int, listening ...func(addr string)) *privateStack {
	t.Helper()
	return ownKafkaNode(t, advertised, nil, listening...)
}

// ownKafkaNode is ownKafkaAdvertised with extra variables for the stack script, such as
// SLUICE_KAFKA_SECURE=yes.
func ownKafkaNode(t testing.TB, advertised int, extra []string, listening ...func(addr string)) *privateStack {
	t.Helper()
	port, controller := freePort(t), freePort(t)
	if advertised == 0 {
		advertised = port
	}
	s := newPrivateStack(t, "SLUICE_KAFKA_BROKERS", append([]string{
		"SLUICE_KAFKA_ADVERTISED_PORT=" + strconv.Itoa(advertised),
		"SLUICE_CLICKHOUSE_ADDR=" + stacktest.ClickHouseAddr(), // use the stack's ClickHouse
		"SLUICE_KAFKA_LIBS=" + filepath.Join(stackState(t), "kafka", "libs"),
		// One node, whatever the stack runs (make chaos KAFKA_BROKERS=3 exports three).
		"SLUICE_KAFKA_NODES=1",
		"SLUICE_KAFKA_PORT=" + strconv.Itoa(port),
		"SLUICE_KAFKA_CONTROLLER_PORT=" + strconv.Itoa(controller),
		"SLUICE_KAFKA_HEAP=512m"}, extra...)...)
	s.addr, s.pidFile = "127.0.0.1:"+strconv.Itoa(port), filepath.Join(s.state, "kafka", "kafka.pid")
	for _, fn := range listening {
		fn(s.addr)
	}
	s.start(t)
	t.Cleanup(func() { s.stop(t) })
	return s
}

// ownKafkaCluster starts a three-node KRaft cluster of the test's own (topics at replication factor
// 3, min.insync.replicas 2) and returns it with its brokers' addresses; node n's process is in
// its state directory's kafka/node<n>.
func ownKafkaCluster(t testing.TB) (*privateStack, []string) {
	t.Helper()
	base := freePorts(t, 6)
	s := newPrivateStack(t, "SLUICE_KAFKA_BROKERS",
		"SLUICE_CLICKHOUSE_ADDR="+stacktest.ClickHouseAddr(),
		"SLUICE_KAFKA_LIBS="+filepath.Join(stackState(t), "kafka", "libs"),
		"SLUICE_KAFKA_NODES=3",
		"SLUICE_KAFKA_PORT="+strconv.Itoa(base),
		"SLUICE_KAFKA_CONTROLLER_PORT="+strconv.Itoa(base+1),
		"SLUICE_KAFKA_HEAP=512m")
	var addrs []string
	for n := range 3 {
		addrs = append(addrs, "127.0.0.1:"+strconv.Itoa(base+2*n))
	}
	s.addr, s.pidFile = strings.Join(addrs, ","), filepath.Join(s.state, "kafka", "node1", "kafka.pid")
	s.start(t)
	t.Cleanup(func() { s.stop(t) })
	return s, addrs
}

// node is the cluster's node n (1-based), to kill or pause on its own.
func (s *privateStack) node(n int32) *privateStack {
	c := *s
	c.pidFile = filepath.Join(s.state, "kafka", fmt.Sprintf("node%d", n), "kafka.pid")
	return &c
}

// newPrivateStack prepares the stack script's environment: the test's own state directory, the
// process environment less the variable that would point the component elsewhere, and extra.
func newPrivateStack(t testing.TB, drop string, extra ...string) *privateStack {
	s := &privateStack{state: t.TempDir()}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, drop+"=") && !strings.HasPrefix(kv, "SLUICE_STATE_DIR=") {
			s.env = append(s.env, kv)
		}
	}
	s.env = append(append(s.env, "SLUICE_STATE_DIR="+s.state), extra...)
	return s
}

// stackState is the state directory of the stack that `make test` started.
func stackState(t testing.TB) string {
	if dir := os.Getenv("SLUICE_STATE_DIR"); dir != "" {
		return dir
	}
	return filepath.Join(repoRoot(t), ".sluice")
}

func (s *privateStack) start(t testing.TB) { s.stack(t, "up") }
func (s *privateStack) stop(t testing.TB)  { s.stack(t, "down") }

// pid is the component's process, which leads its own process group.
func (s *privateStack) pid(t testing.TB) int {
	t.Helper()
	b, err := os.ReadFile(s.pidFile)
	if err != nil {
		t.Fatalf("read pid file: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("pid file %s: %v", s.pidFile, err)
	}
	return pid
}

// signal sends sig to the component's process group.
func (s *privateStack) signal(t testing.TB, sig syscall.Signal) {
	t.Helper()
	if err := syscall.Kill(-s.pid(t), sig); err != nil {
		t.Fatalf("signal %s to %d: %v", sig, s.pid(t), err)
	}
}

// kill sends SIGKILL to the component and waits until the process is gone: the fault happened.
func (s *privateStack) kill(t testing.TB) {
	t.Helper()
	pid := s.pid(t)
	if err := syscall.Kill(-pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill %d: %v", pid, err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for syscall.Kill(pid, 0) == nil {
		if time.Now().After(deadline) {
			t.Fatalf("process %d still there 30 s after SIGKILL", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (s *privateStack) stack(t testing.TB, command string) {
	t.Helper()
	cmd := exec.Command(filepath.Join(repoRoot(t), "deploy/local/stack.sh"), command)
	cmd.Env = s.env
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("stack.sh %s: %v\n%s", command, err, out)
	}
}

// useClickHouse points the pipeline's checks at another server, with the same database.
func (p *deployment) useClickHouse(t testing.TB, addr string) {
	t.Helper()
	p.ch.Addr = []string{addr}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := chconn.Open(ctx, p.ch, stacktest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	p.conn = conn
}

// freePorts returns the first of n consecutive free ports below the ephemeral range.
func freePorts(t testing.TB, n int) int {
	t.Helper()
	for range 100 {
		base := 20000 + rand.IntN(12000-n)
		free := true
		for i := range n {
			ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(base+i))
			if err != nil {
				free = false
				break
			}
			ln.Close()
		}
		if free {
			return base
		}
	}
	t.Fatalf("no %d free consecutive ports between 20000 and 32000", n)
	return 0
}

// freePort returns a port for a server to listen on, below Linux's ephemeral range (32768 and up)
// so that no client connection takes it between this check and the server's bind.
func freePort(t testing.TB) int {
	t.Helper()
	for range 100 {
		port := 20000 + rand.IntN(12000)
		ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err == nil {
			ln.Close()
			return port
		}
	}
	t.Fatal("no free port between 20000 and 32000")
	return 0
}

// nopRegisterer drops metrics that a benchmark baseline does not read.
type nopRegisterer struct{}

func (nopRegisterer) Register(prometheus.Collector) error  { return nil }
func (nopRegisterer) MustRegister(...prometheus.Collector) {}
func (nopRegisterer) Unregister(prometheus.Collector) bool { return true }

// sluicectl runs the command line with the pipeline's environment and returns its exit code and
// standard output.
func (p *deployment) sluicectl(t testing.TB, planner string, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(filepath.Join(binaries(t), "sluicectl"), args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "SLUICE_PLANNER_URL=" + planner, "SLUICE_PLANNER_TOKEN=" + apiToken}
	for k, v := range p.env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if exit, ok := err.(*exec.ExitError); ok {
		code = exit.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	if code != 0 {
		t.Logf("sluicectl %v exited %d; stderr:\n%s", args, code, tail(stderr.Bytes(), 3000))
	}
	return code, stdout.String()
}
