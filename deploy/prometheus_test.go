package deploy

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
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
	planner := start(t, "planner", p.with(map[string]string{"SLUICE_PLANNER_LAG_INTERVAL": "1s"})).ready(t)
	extractor := start(t, "extractor", p.env).ready(t)
	loader := start(t, "loader", p.env).ready(t)
	j := submit(t, planner, jobSpec("scraped", p.srcURL, "scraped", 4, 500, 3))
	if j = await(t, planner, j.ID, 2*time.Minute); j.State != "succeeded" {
		t.Fatalf("job ended %+v", j)
	}

	dir := t.TempDir()
	rules := filepath.Join(repoRoot(t), "deploy", "prometheus", "alerts.yml")
	config := fmt.Sprintf(`global: {scrape_interval: 1s, evaluation_interval: 1s}
rule_files: [%q]
scrape_configs:
  - {job_name: planner, static_configs: [{targets: [%q]}]}
  - {job_name: extractor, static_configs: [{targets: [%q]}]}
  - {job_name: loader, static_configs: [{targets: [%q]}]}
`, rules, hostPort(planner), hostPort(extractor), hostPort(loader))
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
		// The planner's measure from outside the groups: both caught up, each partition reported once.
		{`count(sluice_consumer_group_lag_records{job="planner"})`, 6 + 6},
		{`sum(sluice_consumer_group_lag_records{job="planner"})`, 0},
		{`max(sluice_consumer_group_lag_seconds{job="planner"})`, 0},
		{`sum(sluice_consumer_group_members{job="planner"})`, 2},
		{`sum(sluice_jobs{state="succeeded"})`, 1},
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
	// With every service scraped, the alert rules and the dashboard hold against what they export.
	alertRulesHold(t, "http://"+listen)
	dashboardHolds(t, "http://"+listen)
}

// alertRulesHold: the alert rules load into the real Prometheus above and evaluate
// without error, and every metric they name is one the services export (a counter that gets its
// first labels only when something happens, such as a dead letter, is checked in the README's
// table instead).
func alertRulesHold(t *testing.T, prom string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get(prom + "/api/v1/rules")
		if err != nil { // Prometheus is still starting
			if time.Now().After(deadline) {
				t.Fatal(err)
			}
			time.Sleep(250 * time.Millisecond)
			continue
		}
		var r struct {
			Data struct {
				Groups []struct {
					Rules []struct {
						Name, Health, Query, LastError string
					}
				}
			}
		}
		err = json.NewDecoder(resp.Body).Decode(&r)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		var ok, all int
		var bad []string
		for _, g := range r.Data.Groups {
			for _, rule := range g.Rules {
				all++
				if rule.Health == "ok" {
					ok++
				} else if rule.LastError != "" {
					bad = append(bad, rule.Name+": "+rule.LastError)
				}
			}
		}
		if all >= 7 && ok == all {
			break
		}
		if len(bad) > 0 || time.Now().After(deadline) {
			t.Fatalf("%d of %d alert rules evaluate: %v", ok, all, bad)
		}
		time.Sleep(250 * time.Millisecond)
	}
	b, err := os.ReadFile(filepath.Join(repoRoot(t), "deploy", "prometheus", "alerts.yml"))
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile(filepath.Join(repoRoot(t), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	var exprs []string
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(strings.TrimSpace(line), "#") {
			exprs = append(exprs, line)
		}
	}
	metricsExported(t, prom, "the alert rules", exprs, string(readme), 6)
}

// metricName is a metric of sluice or of the libraries it exports through.
var metricName = regexp.MustCompile(`\b(?:sluice|pipeline|extractor|loader|planner|kafka|process|ops)_[a-z0-9_]*[a-z0-9]\b|\bup\b`)

// metricsExported checks that every metric the expressions name has series in Prometheus, or, for a
// counter that gets its first labels only when something happens (a dead letter), a row in the
// README's table of metrics.
func metricsExported(t *testing.T, prom, what string, exprs []string, readme string, atLeast int) {
	t.Helper()
	names := map[string]bool{}
	for _, e := range exprs {
		for _, m := range metricName.FindAllString(e, -1) {
			names[m] = true
		}
	}
	if len(names) < atLeast {
		t.Fatalf("only %d metrics named in %s", len(names), what)
	}
	for name := range names {
		if n, ok := promQuery(prom, "count("+name+")"); ok && n > 0 {
			continue
		}
		if !strings.Contains(readme, "| `"+name+"` |") {
			t.Errorf("%s name %s, which no service exported to Prometheus and the README does not list", what, name)
		}
	}
}

// dashboardHolds runs every expression of the dashboard against the real Prometheus (its variables
// set to all): each must be valid PromQL, and every metric it names one the services export.
func dashboardHolds(t *testing.T, prom string) {
	t.Helper()
	d := loadDashboard(t)
	vars := strings.NewReplacer("$__rate_interval", "1m", "$job", ".*", "$group", ".*")
	var exprs []string
	for _, panel := range d.Panels {
		for _, target := range panel.Targets {
			expr := vars.Replace(target.Expr)
			exprs = append(exprs, expr)
			resp, err := http.Get(prom + "/api/v1/query?query=" + url.QueryEscape(expr))
			if err != nil {
				t.Fatal(err)
			}
			var r struct{ Status, Error string }
			err = json.NewDecoder(resp.Body).Decode(&r)
			resp.Body.Close()
			if err != nil || r.Status != "success" {
				t.Errorf("panel %q: %s: %v %s", panel.Title, expr, err, r.Error)
			}
		}
	}
	readme, err := os.ReadFile(filepath.Join(repoRoot(t), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	metricsExported(t, prom, "the dashboard's panels", exprs, string(readme), 15)
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

// TestAlertRules checks the alert rules with promtool and runs their unit tests (alerts_test.yml: a
// firing and a quiet case for each alert).
func TestAlertRules(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("SLUICE_INTEGRATION") == "" {
			t.Skip("promtool is not installed; make test installs Debian's prometheus package")
		}
		t.Fatal("promtool is not installed: make test installs Debian's prometheus package (deploy/local/stack.sh install-tools)")
	}
	dir := filepath.Join(repoRoot(t), "deploy", "prometheus")
	for _, args := range [][]string{{"check", "rules", "alerts.yml"}, {"test", "rules", "alerts_test.yml"}} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		if !strings.Contains(string(out), "SUCCESS") {
			t.Fatalf("promtool %s said no SUCCESS:\n%s", strings.Join(args, " "), out)
		}
	}
}
