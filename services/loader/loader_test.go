package main

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sethvargo/go-envconfig"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sluicedata/sluice/pkg/chconn"
	"github.com/sluicedata/sluice/pkg/dlq"
	"github.com/sluicedata/sluice/pkg/kafka"
	"github.com/sluicedata/sluice/pkg/stacktest"
	sluicev1 "github.com/sluicedata/sluice/proto/sluice/v1"
)

// TestMalformedRecordsAreDeadLettered puts good records and malformed ones on the real raw topic and
// runs the loader: exactly the malformed ones end in the dead-letter topic with their class and
// origin, every good one is in ClickHouse byte for byte, and the committed offsets reach the end of
// every partition.
func TestMalformedRecordsAreDeadLettered(t *testing.T) {
	kcfg := stacktest.Kafka(t)
	chcfg := stacktest.ClickHouse(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	cl, err := kafka.NewClient(kcfg, "test", stacktest.Logger(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := kafka.Bootstrap(ctx, cl, kcfg, stacktest.Logger(t)); err != nil {
		t.Fatal(err)
	}

	const good = 5000
	wantRows := map[string]string{}
	var recs []*kgo.Record
	envelope := func(key string, payload []byte, mutate func(*sluicev1.Record)) *kgo.Record {
		r := &sluicev1.Record{JobId: "job-1", TaskId: "job-1-t0", Key: key, Payload: payload, Table: "landing",
			ExtractedAt: timestamppb.Now()}
		if mutate != nil {
			mutate(r)
		}
		b, err := proto.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		return &kgo.Record{Topic: kcfg.RawTopic, Key: []byte(key), Value: b}
	}
	for i := range good {
		key := fmt.Sprint(i)
		payload := fmt.Sprintf(`{"id":%d,"name":"user %d","tags":["a","b"]}`, i, i)
		wantRows[key] = payload
		recs = append(recs, envelope(key, []byte(payload), nil))
	}
	bad := []struct {
		class  string
		record *kgo.Record
	}{
		{"bad_json", envelope("bad-json", []byte(`{"id": "bad-json",`), nil)},
		{"invalid_utf8", envelope("bad-utf8", []byte("{\"id\":\"bad-utf8\",\"name\":\"\xff\xfe\"}"), nil)},
		{"duplicate_key", envelope("dup-key", []byte(`{"id":"dup-key","name":"a","name":"b"}`), nil)},
		{"missing_key", envelope("", []byte(`{"name":"no id"}`), func(r *sluicev1.Record) { r.KeyError = `field "id" is missing` })},
		{"too_large", envelope("too-large", []byte(`{"id":"too-large","pad":"`+strings.Repeat("x", 200_000)+`"}`), nil)},
		{"bad_envelope", &kgo.Record{Topic: kcfg.RawTopic, Key: []byte("not-proto"), Value: []byte("\xff\xff\xff not protobuf")}},
	}
	// Spread the bad records between good ones.
	for i, b := range bad {
		at := (i + 1) * good / (len(bad) + 1)
		recs = slices.Insert(recs, at, b.record)
	}
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}

	env := stacktest.Env(kcfg, &chcfg)
	env["SLUICE_HTTP_ADDR"] = "127.0.0.1:0"
	env["SLUICE_LOADER_GROUP"] = stacktest.Name(t, "loader")
	env["SLUICE_LOADER_BATCH_ROWS"] = "1000"
	env["SLUICE_LOADER_MAX_RECORD_BYTES"] = "100000"
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	logs := &stacktest.LogWriter{}
	t.Cleanup(func() {
		if t.Failed() {
			for _, l := range logs.Lines() {
				t.Log(l)
			}
		}
	})
	go func() { done <- run(runCtx, envconfig.MapLookuper(env), logs) }()

	conn, err := chconn.Open(ctx, chcfg, stacktest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	waitFor(t, ctx, "all good rows in clickhouse", func() bool {
		var n uint64
		err := conn.QueryRow(ctx, "SELECT count() FROM landing").Scan(&n)
		return err == nil && n >= good
	})
	dlqCtx, dlqCancel := context.WithTimeout(ctx, 30*time.Second)
	letters := readDeadLetters(t, dlqCtx, kcfg, len(bad))
	dlqCancel()
	waitFor(t, ctx, "offsets committed to the end", func() bool { return committedToEnd(t, ctx, cl, env["SLUICE_LOADER_GROUP"], kcfg.RawTopic) })
	stop()
	if err := <-done; err != nil {
		t.Fatalf("loader: %v", err)
	}

	got := map[string]string{}
	rows, err := conn.Query(ctx, "SELECT key, payload FROM landing FINAL")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var k, p string
		if err := rows.Scan(&k, &p); err != nil {
			t.Fatal(err)
		}
		got[k] = p
	}
	rows.Close()
	if !maps.Equal(got, wantRows) {
		t.Fatalf("clickhouse has %d rows, want the %d good records byte for byte", len(got), len(wantRows))
	}

	for _, b := range bad {
		t.Run(b.class, func(t *testing.T) {
			dl, ok := letters[string(b.record.Key)]
			if !ok {
				t.Fatalf("no dead letter for key %q; letters: %v", b.record.Key, slices.Collect(maps.Keys(letters)))
			}
			if dl.ErrorClass != b.class || dl.Stage != sluicev1.DeadLetter_STAGE_LOAD || dl.OriginalTopic != kcfg.RawTopic ||
				dl.ErrorMessage == "" || dl.PayloadSize == 0 || len(dl.PayloadSha256) != 32 {
				t.Fatalf("dead letter %+v", dl)
			}
			if dl.Truncated != (b.class == "too_large") {
				t.Fatalf("truncated = %v for class %s", dl.Truncated, b.class)
			}
		})
	}
}

// readDeadLetters reads n dead letters from the start of the dead-letter topic, by original key.
func readDeadLetters(t *testing.T, ctx context.Context, kcfg kafka.Config, n int) map[string]*sluicev1.DeadLetter {
	t.Helper()
	cl, err := kafka.NewClient(kcfg, "test-dlq", stacktest.Logger(t), nil,
		kgo.ConsumeTopics(kcfg.DLQTopic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	out := map[string]*sluicev1.DeadLetter{}
	for len(out) < n {
		fetches := cl.PollFetches(ctx)
		if err := fetches.Err0(); err != nil {
			t.Fatalf("read dead letters after %d of %d (%v): %v", len(out), n, slices.Collect(maps.Keys(out)), err)
		}
		fetches.EachRecord(func(r *kgo.Record) {
			dl, err := dlq.Decode(r)
			if err != nil {
				t.Fatal(err)
			}
			out[string(dl.OriginalKey)] = dl
		})
	}
	return out
}

// committedToEnd reports whether group's committed offsets equal the end offsets of every partition.
func committedToEnd(t *testing.T, ctx context.Context, cl *kgo.Client, group, topic string) bool {
	adm := kadm.NewClient(cl)
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		return false
	}
	committed, err := adm.FetchOffsets(ctx, group)
	if err != nil {
		return false
	}
	all := true
	ends.Each(func(o kadm.ListedOffset) {
		c, ok := committed.Lookup(topic, o.Partition)
		if o.Offset > 0 && (!ok || c.At != o.Offset) {
			all = false
		}
	})
	return all
}

// waitFor polls cond until it holds or ctx ends.
func waitFor(t *testing.T, ctx context.Context, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("gave up waiting for %s", what)
		case <-time.After(100 * time.Millisecond):
		}
	}
}
