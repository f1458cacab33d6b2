package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sethvargo/go-envconfig"
)

// TestValidate checks specs offline: a valid one exits 0 and says what it is; an invalid one exits 1
// with every problem and its field path, literal credentials included.
func TestValidate(t *testing.T) {
	dir := t.TempDir()
	write := func(name, doc string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(doc), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("good.yaml", "name: users\nsource:\n  url: https://api.example.com/users\n  records_path: data\n  key: id\n  pagination: {type: offset, total_path: total}\ntasks: 4\nsink: {table: users}\n")
	bad := write("bad.yaml", "name: Users\nsource:\n  url: \"https://api.example.com/users?api_key=abc\"\n  key: id\n  pagination: {type: sideways}\nsink: {table: users}\n")
	literal := write("literal.yaml", "name: users\nsource:\n  url: https://api.example.com/users\n  key: id\n  headers: {Authorization: \"Bearer abc\"}\n  pagination: {type: offset}\nsink: {table: users}\n")
	for _, c := range []struct {
		file string
		code int
		want []string
	}{
		{good, exitOK, []string{"good.yaml: valid: job users, http source, 4 tasks, into table users"}},
		{bad, exitFailed, []string{"bad.yaml: name: must be 1 to 63 lower-case", "bad.yaml: source.pagination.type:"}},
		{literal, exitFailed, []string{"literal.yaml: source.headers.Authorization: is a credential"}},
	} {
		var stdout, stderr bytes.Buffer
		code, err := run(context.Background(), []string{"validate", c.file}, envconfig.MapLookuper(nil), &stdout, &stderr)
		if code != c.code || (code == exitOK) != (err == nil) {
			t.Fatalf("validate %s: exit %d (%v), want %d\n%s", c.file, code, err, c.code, stdout.String())
		}
		for _, w := range c.want {
			if !strings.Contains(stdout.String(), w) {
				t.Errorf("validate %s: output lacks %q:\n%s", c.file, w, stdout.String())
			}
		}
	}
}

// TestEncode writes JSON and YAML with the same field names, in the same order.
func TestEncode(t *testing.T) {
	v := []job{{ID: "users-1", State: "running", Table: "users"}}
	var j, y bytes.Buffer
	if err := encode(&j, "json", v); err != nil {
		t.Fatal(err)
	}
	if err := encode(&y, "yaml", v); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(j.String(), `"id": "users-1"`) || !strings.HasPrefix(y.String(), "- id: users-1\n  name: \"\"\n  table: users\n  state: running\n") {
		t.Fatalf("json:\n%s\nyaml:\n%s", j.String(), y.String())
	}
}

// TestVersion names the commit and the Go release.
func TestVersion(t *testing.T) {
	var stdout bytes.Buffer
	if code, err := run(context.Background(), []string{"version"}, envconfig.MapLookuper(nil), &stdout, &bytes.Buffer{}); code != 0 || err != nil {
		t.Fatalf("exit %d: %v", code, err)
	}
	if !strings.HasPrefix(stdout.String(), "sluicectl ") || !strings.Contains(stdout.String(), "go1.") {
		t.Fatalf("version: %q", stdout.String())
	}
}

// TestUsageErrorsSaid exits 2 with what was wrong in the command line.
func TestUsageErrorsSaid(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"dlq", "replay"}, "say which letters"},
		{[]string{"dlq", "list", "--stage", "transform"}, `--stage "transform"`},
		{[]string{"dlq", "replay", "--since", "yesterday"}, `--since "yesterday"`},
	} {
		code, err := run(context.Background(), c.args, envconfig.MapLookuper(nil), &bytes.Buffer{}, &bytes.Buffer{})
		if code != exitUsage || err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: exit %d, %v; want 2 saying %q", c.args, code, err, c.want)
		}
	}
}
