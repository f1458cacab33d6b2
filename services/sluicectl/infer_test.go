package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/sethvargo/go-envconfig"
)

// TestInfer samples a source's first pages and prints the table they call for: each field with
// the type its values take, Nullable where one was missing or null, in the order fields appeared,
// and the lineage columns a created table gets.
func TestInfer(t *testing.T) {
	var requests int
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests++
		if r.Header.Get("Authorization") != "Bearer s3cret" {
			http.Error(w, "no", http.StatusUnauthorized)
			return
		}
		off, _ := strconv.Atoi(r.URL.Query().Get("offset"))
		var recs []string
		for i := off; i < off+2; i++ {
			rec := fmt.Sprintf(`{"id": %d, "at": "2024-03-01T10:00:0%dZ", "score": %d.5, "big": 18446744073709551615, "tags": ["a"], "bad-name": 1`, i, i%10, i)
			if i%2 == 1 {
				rec += `, "note": "late"`
			}
			recs = append(recs, rec+"}")
		}
		fmt.Fprintf(w, `{"data": [%s]}`, strings.Join(recs, ","))
	}))
	defer ts.Close()
	spec := filepath.Join(t.TempDir(), "job.yaml")
	doc := fmt.Sprintf("name: people\nsource:\n  url: %s/people\n  records_path: data\n  key: id\n  headers: {Authorization: \"Bearer ${SOURCE_TOKEN}\"}\n  pagination: {page_size: 2}\nsink: {table: people}\n", ts.URL)
	if err := os.WriteFile(spec, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	code, err := run(context.Background(), []string{"infer", spec, "--pages", "2", "--database", "db"},
		envconfig.MapLookuper(map[string]string{"SOURCE_TOKEN": "s3cret"}), &stdout, &stderr)
	if code != 0 || err != nil {
		t.Fatalf("exit %d: %v\n%s", code, err, stderr.String())
	}
	// Bound elsewhere by SLUICE_SECRET_HOSTS, the token does not go to the source.
	var refused bytes.Buffer
	code, err = run(context.Background(), []string{"infer", spec, "--pages", "2"},
		envconfig.MapLookuper(map[string]string{"SOURCE_TOKEN": "s3cret", "SLUICE_SECRET_HOSTS": "SOURCE_TOKEN=api.example.com"}), io.Discard, &refused)
	if code == 0 || err == nil || !strings.Contains(err.Error(), "${SOURCE_TOKEN} may not be sent to 127.0.0.1") {
		t.Fatalf("a token bound to another host: exit %d: %v", code, err)
	}
	out := stdout.String()
	for _, want := range []string{
		"-- 4 records sampled",
		"CREATE TABLE IF NOT EXISTS `db`.`people` (\n  `id` Int64,\n  `at` DateTime,\n  `score` Float64,\n  `big` UInt64,\n  `tags` Array(String),\n  `note` Nullable(String),\n  `_key` String,\n  `_source` String,\n  `_version` UInt64\n) ENGINE = ReplacingMergeTree(`_version`)\nORDER BY (`_key`, `_source`);",
		"sink:\n  table: people\n  create: true\n  columns:\n    - name: id\n      type: Int64\n",
		"    - name: note\n      type: Nullable(String)\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if !strings.Contains(stderr.String(), `field "bad-name": not a column name`) || !strings.Contains(stderr.String(), "page 2: 2 records (4 sampled)") {
		t.Errorf("stderr:\n%s", stderr.String())
	}
	if strings.Contains(out+stderr.String(), "s3cret") {
		t.Error("the secret was printed")
	}
	// Newer servers get their own types.
	stdout.Reset()
	if code, err := run(context.Background(), []string{"infer", spec, "--pages", "1", "--clickhouse-version", "24.8"},
		envconfig.MapLookuper(map[string]string{"SOURCE_TOKEN": "s3cret"}), &stdout, &stderr); code != 0 || !strings.Contains(stdout.String(), "`at` DateTime64(3)") {
		t.Fatalf("exit %d %v:\n%s", code, err, stdout.String())
	}
}
