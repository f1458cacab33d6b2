package deploy

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicedata/sluice/pkg/chconn"
	"github.com/sluicedata/sluice/pkg/delivery"
	"github.com/sluicedata/sluice/pkg/demosource"
	"github.com/sluicedata/sluice/pkg/kafka"
	"github.com/sluicedata/sluice/pkg/pipeline"
	"github.com/sluicedata/sluice/pkg/source"
	"github.com/sluicedata/sluice/pkg/stacktest"
	sluicev1 "github.com/sluicedata/sluice/proto/sluice/v1"
)

// BenchmarkPipeline runs a demo-sized job (RECORDS records of RECORD_SIZE bytes, 100,000 of 300 by
// default) through the real services and reports end-to-end records/s and CPU seconds per million
// records of every process, broker and ClickHouse included, beside its legs and their floors, all
// in the same run:
//
//   - the extract leg: a job extracted with no loader running (planner, extractor, Kafka);
//   - the load leg: a loader started on the records that job left on the raw topic (loader, Kafka,
//     ClickHouse), and its floor, the lean loop of BenchmarkLoader over the same records;
//   - end to end: a second job of the same records with every service running, against the legs
//     run one after the other (their sum: what a pipeline that overlapped nothing would do) and
//     against the floors' sum (reading the source alone, then the loader's floor);
//   - baselines: reading and parsing the source alone, and Kafka alone (produce then consume the
//     same number of records of the same size).
func BenchmarkPipeline(b *testing.B) {
	stacktest.Require(b)
	n := envInt("RECORDS", 100_000)
	size := envInt("RECORD_SIZE", 300)
	src := demosource.DefaultConfig()
	src.Records = int64(n)
	src.RecordSize = size

	for range b.N {
		p := newPipeline(b, src)
		if c := os.Getenv("SLUICE_CLICKHOUSE_COMPRESSION"); c != "" {
			p.env["SLUICE_CLICKHOUSE_COMPRESSION"] = c
		}
		srcRate := baselineSource(b, p.srcURL, n)
		kafkaRate := baselineKafka(b, p.kafka, n, size)

		dir := os.Getenv("PROFILE_DIR")
		if dir != "" {
			p.env["SLUICE_PPROF"] = "true"
		}
		stack := map[string]int{}
		for name, file := range map[string]string{"kafka": "kafka/kafka.pid", "clickhouse": "clickhouse/clickhouse.pid"} {
			if pid := stackPid(b, file); pid > 0 {
				stack[name] = pid
			}
		}
		planner := start(b, "planner", p.env)
		extractor := start(b, "extractor", p.env)
		plannerURL := planner.ready(b)
		extractorURL := extractor.ready(b)
		procs := map[string]int{"planner": planner.cmd.Process.Pid, "extractor": extractor.cmd.Process.Pid}
		maps.Copy(procs, stack)
		m := float64(n) / 1e6

		// The extract leg: the job's records onto the raw topic, no loader running.
		settle(b, p.conn)
		before := cpuOf(procs)
		began := time.Now()
		legs := submit(b, plannerURL, jobSpec("legs", p.srcURL, "legs", 16, 1000, 5))
		for j := poll(b, plannerURL, legs.ID); j.Tasks.Extracted+j.Tasks.DeadLettered < j.Tasks.Planned || j.Tasks.Planned == 0; j = poll(b, plannerURL, legs.ID) {
			time.Sleep(20 * time.Millisecond)
		}
		extractLeg := time.Since(began)
		extractCPU := sub(cpuOf(procs), before)

		// The load leg: a loader on what the extract leg left.
		loader := start(b, "loader", p.env)
		loaderURL := loader.ready(b)
		procs["loader"] = loader.cmd.Process.Pid
		before = cpuOf(procs)
		began = time.Now()
		if j := await(b, plannerURL, legs.ID, 20*time.Minute); j.State != "succeeded" || j.Records.Loaded != uint64(n) {
			b.Fatalf("the legs' job ended %+v", j)
		}
		loadLeg := time.Since(began)
		settle(b, p.conn) // ClickHouse's CPU with the merges the leg set off
		loadCPU := sub(cpuOf(procs), before)
		floorRate, floorCPU, floorCH := leanLoop(b, p, n, stack["clickhouse"])

		// End to end: every service running.
		settle(b, p.conn)
		var profiled sync.WaitGroup
		if dir != "" { // the first 5 seconds of the job, for go tool pprof
			for name, base := range map[string]string{"extractor": extractorURL, "loader": loaderURL} {
				profiled.Go(func() { profile(b, base, filepath.Join(dir, "pipeline-"+name+".pprof")) })
			}
		}
		before = cpuOf(procs)
		began = time.Now()
		j := submit(b, plannerURL, jobSpec("bench", p.srcURL, "bench", 16, 1000, 5))
		var extracted time.Duration
		for j.State == "running" || j.State == "" {
			time.Sleep(20 * time.Millisecond)
			j = poll(b, plannerURL, j.ID)
			if extracted == 0 && j.Tasks.Extracted+j.Tasks.DeadLettered == j.Tasks.Planned {
				extracted = time.Since(began)
			}
		}
		total := time.Since(began)
		settle(b, p.conn) // ClickHouse's CPU with the merges the job set off
		e2eCPU := sub(cpuOf(procs), before)
		profiled.Wait()
		if j.State != "succeeded" || j.Records.Loaded != uint64(n) {
			b.Fatalf("job ended %+v", j)
		}

		rate := func(d time.Duration) float64 { return float64(n) / d.Seconds() }
		legsRate := rate(extractLeg + loadLeg)
		floorsRate := 1 / (1/srcRate + 1/floorRate)
		fmt.Printf("\nsluice pipeline benchmark: %d records of %d bytes, 16 tasks, pages of 1000, 1 extractor, 1 loader\n", n, size)
		fmt.Printf("  %-44s %10s %10s %7s %12s\n", "", "records/s", "floor", "ratio", "CPU-s/M")
		fmt.Printf("  %-44s %10.0f\n", "baseline: source read + parse", srcRate)
		fmt.Printf("  %-44s %10.0f\n", "baseline: kafka produce + consume", kafkaRate)
		fmt.Printf("  %-44s %10.0f %10s %7s %12.2f\n", "extract leg: planner, extractor, kafka", rate(extractLeg), "", "", cpuSum(extractCPU)/m)
		fmt.Printf("  %-44s %10.0f %10.0f %6.2fx %12.2f  (floor %.2f own + %.2f ClickHouse)\n", "load leg: loader, kafka, clickhouse",
			rate(loadLeg), floorRate, rate(loadLeg)/floorRate, cpuSum(loadCPU)/m, floorCPU, floorCH)
		fmt.Printf("  %-44s %10.0f %10.0f %6.2fx %12.2f\n", "end to end vs the legs one after the other", rate(total), legsRate, rate(total)/legsRate, cpuSum(e2eCPU)/m)
		fmt.Printf("  %-44s %10.0f %10.0f %6.2fx\n", "end to end vs source read, then loader floor", rate(total), floorsRate, rate(total)/floorsRate)
		fmt.Printf("  %-44s %10.0f  (%.2f s; %.2f s to the last task extracted)\n", "end to end: submit to loaded", rate(total), total.Seconds(), extracted.Seconds())
		fmt.Printf("  end to end: %.1f CPU-µs per record, all processes:", cpuSum(e2eCPU)/float64(n)*1e6)
		for _, name := range []string{"planner", "extractor", "loader", "kafka", "clickhouse"} {
			if _, ok := procs[name]; ok {
				fmt.Printf(" %s %.2f", name, e2eCPU[name]/m)
			}
		}
		fmt.Printf(" (CPU-s/M)\n")
		summarize(b, "extract leg: offset pages (all processes)", rate(extractLeg), 0, "rec/s", fmt.Sprintf("%.2f", cpuSum(extractCPU)/m), 0)
		summarize(b, "end to end (all processes)", rate(total), legsRate, "rec/s", fmt.Sprintf("%.2f", cpuSum(e2eCPU)/m), 0)
		summarize(b, "  against the legs one after the other", legsRate, 0, "rec/s", "", 0)
		b.ReportMetric(rate(total), "records/s")
		b.ReportMetric(cpuSum(e2eCPU)/float64(n)*1e6, "cpu-µs/record")
		b.ReportMetric(rate(extracted), "extract-records/s")
		b.ReportMetric(srcRate, "baseline-source-records/s")
		b.ReportMetric(kafkaRate, "baseline-kafka-records/s")
		b.ReportMetric(e2eCPU["extractor"]/m, "extractor-cpu-s/M")
		b.ReportMetric(e2eCPU["loader"]/m, "loader-cpu-s/M")
	}
}

// sub is after less before, process by process.
func sub(after, before map[string]float64) map[string]float64 {
	out := map[string]float64{}
	for k, v := range after {
		out[k] = v - before[k]
	}
	return out
}

// cpuSum is the sum of the CPU seconds of every process in cpu.
func cpuSum(cpu map[string]float64) float64 {
	sum := 0.0
	for _, v := range cpu {
		sum += v
	}
	return sum
}

// baselineSource pages through the source with 16 workers, parsing every page and record key as
// the extractor does, without Kafka.
func baselineSource(b testing.TB, url string, n int) float64 {
	f := &source.Fetcher{Client: &http.Client{}, MaxBody: 64 << 20, Metrics: source.NewMetrics(nopRegisterer{}, "baseline"),
		Retry: delivery.NewRetrier(nopRegisterer{}, slog.New(slog.DiscardHandler)), Now: time.Now}
	src := &sluicev1.HttpSource{Url: url + "/api/users", Pagination: &sluicev1.Pagination{OffsetParam: "offset", LimitParam: "limit"}}
	pol := source.Policy{MaxRetries: 3, Backoff: pipeline.Backoff{Base: time.Millisecond, Max: time.Second}, Deadline: time.Minute, Timeout: 30 * time.Second}
	pages := make(chan uint64)
	var wg sync.WaitGroup
	began := time.Now()
	for range 16 {
		wg.Go(func() {
			for off := range pages {
				u, _ := source.PageURL(src, off, 1000, nil)
				p, _, err := f.FetchPage(context.Background(), u, nil, "data", "", pol)
				if err != nil {
					b.Error(err)
					continue
				}
				for _, r := range p.Records {
					source.RecordKey(r, "id")
				}
			}
		})
	}
	for off := 0; off < n; off += 1000 {
		pages <- uint64(off)
	}
	close(pages)
	wg.Wait()
	return float64(n) / time.Since(began).Seconds()
}

// baselineKafka produces n records of size bytes to a fresh topic and consumes them back.
func baselineKafka(b testing.TB, cfg kafka.Config, n, size int) float64 {
	topic := stacktest.Name(b, "baseline")
	cfg.RawTopic = topic
	cl, err := kafka.NewClient(cfg, "baseline", stacktest.Logger(b), nil, kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.ProducerLinger(5*time.Millisecond))
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	ctx := context.Background()
	if _, err := kafka.EnsureTopics(ctx, cl, -1, []kafka.TopicSpec{{Name: topic, Partitions: 6}}); err != nil {
		b.Fatal(err)
	}
	value := []byte(strings.Repeat("x", size))
	began := time.Now()
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		cl.Produce(ctx, &kgo.Record{Topic: topic, Key: []byte(strconv.Itoa(i)), Value: value}, func(_ *kgo.Record, err error) {
			if err != nil {
				b.Error(err)
			}
			wg.Done()
		})
	}
	wg.Wait()
	for got := 0; got < n; {
		fetches := cl.PollFetches(ctx)
		got += fetches.NumRecords()
	}
	return float64(n) / time.Since(began).Seconds()
}

// settle waits, up to a minute, until ClickHouse has run no merge for half a second, so that a
// leg's ClickHouse CPU includes the merges its inserts set off and the next leg starts on an idle
// server. A merge that ClickHouse chooses later than that is left out.
func settle(b testing.TB, conn *chconn.Conn) {
	b.Helper()
	deadline := time.Now().Add(time.Minute)
	for idle := 0; idle < 3; {
		if time.Now().After(deadline) {
			b.Logf("settle: ClickHouse still merging after a minute; its CPU figure leaves out the rest")
			return
		}
		var n uint64
		if err := conn.QueryRow(context.Background(), "SELECT count() FROM system.merges WHERE database != 'system'").Scan(&n); err != nil {
			b.Fatalf("read merges: %v", err)
		}
		if n == 0 {
			idle++
		} else {
			idle = 0
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// cpuOf reads each process's user+system CPU seconds from /proc.
func cpuOf(procs map[string]int) map[string]float64 {
	out := map[string]float64{}
	for name, pid := range procs {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		s := string(b)
		fields := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
		utime, _ := strconv.ParseFloat(fields[11], 64)
		stime, _ := strconv.ParseFloat(fields[12], 64)
		out[name] = (utime + stime) / 100 // clock ticks; USER_HZ is 100 on Linux
	}
	return out
}

// stackPid reads a pid file of the local stack, 0 when there is none.
func stackPid(b testing.TB, file string) int {
	state := os.Getenv("SLUICE_STATE_DIR")
	if state == "" {
		state = filepath.Join(repoRoot(b), ".sluice")
	}
	data, err := os.ReadFile(filepath.Join(state, file))
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(data)))
	return pid
}

func envInt(name string, fallback int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return fallback
}

// runJob submits spec to a fresh planner, extractor and loader on p and returns how long the job
// took to succeed.
func runJob(b *testing.B, p *deployment, spec string) (time.Duration, job) {
	b.Helper()
	planner := start(b, "planner", p.env).ready(b)
	start(b, "extractor", p.env).ready(b)
	start(b, "loader", p.env).ready(b)
	began := time.Now()
	j := submit(b, planner, spec)
	j = await(b, planner, j.ID, 20*time.Minute)
	if j.State != "succeeded" {
		b.Fatalf("job ended %+v", j)
	}
	return time.Since(began), j
}

// BenchmarkCrawl runs a cursor crawl (CRAWL_PAGES pages of 100 records, 1,000 by default, the
// source answering each after CRAWL_LATENCY, 5ms by default): one page after another, each its own
// task. It reports pages/s, to the last page extracted and to the last record loaded (which adds
// the loader's flush interval), beside the baseline of reading the same crawl with a plain HTTP
// client in a loop, and their ratios.
func BenchmarkCrawl(b *testing.B) {
	stacktest.Require(b)
	pages := envInt("CRAWL_PAGES", 1_000)
	latency, err := time.ParseDuration(cmp.Or(os.Getenv("CRAWL_LATENCY"), "5ms"))
	if err != nil {
		b.Fatal(err)
	}
	src := demosource.DefaultConfig()
	src.Records, src.PageLatency = int64(pages*100), latency
	for range b.N {
		p := newPipeline(b, src)
		baseline := baselineCrawl(b, p.srcURL, pages)
		planner := start(b, "planner", p.env).ready(b)
		start(b, "extractor", p.env).ready(b)
		start(b, "loader", p.env).ready(b)
		began := time.Now()
		j := submit(b, planner, crawlSpec("crawl", p.srcURL, "cursor", "crawl", 100))
		var extracted time.Duration
		for j.State == "running" || j.State == "" {
			time.Sleep(20 * time.Millisecond)
			j = poll(b, planner, j.ID)
			if extracted == 0 && j.Tasks.Extracted >= pages {
				extracted = time.Since(began)
			}
		}
		took := time.Since(began)
		if j.State != "succeeded" || extracted == 0 {
			b.Fatalf("job ended %+v", j)
		}
		rate := float64(j.Tasks.Extracted) / took.Seconds()
		extractRate := float64(j.Tasks.Extracted) / extracted.Seconds()
		fmt.Printf("\nsluice crawl benchmark: a cursor crawl of %d pages of 100 records, the source answering after %s\n", pages, latency)
		fmt.Printf("  %-34s %10.1f pages/s\n", "baseline: the crawl, HTTP alone", baseline)
		fmt.Printf("  %-34s %10.1f pages/s  (%.1f s)  %.2f× the baseline\n", "sluice: submit to last page", extractRate, extracted.Seconds(), extractRate/baseline)
		fmt.Printf("  %-34s %10.1f pages/s  (%.1f s, %.0f records/s)  %.2f× the baseline\n", "sluice: submit to loaded", rate, took.Seconds(),
			float64(j.Records.Loaded)/took.Seconds(), rate/baseline)
		summarize(b, "crawl: cursor pages, to the last extracted", extractRate, baseline, "pages/s", "", 0)
		summarize(b, "crawl: cursor pages, to the last loaded", rate, baseline, "pages/s", "", 0)
		b.ReportMetric(rate, "pages/s")
		b.ReportMetric(extractRate, "extracted-pages/s")
		b.ReportMetric(baseline, "baseline-pages/s")
		b.ReportMetric(rate/baseline, "ratio")
	}
}

// baselineCrawl follows the demo source's cursor endpoint with a plain client and returns pages/s.
func baselineCrawl(b *testing.B, url string, pages int) float64 {
	b.Helper()
	began := time.Now()
	next := url + "/cursor/users?limit=100"
	for range pages {
		resp, err := http.Get(next)
		if err != nil {
			b.Fatal(err)
		}
		var body struct {
			Next *string `json:"next_cursor"`
		}
		err = json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if err != nil || body.Next == nil {
			break
		}
		next = url + "/cursor/users?limit=100&cursor=" + *body.Next
	}
	return float64(pages) / time.Since(began).Seconds()
}

// BenchmarkWindows runs a job without a total split into time windows (RECORDS records, 200,000
// by default, in hour windows read by offsets) through one extractor, and reports records/s; the
// offset job of BenchmarkPipeline is its comparison.
func BenchmarkWindows(b *testing.B) {
	stacktest.Require(b)
	n := envInt("RECORDS", 200_000)
	src := demosource.DefaultConfig()
	src.Records = int64(n)
	end := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(n) * time.Second).Truncate(time.Hour).Add(time.Hour)
	for range b.N {
		p := newPipeline(b, src)
		spec := fmt.Sprintf(`name: windows
source:
  type: http
  url: %s/api/users
  records_path: data
  key: id
  pagination: {type: offset, page_size: 1000}
  slices: {type: time, param_from: created_from, param_to: created_to, start: 2020-01-01T00:00:00Z, end: %s, step: 1h}
sink:
  table: windows
`, p.srcURL, end.Format(time.RFC3339))
		took, j := runJob(b, p, spec)
		if j.Records.Loaded != uint64(n) {
			b.Fatalf("job ended %+v", j)
		}
		fmt.Printf("\nsluice windows benchmark: %d records in %d hour windows, 1 extractor, 1 loader\n", n, j.Tasks.Planned)
		fmt.Printf("  %-34s %12.0f records/s  (%.2f s)\n", "end to end: submit to loaded", float64(n)/took.Seconds(), took.Seconds())
		b.ReportMetric(float64(n)/took.Seconds(), "records/s")
	}
}
