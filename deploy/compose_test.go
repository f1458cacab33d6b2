package deploy

import (
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
	"go.yaml.in/yaml/v3"

	"github.com/sluicedata/sluice/pkg/jobspec"
)

// repoRoot is the repository root as an absolute path: the compose file's directory and build context.
func repoRoot(t testing.TB) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatalf("resolve repository root: %v", err)
	}
	return root
}

// loadCompose loads ../docker-compose.yml the way Docker Compose does, with an empty environment so
// that nothing on the test machine changes the result.
func loadCompose(t testing.TB) *types.Project {
	t.Helper()
	root := repoRoot(t)
	opts, err := cli.NewProjectOptions(
		[]string{filepath.Join(root, "docker-compose.yml")},
		cli.WithName("sluice-test"),
		cli.WithWorkingDirectory(root),
		// sluicectl is a tool of the stack (profile tools), which `up` does not start.
		cli.WithProfiles([]string{"tools"}),
	)
	if err != nil {
		t.Fatalf("compose options: %v", err)
	}
	p, err := opts.LoadProject(t.Context())
	if err != nil {
		t.Fatalf("load docker-compose.yml: %v", err)
	}
	return p
}

// service returns the named service or stops the test.
func service(t testing.TB, p *types.Project, name string) types.ServiceConfig {
	t.Helper()
	s, err := p.GetService(name)
	if err != nil {
		t.Fatalf("service %s: %v", name, err)
	}
	return s
}

// env returns a service's environment value, and "<unset>" when it has none.
func env(s types.ServiceConfig, name string) string {
	v, ok := s.Environment[name]
	if !ok || v == nil {
		return "<unset>"
	}
	return *v
}

// ports renders a service's published ports as host_ip:published->target/protocol.
func ports(s types.ServiceConfig) []string {
	out := []string{}
	for _, p := range s.Ports {
		out = append(out, fmt.Sprintf("%s:%s->%d/%s", p.HostIP, p.Published, p.Target, p.Protocol))
	}
	slices.Sort(out)
	return out
}

// dependsOn renders a service's dependencies as name -> condition.
func dependsOn(s types.ServiceConfig) map[string]string {
	out := map[string]string{}
	for name, d := range s.DependsOn {
		out[name] = d.Condition
	}
	return out
}

// healthTest returns a service's healthcheck command, nil when it has none.
func healthTest(s types.ServiceConfig) []string {
	if s.HealthCheck == nil || s.HealthCheck.Disable {
		return nil
	}
	return s.HealthCheck.Test
}

// bindSource returns the host path bound at target in a service, "" when nothing is.
func bindSource(s types.ServiceConfig, target string) string {
	for _, v := range s.Volumes {
		if v.Type == types.VolumeTypeBind && v.Target == target {
			return v.Source
		}
	}
	return ""
}

func TestComposeServices(t *testing.T) {
	p := loadCompose(t)
	want := []string{"clickhouse", "demosource", "extractor", "grafana", "kafka", "loader", "planner", "prometheus", "secrets", "sluicectl", "topics"}
	got := slices.Sorted(maps.Keys(p.Services))
	if !slices.Equal(got, want) {
		t.Errorf("services = %v, want %v", got, want)
	}
	wantVolumes := []string{"clickhouse-data", "grafana-data", "kafka-data", "prometheus-data", "sluice-secrets"}
	gotVolumes := slices.Sorted(maps.Keys(p.Volumes))
	if !slices.Equal(gotVolumes, wantVolumes) {
		t.Errorf("volumes = %v, want %v", gotVolumes, wantVolumes)
	}
}

func TestComposePorts(t *testing.T) {
	p := loadCompose(t)
	tests := []struct {
		service string
		want    []string
	}{
		{"kafka", []string{"127.0.0.1:19092->19092/tcp"}},
		{"clickhouse", []string{"127.0.0.1:8123->8123/tcp", "127.0.0.1:9000->9000/tcp"}},
		{"topics", []string{}},
		{"planner", []string{"127.0.0.1:8080->8080/tcp"}},
		// Scalable: no fixed host port, so --scale works.
		{"extractor", []string{}},
		{"loader", []string{}},
		{"demosource", []string{"127.0.0.1:8081->8081/tcp"}},
		{"sluicectl", []string{}},
		{"prometheus", []string{"127.0.0.1:9090->9090/tcp"}},
		{"grafana", []string{"127.0.0.1:3000->3000/tcp"}},
	}
	for _, tt := range tests {
		t.Run(tt.service, func(t *testing.T) {
			got := ports(service(t, p, tt.service))
			if !slices.Equal(got, tt.want) {
				t.Errorf("ports = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestComposeBuilds(t *testing.T) {
	p := loadCompose(t)
	root := repoRoot(t)
	tests := []struct {
		service    string
		dockerfile string
	}{
		{"planner", "services/planner/Dockerfile"},
		{"extractor", "services/extractor/Dockerfile"},
		{"loader", "services/loader/Dockerfile"},
		{"topics", "services/sluicectl/Dockerfile"},
		{"sluicectl", "services/sluicectl/Dockerfile"},
		{"demosource", "services/demosource/Dockerfile"},
	}
	for _, tt := range tests {
		t.Run(tt.service, func(t *testing.T) {
			s := service(t, p, tt.service)
			if s.Build == nil {
				t.Fatal("no build section")
			}
			if s.Build.Context != root {
				t.Errorf("build context = %q, want the repository root %q", s.Build.Context, root)
			}
			if s.Build.Dockerfile != tt.dockerfile {
				t.Errorf("dockerfile = %q, want %q", s.Build.Dockerfile, tt.dockerfile)
			}
			if _, err := os.Stat(filepath.Join(root, filepath.FromSlash(tt.dockerfile))); err != nil {
				t.Errorf("dockerfile: %v", err)
			}
		})
	}
}

func TestComposeEnvironment(t *testing.T) {
	p := loadCompose(t)
	tests := []struct {
		service, name, want string
	}{
		{"topics", "SLUICE_KAFKA_BROKERS", "kafka:9092"},
		{"planner", "SLUICE_KAFKA_BROKERS", "kafka:9092"},
		{"planner", "SLUICE_KAFKA_CREATE_TOPICS", "false"},
		{"planner", "SLUICE_HTTP_ADDR", ":8080"},
		{"planner", "SLUICE_CLICKHOUSE_ADDR", "clickhouse:9000"},
		// The API wants tokens, from the volume the secrets job fills.
		{"planner", "SLUICE_PLANNER_TOKENS_FILE", "/run/secrets/sluice/planner-tokens"},
		{"extractor", "SLUICE_KAFKA_BROKERS", "kafka:9092"},
		{"extractor", "SLUICE_KAFKA_CREATE_TOPICS", "false"},
		{"extractor", "SLUICE_HTTP_ADDR", ":8082"},
		{"loader", "SLUICE_KAFKA_BROKERS", "kafka:9092"},
		{"loader", "SLUICE_KAFKA_CREATE_TOPICS", "false"},
		{"loader", "SLUICE_HTTP_ADDR", ":8083"},
		{"loader", "SLUICE_CLICKHOUSE_ADDR", "clickhouse:9000"},
		// ClickHouse lets its passwordless default user in from other containers (below); the
		// loader logs in as that user.
		{"loader", "SLUICE_CLICKHOUSE_USERNAME", "default"},
		{"loader", "SLUICE_CLICKHOUSE_PASSWORD", ""},
		{"clickhouse", "CLICKHOUSE_SKIP_USER_SETUP", "1"},
		{"kafka", "KAFKA_PROCESS_ROLES", "broker,controller"},
		{"kafka", "KAFKA_ADVERTISED_LISTENERS", "PLAINTEXT://kafka:9092,EXTERNAL://localhost:19092"},
		{"kafka", "KAFKA_AUTO_CREATE_TOPICS_ENABLE", "false"},
		{"kafka", "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "1"},
		{"kafka", "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "1"},
		{"kafka", "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR", "1"},
		{"grafana", "GF_AUTH_ANONYMOUS_ENABLED", "true"},
		{"grafana", "GF_AUTH_ANONYMOUS_ORG_ROLE", "Viewer"},
	}
	for _, tt := range tests {
		t.Run(tt.service+"/"+tt.name, func(t *testing.T) {
			if got := env(service(t, p, tt.service), tt.name); got != tt.want {
				t.Errorf("%s = %q, want %q", tt.name, got, tt.want)
			}
		})
	}
}

func TestComposeDependsOn(t *testing.T) {
	p := loadCompose(t)
	pipeline := map[string]string{
		"kafka":  types.ServiceConditionHealthy,
		"topics": types.ServiceConditionCompletedSuccessfully,
	}
	tests := []struct {
		service string
		want    map[string]string
	}{
		{"kafka", map[string]string{}},
		{"clickhouse", map[string]string{}},
		{"topics", map[string]string{"kafka": types.ServiceConditionHealthy}},
		{"planner", map[string]string{
			"kafka":   types.ServiceConditionHealthy,
			"topics":  types.ServiceConditionCompletedSuccessfully,
			"secrets": types.ServiceConditionCompletedSuccessfully,
		}},
		{"secrets", map[string]string{}},
		{"demosource", map[string]string{}},
		{"sluicectl", map[string]string{"planner": types.ServiceConditionStarted, "demosource": types.ServiceConditionStarted}},
		{"extractor", pipeline},
		{"loader", map[string]string{
			"kafka":      types.ServiceConditionHealthy,
			"topics":     types.ServiceConditionCompletedSuccessfully,
			"clickhouse": types.ServiceConditionHealthy,
		}},
		{"grafana", map[string]string{"prometheus": types.ServiceConditionStarted}},
	}
	for _, tt := range tests {
		t.Run(tt.service, func(t *testing.T) {
			if got := dependsOn(service(t, p, tt.service)); !maps.Equal(got, tt.want) {
				t.Errorf("depends_on = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestComposeHealthchecks(t *testing.T) {
	p := loadCompose(t)
	tests := []struct {
		service string
		want    []string
	}{
		{"kafka", []string{"CMD", "/opt/kafka/bin/kafka-broker-api-versions.sh", "--bootstrap-server", "kafka:9092"}},
		{"clickhouse", []string{"CMD", "clickhouse-client", "--query", "SELECT 1"}},
		// The services' images are FROM scratch: no shell or client to run a check with.
		{"planner", nil},
		{"extractor", nil},
		{"loader", nil},
	}
	for _, tt := range tests {
		t.Run(tt.service, func(t *testing.T) {
			if got := healthTest(service(t, p, tt.service)); !slices.Equal(got, tt.want) {
				t.Errorf("healthcheck test = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestComposeRestart(t *testing.T) {
	p := loadCompose(t)
	tests := []struct {
		service, want string
	}{
		{"topics", types.RestartPolicyNo},
		{"secrets", types.RestartPolicyNo},
		{"sluicectl", types.RestartPolicyNo},
		{"planner", types.RestartPolicyUnlessStopped},
		{"extractor", types.RestartPolicyUnlessStopped},
		{"loader", types.RestartPolicyUnlessStopped},
	}
	for _, tt := range tests {
		t.Run(tt.service, func(t *testing.T) {
			if got := service(t, p, tt.service).Restart; got != tt.want {
				t.Errorf("restart = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestComposeTopicsJob(t *testing.T) {
	s := service(t, loadCompose(t), "topics")
	if got, want := []string(s.Command), []string{"topics"}; !slices.Equal(got, want) {
		t.Errorf("command = %q, want %q", got, want)
	}
}

func TestComposeImages(t *testing.T) {
	p := loadCompose(t)
	tests := []struct {
		service, want string
	}{
		{"kafka", "apache/kafka:4.1.1"},
		{"secrets", "apache/kafka:4.1.1"},
		{"clickhouse", "clickhouse/clickhouse-server:25.8"},
	}
	for _, tt := range tests {
		t.Run(tt.service, func(t *testing.T) {
			if got := service(t, p, tt.service).Image; got != tt.want {
				t.Errorf("image = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestComposeBindMounts(t *testing.T) {
	p := loadCompose(t)
	root := repoRoot(t)
	tests := []struct {
		service, target, source string
	}{
		{"prometheus", "/etc/prometheus/prometheus.yml", "deploy/prometheus/prometheus.yml"},
		{"prometheus", "/etc/prometheus/alerts.yml", "deploy/prometheus/alerts.yml"},
		{"grafana", "/etc/grafana/provisioning", "deploy/grafana/provisioning"},
		{"grafana", "/var/lib/grafana/dashboards", "deploy/grafana/dashboards"},
	}
	for _, tt := range tests {
		t.Run(tt.service+tt.target, func(t *testing.T) {
			want := filepath.Join(root, filepath.FromSlash(tt.source))
			got := bindSource(service(t, p, tt.service), tt.target)
			if got != want {
				t.Errorf("bind source at %s = %q, want %q", tt.target, got, want)
			}
			if _, err := os.Stat(want); err != nil {
				t.Errorf("bind source: %v", err)
			}
		})
	}
}

// prometheusConfig is the part of prometheus.yml the tests read.
type prometheusConfig struct {
	Global struct {
		ScrapeInterval string `yaml:"scrape_interval"`
	} `yaml:"global"`
	RuleFiles     []string `yaml:"rule_files"`
	ScrapeConfigs []struct {
		JobName        string `yaml:"job_name"`
		ScrapeInterval string `yaml:"scrape_interval"`
		StaticConfigs  []struct {
			Targets []string `yaml:"targets"`
		} `yaml:"static_configs"`
		DNSSDConfigs []struct {
			Names []string `yaml:"names"`
			Type  string   `yaml:"type"`
			Port  int      `yaml:"port"`
		} `yaml:"dns_sd_configs"`
	} `yaml:"scrape_configs"`
}

func TestPrometheusTargets(t *testing.T) {
	b, err := os.ReadFile("prometheus/prometheus.yml")
	if err != nil {
		t.Fatal(err)
	}
	var cfg prometheusConfig
	if err := yaml.Unmarshal(b, &cfg); err != nil {
		t.Fatalf("parse prometheus.yml: %v", err)
	}
	if cfg.Global.ScrapeInterval != "5s" {
		t.Errorf("global scrape_interval = %q, want 5s", cfg.Global.ScrapeInterval)
	}
	targets := map[string][]string{}
	intervals := map[string]string{}
	for _, sc := range cfg.ScrapeConfigs {
		intervals[sc.JobName] = sc.ScrapeInterval
		for _, st := range sc.StaticConfigs {
			targets[sc.JobName] = append(targets[sc.JobName], st.Targets...)
		}
		// A DNS name answers every replica of a scaled service.
		for _, dns := range sc.DNSSDConfigs {
			if dns.Type != "A" {
				t.Errorf("%s: dns_sd type %q, want A", sc.JobName, dns.Type)
			}
			for _, n := range dns.Names {
				targets[sc.JobName] = append(targets[sc.JobName], fmt.Sprintf("dns:%s:%d", n, dns.Port))
			}
		}
	}
	if got, want := slices.Sorted(maps.Keys(targets)), []string{"extractor", "loader", "planner"}; !slices.Equal(got, want) {
		t.Errorf("jobs = %v, want %v", got, want)
	}
	if !slices.Equal(cfg.RuleFiles, []string{"/etc/prometheus/alerts.yml"}) {
		t.Errorf("rule_files = %v, want the alert rules", cfg.RuleFiles)
	}

	p := loadCompose(t)
	for _, c := range []struct{ name, want string }{{"planner", "planner:%s"}, {"extractor", "dns:extractor:%s"}, {"loader", "dns:loader:%s"}} {
		t.Run(c.name, func(t *testing.T) {
			s := service(t, p, c.name)
			_, port, err := net.SplitHostPort(env(s, "SLUICE_HTTP_ADDR"))
			if err != nil {
				t.Fatalf("SLUICE_HTTP_ADDR: %v", err)
			}
			want := []string{fmt.Sprintf(c.want, port)}
			if got := targets[c.name]; !slices.Equal(got, want) {
				t.Errorf("targets = %v, want %v (where the service listens: SLUICE_HTTP_ADDR)", got, want)
			}
			// A job may only keep the 5s global interval.
			if got := intervals[c.name]; got != "" {
				t.Errorf("scrape_interval = %q, want the global 5s", got)
			}
		})
	}
}

// TestComposeFirstJob: `docker compose run --rm sluicectl submit /examples/demo.yaml --wait` runs a
// first job: sluicectl is a tool of the stack with the planner's token and the examples mounted; the
// example is a valid spec whose source is the compose demo source, which the planner and the
// extractor allow.
func TestComposeFirstJob(t *testing.T) {
	p := loadCompose(t)
	ctl := service(t, p, "sluicectl")
	if !slices.Equal(ctl.Profiles, []string{"tools"}) {
		t.Errorf("sluicectl profiles %v: `up` must not start it", ctl.Profiles)
	}
	if env(ctl, "SLUICE_PLANNER_URL") != "http://planner:8080" || env(ctl, "SLUICE_PLANNER_TOKEN_FILE") != "/run/secrets/sluice/admin-token" {
		t.Errorf("sluicectl reaches the planner at %q with the token file %q", env(ctl, "SLUICE_PLANNER_URL"), env(ctl, "SLUICE_PLANNER_TOKEN_FILE"))
	}
	if got := bindSource(ctl, "/examples"); got != filepath.Join(repoRoot(t), "deploy", "compose", "examples") {
		t.Errorf("/examples is bound to %q", got)
	}
	b, err := os.ReadFile(filepath.Join(repoRoot(t), "deploy", "compose", "examples", "demo.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	spec, err := jobspec.Parse(b)
	if err != nil {
		t.Fatalf("the example spec: %v", err)
	}
	u, err := url.Parse(spec.Source.URL)
	if err != nil {
		t.Fatal(err)
	}
	demo := service(t, p, "demosource")
	if _, port, _ := net.SplitHostPort(env(demo, "SLUICE_HTTP_ADDR")); u.Hostname() != "demosource" || u.Port() != port {
		t.Errorf("the example reads %s, not the demo source at demosource:%s", u.Host, port)
	}
	for _, svc := range []string{"planner", "extractor"} {
		if !slices.Contains(strings.Split(env(service(t, p, svc), "SLUICE_SOURCE_ALLOW"), ","), "demosource") {
			t.Errorf("%s does not allow the demo source (SLUICE_SOURCE_ALLOW)", svc)
		}
	}
	readme, _ := os.ReadFile(filepath.Join(repoRoot(t), "README.md"))
	if !strings.Contains(string(readme), "docker compose run --rm sluicectl submit /examples/demo.yaml --wait") {
		t.Error("the README does not show the first job")
	}
}

// dashboard is the part of a Grafana dashboard the tests read.
type dashboard struct {
	UID           string `json:"uid"`
	Title         string `json:"title"`
	SchemaVersion int    `json:"schemaVersion"`
	Templating    struct {
		List []struct {
			Name, Type string
			Query      any
		} `json:"list"`
	} `json:"templating"`
	Panels []struct {
		ID         int    `json:"id"`
		Type       string `json:"type"`
		Title      string `json:"title"`
		Datasource struct {
			UID string `json:"uid"`
		} `json:"datasource"`
		Targets []struct {
			Expr       string `json:"expr"`
			Datasource struct {
				UID string `json:"uid"`
			} `json:"datasource"`
		} `json:"targets"`
	} `json:"panels"`
}

// loadDashboard reads the provisioned dashboard.
func loadDashboard(t *testing.T) dashboard {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot(t), "deploy", "grafana", "dashboards", "sluice-overview.json"))
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("parse dashboard: %v", err)
	}
	return d
}

// TestGrafanaDashboard: the dashboard is portable (its datasource a variable, no job name written
// in an expression) and has the panels the README lists; TestPrometheusScrapesServices runs every
// expression against a real Prometheus scraping the services.
func TestGrafanaDashboard(t *testing.T) {
	d := loadDashboard(t)
	if d.UID == "" || d.Title == "" {
		t.Errorf("uid %q, title %q: a provisioned dashboard needs both", d.UID, d.Title)
	}
	if d.SchemaVersion != 39 {
		t.Errorf("schemaVersion = %d, want 39", d.SchemaVersion)
	}
	vars := map[string]string{}
	for _, v := range d.Templating.List {
		vars[v.Name] = v.Type
	}
	if vars["datasource"] != "datasource" || vars["job"] != "query" || vars["group"] != "query" {
		t.Errorf("template variables %v: want a datasource variable and job and group queries", vars)
	}
	ids := map[int]string{}
	titles := map[string]bool{}
	for _, panel := range d.Panels {
		ids[panel.ID] = panel.Title
		titles[panel.Title] = true
	}
	if len(ids) != len(d.Panels) {
		t.Errorf("%d panels share %d ids: each needs its own", len(d.Panels), len(ids))
	}
	for _, want := range []string{"Lag per partition (records)", "Lag in seconds", "Drain estimate", "Members", "Jobs by state",
		"Records per second by stage", "Dead letters by class", "Page latency", "Insert latency", "Rows per insert block"} {
		if !titles[want] {
			t.Errorf("no panel %q", want)
		}
	}
	hardJob := regexp.MustCompile(`job\s*=~?\s*"[a-z]`)
	for _, panel := range d.Panels {
		if panel.Type == "row" {
			continue
		}
		t.Run(panel.Title, func(t *testing.T) {
			if panel.Datasource.UID != "${datasource}" {
				t.Errorf("datasource uid = %q, want the variable ${datasource}", panel.Datasource.UID)
			}
			if len(panel.Targets) == 0 {
				t.Fatal("panel has no query")
			}
			for _, target := range panel.Targets {
				if target.Expr == "" || target.Datasource.UID != "${datasource}" {
					t.Errorf("target %q with datasource %q", target.Expr, target.Datasource.UID)
				}
				if hardJob.MatchString(target.Expr) {
					t.Errorf("%q writes a job name: in Kubernetes the job label is the PodMonitor's", target.Expr)
				}
			}
		})
	}
}

func TestGrafanaProvisioning(t *testing.T) {
	var ds struct {
		Datasources []struct {
			UID  string `yaml:"uid"`
			Type string `yaml:"type"`
			URL  string `yaml:"url"`
		} `yaml:"datasources"`
	}
	readYAML(t, "grafana/provisioning/datasources/prometheus.yml", &ds)
	if len(ds.Datasources) != 1 {
		t.Fatalf("%d datasources, want 1", len(ds.Datasources))
	}
	if got := ds.Datasources[0]; got.UID != "prometheus" || got.Type != "prometheus" || got.URL != "http://prometheus:9090" {
		t.Errorf("datasource = %+v, want uid prometheus, type prometheus, url http://prometheus:9090", got)
	}

	var dp struct {
		Providers []struct {
			Type    string `yaml:"type"`
			Options struct {
				Path string `yaml:"path"`
			} `yaml:"options"`
		} `yaml:"providers"`
	}
	readYAML(t, "grafana/provisioning/dashboards/sluice.yml", &dp)
	if len(dp.Providers) != 1 {
		t.Fatalf("%d dashboard providers, want 1", len(dp.Providers))
	}
	if got := dp.Providers[0]; got.Type != "file" || got.Options.Path != "/var/lib/grafana/dashboards" {
		t.Errorf("provider = %+v, want type file at /var/lib/grafana/dashboards", got)
	}
	grafana := service(t, loadCompose(t), "grafana")
	if bindSource(grafana, dp.Providers[0].Options.Path) == "" {
		t.Errorf("compose mounts no dashboards at %s", dp.Providers[0].Options.Path)
	}
}

func readYAML(t testing.TB, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, v); err != nil {
		t.Fatalf("parse %s: %v", path, err)
	}
}

// sluiceVar is a sluice configuration variable name.
var sluiceVar = regexp.MustCompile(`\bSLUICE_[A-Z0-9_]+\b`)

// TestComposeVariablesDocumented checks that the README documents every SLUICE_ variable the compose
// file sets, so a user who reads the compose file can look each one up.
func TestComposeVariablesDocumented(t *testing.T) {
	p := loadCompose(t)
	used := map[string]bool{}
	for _, s := range p.Services {
		for name := range s.Environment {
			used[name] = true
		}
	}
	maps.DeleteFunc(used, func(name string, _ bool) bool { return !strings.HasPrefix(name, "SLUICE_") })
	if len(used) == 0 {
		t.Fatal("docker-compose.yml sets no SLUICE_ variable")
	}
	readme, err := os.ReadFile(filepath.Join(repoRoot(t), "README.md"))
	if err != nil {
		t.Fatalf("read README.md: %v", err)
	}
	documented := map[string]bool{}
	for _, name := range sluiceVar.FindAllString(string(readme), -1) {
		documented[name] = true
	}
	for _, name := range slices.Sorted(maps.Keys(used)) {
		t.Run(name, func(t *testing.T) {
			if !documented[name] {
				t.Errorf("%s is set in docker-compose.yml but not documented in README.md", name)
			}
		})
	}
}
