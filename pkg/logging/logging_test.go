package logging

import (
	"bytes"
	"encoding/json"
	"testing"
)

func TestNewWritesJSONAtLevel(t *testing.T) {
	var buf bytes.Buffer
	log, err := New(&buf, Config{Level: "warn"}, "loader")
	if err != nil {
		t.Fatal(err)
	}
	log.Info("hidden")
	log.Warn("insert retried", "attempt", 2)

	var line map[string]any
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
		t.Fatalf("want exactly one JSON line, got %q: %v", buf.String(), err)
	}
	if line["msg"] != "insert retried" || line["service"] != "loader" || line["attempt"] != float64(2) {
		t.Fatalf("unexpected line %v", line)
	}
}

func TestValidateRejectsUnknownLevel(t *testing.T) {
	if err := (Config{Level: "loud"}).Validate(); err == nil {
		t.Fatal("want an error for level loud")
	}
	if _, err := New(&bytes.Buffer{}, Config{Level: "loud"}, "x"); err == nil {
		t.Fatal("New accepted level loud")
	}
}
