package chconn_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/sluicedata/sluice/pkg/chconn"
	"github.com/sluicedata/sluice/pkg/stacktest"
)

// TestInsertSelectRoundTrip opens the stack's ClickHouse with a database that does not exist yet,
// creates a ReplacingMergeTree table, batch-inserts rows with a named column list (as 18.16 needs),
// and reads back exactly what went in.
func TestInsertSelectRoundTrip(t *testing.T) {
	cfg := stacktest.ClickHouse(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	conn, err := chconn.Open(ctx, cfg, stacktest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if !conn.Version.AtLeast(18, 16) {
		t.Fatalf("server version %s, want 18.16 or later", conn.Version)
	}
	if conn.Features != chconn.FeaturesOf(conn.Version) {
		t.Fatalf("features %+v do not match version %s", conn.Features, conn.Version)
	}
	var database string
	if err := conn.QueryRow(ctx, "SELECT currentDatabase()").Scan(&database); err != nil {
		t.Fatal(err)
	}
	if database != cfg.Database {
		t.Fatalf("connected to database %q, want the created %q", database, cfg.Database)
	}

	err = conn.Exec(ctx, `CREATE TABLE rows (key String, payload String, loaded_at DateTime)
		ENGINE = ReplacingMergeTree(loaded_at) ORDER BY key`)
	if err != nil {
		t.Fatal(err)
	}
	batch, err := conn.PrepareBatch(ctx, "INSERT INTO rows (key, payload, loaded_at)")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC().Truncate(time.Second)
	want := map[string]string{}
	for i := range 1000 {
		key, payload := fmt.Sprintf("k%04d", i), fmt.Sprintf(`{"id":%d,"name":"caf\u00e9 %d"}`, i, i)
		want[key] = payload
		if err := batch.Append(key, payload, now); err != nil {
			t.Fatal(err)
		}
	}
	if err := batch.Send(); err != nil {
		t.Fatal(err)
	}

	rows, err := conn.Query(ctx, "SELECT key, payload, loaded_at FROM rows ORDER BY key")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	got := 0
	for rows.Next() {
		var key, payload string
		var loadedAt time.Time
		if err := rows.Scan(&key, &payload, &loadedAt); err != nil {
			t.Fatal(err)
		}
		if want[key] != payload || !loadedAt.Equal(now) {
			t.Fatalf("row %s = (%q, %s), want (%q, %s)", key, payload, loadedAt, want[key], now)
		}
		got++
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if got != len(want) {
		t.Fatalf("read %d rows, want %d", got, len(want))
	}
	if err := conn.Ping(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestOpenWithoutCreateDatabase fails with UNKNOWN_DATABASE instead of creating it.
func TestOpenWithoutCreateDatabase(t *testing.T) {
	cfg := stacktest.ClickHouse(t)
	cfg.CreateDatabase = false
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := chconn.Open(ctx, cfg, stacktest.Logger(t))
	if err == nil {
		conn.Close()
		t.Fatalf("opened missing database %s without creating it", cfg.Database)
	}
}

// TestOpenUnreachable fails within the dial timeout and names the address, not the password.
func TestOpenUnreachable(t *testing.T) {
	cfg := chconn.Config{Addr: []string{"127.0.0.1:1"}, Database: "default", Username: "default",
		Password: "hunter2-secret", DialTimeout: time.Second, ReadTimeout: time.Second, MaxOpenConns: 1}
	_, err := chconn.Open(context.Background(), cfg, stacktest.Logger(t))
	if err == nil {
		t.Fatal("connected to 127.0.0.1:1")
	}
	if msg := err.Error(); !strings.Contains(msg, "127.0.0.1:1") || strings.Contains(msg, "hunter2") {
		t.Fatalf("error %q should name the address and not the password", msg)
	}
}
