package deploy

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sluicedata/sluice/pkg/demosource"
	"github.com/sluicedata/sluice/pkg/stacktest"
)

// TestPrometheusScrapesServices runs a job, lets Debian's Prometheus scrape the three services, and
// reads the article's metrics back through Prometheus's query API: what the services expose is
// what a real Prometheus stores.
func TestPrometheusScrapesServices(t *testing.T) {
	stacktest.Require(t)
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Fatal("prometheus is not installed: make test installs Debian's package (deploy/local/stack.sh install-tools)")
	}
	const n = 5_000
	src := demosource.DefaultConfig()
	src.Records = n
	p := newPipeline(t, src)
	planner := start(t, "planner", p.env).ready(t)
	extractor := start(t, "extractor", p.env).ready(t)
	loader := start(t, "loader", p.env).ready(t)
	j := submit(t, planner, jobSpec("scraped", p.srcURL, "scraped", 4, 500, 3))
	if j = await(t, planner, j.ID, 2*time.Minute); j.State != "succeeded" {
		t.Fatalf("job ended %+v", j)
	}

	dir := t.TempDir()
	config := fmt.Sprintf(`global: {scrape_interval: 1s, evaluation_interval: 1s}
scrape_configs:
  - {job_name: planner, static_configs: [{targets: [%q]}]}
  - {job_name: extractor, static_configs: [{targets: [%q]}]}
  - {job_name: loader, static_configs: [{targets: [%q]}]}
`, hostPort(planner), hostPort(extractor), hostPort(loader))
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	listen := "127.0.0.1:" + strconv.Itoa(freePort(t))
	cmd := exec.Command(bin, "--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "data"), "--web.listen-address="+listen)
	logFile, _ := os.Create(filepath.Join(dir, "prometheus.log"))
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "prometheus.log"))
			t.Logf("prometheus log:\n%s", tail(b, 3000))
		}
	})

	queries := []struct {
		query string
		want  float64
	}{
		{`sum(pipeline_records_processed_total{job="loader",status="loaded"})`, n},
		{`sum(pipeline_records_processed_total{job="extractor",status="produced"})`, n},
		{`sum(extractor_tasks_total{outcome="extracted"})`, 4},
		{`sum(loader_rows_inserted_total)`, n},
		{`count(up{job=~"planner|extractor|loader"} == 1)`, 3},
		// Every partition is reported by the one member that owns it, and all is committed.
		{`count(pipeline_consumer_lag_records{job="loader"})`, 6},
		{`sum(pipeline_consumer_lag_records{job=~"extractor|loader"})`, 0},
	}
	for _, q := range queries {
		t.Run(q.query, func(t *testing.T) {
			deadline := time.Now().Add(60 * time.Second)
			var got float64
			for time.Now().Before(deadline) {
				if v, ok := promQuery("http://"+listen, q.query); ok {
					if got = v; got == q.want {
						return
					}
				}
				time.Sleep(250 * time.Millisecond)
			}
			t.Fatalf("%s = %v through Prometheus, want %v", q.query, got, q.want)
		})
	}
}

func hostPort(base string) string { return strings.TrimPrefix(base, "http://") }

// promQuery runs an instant query and returns its single value.
func promQuery(base, query string) (float64, bool) {
	resp, err := http.Get(base + "/api/v1/query?query=" + url.QueryEscape(query))
	if err != nil {
		return 0, false
	}
	defer resp.Body.Close()
	var r struct {
		Data struct {
			Result []struct {
				Value [2]any `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if json.NewDecoder(resp.Body).Decode(&r) != nil || len(r.Data.Result) != 1 {
		return 0, false
	}
	s, _ := r.Data.Result[0].Value[1].(string)
	v, err := strconv.ParseFloat(s, 64)
	return v, err == nil
}
