package deploy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// manifest is one Kubernetes object, as a generic tree.
type manifest = map[string]any

func kindOf(m manifest) string { return str(m, "kind") }
func nameOf(m manifest) string { return str(m, "metadata", "name") }

// at walks the tree by map keys and list indexes.
func at(v any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				return nil
			}
			v = m[k]
		case int:
			l, ok := v.([]any)
			if !ok || k >= len(l) {
				return nil
			}
			v = l[k]
		}
	}
	return v
}

func str(v any, path ...any) string {
	s, _ := at(v, path...).(string)
	return s
}

func num(v any, path ...any) int {
	switch n := at(v, path...).(type) {
	case int:
		return n
	case string:
		i, _ := strconv.Atoi(n)
		return i
	}
	return -1
}

// loadManifests parses every YAML document of the files in dir.
func loadManifests(t *testing.T, dir string) map[string][]manifest {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests in %s: %v", dir, err)
	}
	out := map[string][]manifest{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(b))
		for {
			var m manifest
			if err := dec.Decode(&m); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			if m == nil {
				continue
			}
			if kindOf(m) == "" || str(m, "apiVersion") == "" {
				t.Fatalf("%s: a document without kind or apiVersion", f)
			}
			out[filepath.Base(f)] = append(out[filepath.Base(f)], m)
		}
	}
	return out
}

func byKind(all map[string][]manifest, kind string) map[string]manifest {
	out := map[string]manifest{}
	for _, ms := range all {
		for _, m := range ms {
			if kindOf(m) == kind {
				out[nameOf(m)] = m
			}
		}
	}
	return out
}

// TestKubernetesManifests parses deploy/k8s and checks what the README promises of it: probes,
// resources, a grace period longer than the drain, disruption budgets, two planners and how they share the work, a
// PodMonitor that selects every pod, and KEDA ScaledObjects that scale each group by its own lag on
// its own topic, from the earliest offset, to at most one replica per partition.
func TestKubernetesManifests(t *testing.T) {
	base := filepath.Join(repoRoot(t), "deploy", "k8s", "base")
	all := loadManifests(t, base)

	kustomization := all["kustomization.yaml"][0]
	var listed []string
	for _, r := range at(kustomization, "resources").([]any) {
		listed = append(listed, r.(string))
	}
	var files []string
	for f := range all {
		if f != "kustomization.yaml" {
			files = append(files, f)
		}
	}
	slices.Sort(listed)
	slices.Sort(files)
	if !slices.Equal(listed, files) {
		t.Fatalf("kustomization resources %v, files %v", listed, files)
	}

	config := byKind(all, "ConfigMap")["sluice"]
	if config == nil {
		t.Fatal("no ConfigMap sluice")
	}
	cfg := func(name string) string { return str(config, "data", name) }
	shutdown, err := time.ParseDuration(cfg("SLUICE_SHUTDOWN_TIMEOUT"))
	if err != nil {
		t.Fatalf("SLUICE_SHUTDOWN_TIMEOUT: %v", err)
	}

	deployments := byKind(all, "Deployment")
	for _, svc := range []string{"planner", "extractor", "loader"} {
		t.Run(svc, func(t *testing.T) {
			d := deployments["sluice-"+svc]
			if d == nil {
				t.Fatalf("no Deployment sluice-%s", svc)
			}
			pod := at(d, "spec", "template")
			labels := at(pod, "metadata", "labels").(map[string]any)
			if labels["app.kubernetes.io/part-of"] != "sluice" {
				t.Error("pod lacks app.kubernetes.io/part-of: sluice, which the PodMonitor selects")
			}
			for k, v := range at(d, "spec", "selector", "matchLabels").(map[string]any) {
				if labels[k] != v {
					t.Errorf("selector %s=%v does not match the pod's labels", k, v)
				}
			}
			grace := num(pod, "spec", "terminationGracePeriodSeconds")
			if time.Duration(grace)*time.Second < shutdown+10*time.Second {
				t.Errorf("terminationGracePeriodSeconds %d is not comfortably longer than SLUICE_SHUTDOWN_TIMEOUT %s", grace, shutdown)
			}
			c := at(pod, "spec", "containers", 0)
			env := map[string]string{}
			for _, e := range at(c, "env").([]any) {
				env[str(e, "name")] = str(e, "value")
			}
			if str(c, "envFrom", 0, "configMapRef", "name") != "sluice" {
				t.Error("the container does not read the ConfigMap sluice")
			}
			_, port, _ := net.SplitHostPort(env["SLUICE_HTTP_ADDR"])
			if p := strconv.Itoa(num(c, "ports", 0, "containerPort")); p != port || str(c, "ports", 0, "name") != "http" {
				t.Errorf("container port %s (%s) is not SLUICE_HTTP_ADDR's %s", p, str(c, "ports", 0, "name"), port)
			}
			if str(c, "livenessProbe", "httpGet", "path") != "/healthz" || str(c, "readinessProbe", "httpGet", "path") != "/readyz" ||
				str(c, "livenessProbe", "httpGet", "port") != "http" || str(c, "readinessProbe", "httpGet", "port") != "http" {
				t.Error("liveness must ask /healthz and readiness /readyz, on the http port")
			}
			for _, r := range [][]any{{"requests", "cpu"}, {"requests", "memory"}, {"limits", "memory"}} {
				if str(c, append([]any{"resources"}, r...)...) == "" {
					t.Errorf("no resources.%s.%s", r[0], r[1])
				}
			}
			if env["SLUICE_KAFKA_SASL_USERNAME"] != "sluice-"+svc {
				t.Errorf("Kafka user %q, want its own, sluice-%s (the README's ACLs)", env["SLUICE_KAFKA_SASL_USERNAME"], svc)
			}
			if svc == "planner" && (num(d, "spec", "replicas") != 2 || str(d, "spec", "strategy", "type") != "RollingUpdate" ||
				num(d, "spec", "strategy", "rollingUpdate", "maxUnavailable") != 1) {
				t.Error("the planner must run as two replicas, replaced one at a time")
			}
			if svc == "planner" && env["SLUICE_PLANNER_ADVERTISE"] != "http://$(POD_IP):"+port {
				t.Errorf("SLUICE_PLANNER_ADVERTISE %q, want the pod's address on the http port, http://$(POD_IP):%s", env["SLUICE_PLANNER_ADVERTISE"], port)
			}
			pdb := byKind(all, "PodDisruptionBudget")["sluice-"+svc]
			if pdb == nil || str(pdb, "spec", "selector", "matchLabels", "app.kubernetes.io/name") != labels["app.kubernetes.io/name"] {
				t.Errorf("no PodDisruptionBudget selecting sluice-%s", svc)
			}
		})
	}
	if !strings.Contains(string(mustRead(t, filepath.Join(base, "planner.yaml"))), "TWO replicas: one leads") {
		t.Error("planner.yaml does not say how the two planners share the work")
	}
	// A follower forwards writes, tokens and all, only to SLUICE_PLANNER_PEERS: none in the base.
	if peers, ok := at(config, "data").(map[string]any)["SLUICE_PLANNER_PEERS"]; !ok || peers != "" {
		t.Errorf("the ConfigMap's SLUICE_PLANNER_PEERS is %v (set %v), want it set and empty: the base forwards no writes", peers, ok)
	}

	monitor := byKind(all, "PodMonitor")["sluice"]
	if monitor == nil || str(monitor, "spec", "selector", "matchLabels", "app.kubernetes.io/part-of") != "sluice" ||
		str(monitor, "spec", "podMetricsEndpoints", 0, "port") != "http" || str(monitor, "spec", "podMetricsEndpoints", 0, "path") != "/metrics" {
		t.Error("the PodMonitor must scrape /metrics on the http port of every pod part of sluice")
	}

	scaled := byKind(all, "ScaledObject")
	for _, c := range []struct{ svc, topic, groupVar, partitionsVar string }{
		{"extractor", "sluice.tasks", "SLUICE_EXTRACTOR_GROUP", "SLUICE_KAFKA_TASKS_PARTITIONS"},
		{"loader", "sluice.raw", "SLUICE_LOADER_GROUP", "SLUICE_KAFKA_RAW_PARTITIONS"},
	} {
		t.Run("keda-"+c.svc, func(t *testing.T) {
			so := scaled["sluice-"+c.svc]
			if so == nil {
				t.Fatalf("no ScaledObject sluice-%s", c.svc)
			}
			if target := str(so, "spec", "scaleTargetRef", "name"); deployments[target] == nil || target != "sluice-"+c.svc {
				t.Errorf("scaleTargetRef %q", target)
			}
			tr := at(so, "spec", "triggers", 0)
			md := func(k string) string { return str(tr, "metadata", k) }
			if str(tr, "type") != "kafka" || md("topic") != c.topic || md("consumerGroup") != cfg(c.groupVar) ||
				md("offsetResetPolicy") != "earliest" || md("bootstrapServers") != cfg("SLUICE_KAFKA_BROKERS") {
				t.Errorf("trigger %v: want kafka on %s for group %s from earliest at %s", at(tr, "metadata"), c.topic, cfg(c.groupVar), cfg("SLUICE_KAFKA_BROKERS"))
			}
			if n, err := strconv.Atoi(md("lagThreshold")); err != nil || n < 1 {
				t.Errorf("lagThreshold %q", md("lagThreshold"))
			}
			partitions, _ := strconv.Atoi(cfg(c.partitionsVar))
			if max := num(so, "spec", "maxReplicaCount"); max < 1 || max > partitions {
				t.Errorf("maxReplicaCount %d: more replicas than the %d partitions of %s stay idle", max, partitions, c.topic)
			}
			if ref := str(tr, "authenticationRef", "name"); byKind(all, "TriggerAuthentication")[ref] == nil {
				t.Errorf("authenticationRef %q names no TriggerAuthentication", ref)
			}
		})
	}
	keda := string(mustRead(t, filepath.Join(base, "keda.yaml")))
	for _, explained := range []string{"lagThreshold is", "offsetResetPolicy is earliest because", "maxReplicaCount is the topic's partitions"} {
		if !strings.Contains(keda, explained) {
			t.Errorf("keda.yaml does not explain %q", explained)
		}
	}

	// Every variable the manifests set is one the README documents.
	readme := string(mustRead(t, filepath.Join(repoRoot(t), "README.md")))
	for f := range all {
		for _, v := range sluiceVar.FindAllString(string(mustRead(t, filepath.Join(base, f))), -1) {
			if !strings.Contains(readme, "`"+v+"`") {
				t.Errorf("%s sets %s, which the README does not document", f, v)
			}
		}
	}

	// The example overlay builds on the base and patches what exists.
	overlay := loadManifests(t, filepath.Join(repoRoot(t), "deploy", "k8s", "overlays", "example"))["kustomization.yaml"][0]
	if str(overlay, "resources", 0) != "../../base" {
		t.Error("the example overlay does not build on ../../base")
	}
	for i := 0; at(overlay, "patches", i) != nil; i++ {
		kind, name := str(overlay, "patches", i, "target", "kind"), str(overlay, "patches", i, "target", "name")
		if found := byKind(all, kind); len(found) == 0 || name != "" && found[name] == nil {
			t.Errorf("the overlay patches %s %s, which the base does not have", kind, name)
		}
	}
	// It lets the follower forward writes to the leader's pod address: a pod network range.
	var peers []string
	for i := 0; at(overlay, "patches", i) != nil; i++ {
		if str(overlay, "patches", i, "target", "kind") != "ConfigMap" {
			continue
		}
		var ops []map[string]any
		if err := yaml.Unmarshal([]byte(str(overlay, "patches", i, "patch")), &ops); err != nil {
			t.Fatalf("the overlay's ConfigMap patch: %v", err)
		}
		for _, op := range ops {
			if op["path"] == "/data/SLUICE_PLANNER_PEERS" {
				peers = strings.Split(fmt.Sprint(op["value"]), ",")
			}
		}
	}
	if len(peers) == 0 {
		t.Error("the example overlay does not set SLUICE_PLANNER_PEERS: its follower planner forwards no writes")
	}
	for _, p := range peers {
		if _, err := netip.ParsePrefix(strings.TrimSpace(p)); err != nil {
			t.Errorf("the example overlay's SLUICE_PLANNER_PEERS %q is no pod network range: %v", p, err)
		}
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
