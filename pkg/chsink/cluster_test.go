package chsink

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicedata/sluice/pkg/chconn"
	"github.com/sluicedata/sluice/pkg/stacktest"
	sluicev1 "github.com/sluicedata/sluice/proto/sluice/v1"
)

// TestShardOf gives each shard as many slots as its weight, in shard order, as a Distributed
// table does: with weights 1 and 3, a hash that leaves 0 goes to the first shard, 1–3 to the second.
func TestShardOf(t *testing.T) {
	c, err := NewCluster("c", []Shard{{Num: 1, Weight: 1, Replicas: []string{"a"}}, {Num: 2, Weight: 3, Replicas: []string{"b"}}})
	if err != nil {
		t.Fatal(err)
	}
	for h, want := range map[uint64]int{0: 0, 1: 1, 2: 1, 3: 1, 4: 0, 7: 1, 8: 0} {
		if got := c.ShardOf(h); got != want {
			t.Errorf("ShardOf(%d) = %d, want %d", h, got, want)
		}
	}
	if _, err := NewCluster("c", []Shard{{Num: 1, Weight: 0, Replicas: []string{"a"}}}); err == nil {
		t.Error("a cluster of weight 0 accepted")
	}
	if _, err := NewCluster("c", []Shard{{Num: 1, Weight: 1}}); err == nil {
		t.Error("a shard without replicas accepted")
	}
}

// TestParseDistributed reads the Distributed engines sluice writes through its shards, and refuses
// a sharding key it cannot compute, with why.
func TestParseDistributed(t *testing.T) {
	for _, c := range []struct {
		full string
		want distributed
		bad  bool
	}{
		{full: "Distributed(sluice, default, t_local, cityHash64(key))", want: distributed{"sluice", "default", "t_local", "key"}},
		{full: "Distributed('sluice', 'db', 't_local', cityHash64(`id`))", want: distributed{"sluice", "db", "t_local", "id"}},
		{full: "Distributed(`sluice`, `db`, `t_local`, rand())", want: distributed{"sluice", "db", "t_local", ""}},
		{full: "Distributed(sluice, db, t_local)", want: distributed{"sluice", "db", "t_local", ""}},
		{full: "Distributed(sluice, db, t_local, cityHash64(id), 'hot')", want: distributed{"sluice", "db", "t_local", "id"}},
		{full: "Distributed(sluice, db, t_local, intHash64(id))", bad: true},
		{full: "Distributed(sluice, db, t_local, cityHash64(a, b))", bad: true},
		{full: "MergeTree ORDER BY id", bad: true},
	} {
		got, err := parseDistributed(c.full)
		if c.bad != (err != nil) || !c.bad && got != c.want {
			t.Errorf("parseDistributed(%q) = %+v, %v; want %+v (refused: %v)", c.full, got, err, c.want, c.bad)
		}
	}
}

// TestHashColumnEqualsClickHouse compares the loader's cityHash64 with the server's for many values
// of every type it routes by, in one query per type.
func TestHashColumnEqualsClickHouse(t *testing.T) {
	conn := openConn(t)
	ctx := context.Background()
	if err := CheckHash(ctx, conn); err != nil {
		t.Fatal(err)
	}
	var strs []string
	var ints []int64
	var u32 []uint32
	for i := range 300 {
		strs = append(strs, fmt.Sprintf("key-%d-%s'\\ü", i, strings.Repeat("x", i%70)))
		ints = append(ints, int64(i*7919)-1000)
		u32 = append(u32, uint32(i)*2654435761)
	}
	for _, c := range []struct {
		typ  string
		vals any
		lit  func(i int) string
	}{
		{"String", strs, func(i int) string { return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(strs[i]) + "'" }},
		{"Int64", ints, func(i int) string { return "toInt64(" + strconv.FormatInt(ints[i], 10) + ")" }},
		{"Int16", toInts[int16](ints), func(i int) string { return "toInt16(" + strconv.Itoa(int(int16(ints[i]))) + ")" }},
		{"UInt32", u32, func(i int) string { return "toUInt32(" + strconv.FormatUint(uint64(u32[i]), 10) + ")" }},
	} {
		typ, _ := ParseType(c.typ)
		want, err := HashColumn(typ, c.vals)
		if err != nil {
			t.Fatal(err)
		}
		lits := make([]string, len(want))
		for i := range want {
			lits[i] = "cityHash64(" + c.lit(i) + ")"
		}
		rows, err := conn.Query(ctx, "SELECT arrayJoin(["+joinComma(lits)+"])")
		if err != nil {
			t.Fatal(err)
		}
		var got []uint64
		for rows.Next() {
			var h uint64
			if err := rows.Scan(&h); err != nil {
				t.Fatal(err)
			}
			got = append(got, h)
		}
		rows.Close()
		if !slices.Equal(got, want) {
			t.Errorf("%s: the server's cityHash64 differs from the loader's", c.typ)
		}
	}
}

func toInts[T int16 | int32](in []int64) []T {
	out := make([]T, len(in))
	for i, v := range in {
		out[i] = T(v)
	}
	return out
}

func joinComma(s []string) string {
	out := ""
	for i, v := range s {
		if i > 0 {
			out += ", "
		}
		out += v
	}
	return out
}

// clusterWriter opens a writer on the stack's cluster, in a database of t's own.
func clusterWriter(t *testing.T) (*ClusterWriter, chconn.Config) {
	t.Helper()
	cfg := stacktest.ClickHouseCluster(t)
	ctx := context.Background()
	seed, err := chconn.Open(ctx, cfg, stacktest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { seed.Close() })
	w, err := NewClusterWriter(ctx, seed, cfg, stacktest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Close)
	return w, cfg
}

// rawBlock is a block of n raw landing rows, keys k0…k(n-1), from offset first on.
func rawBlock(t *testing.T, s *Schema, first, n int) *Block {
	t.Helper()
	b := s.NewBlock(n)
	for i := range n {
		o := first + i
		if err := b.Add(&Input{Key: fmt.Sprintf("k%d", o), Record: []byte(`{"n":` + strconv.Itoa(o) + `}`), Job: "job-1", Source: "job-1",
			Offset: int64(o), ExtractedAt: time.Unix(1700000000, 0), Planned: time.Unix(1700000000, 0)}); err != nil {
			t.Fatal(err)
		}
	}
	return b
}

// TestClusterWriter lands raw rows on the stack's 2×2 cluster: the tables are made ON CLUSTER
// (replicated local tables, a Distributed table over them), each row lands on the shard the
// Distributed table's own function picks, both replicas of a shard have it, and a block inserted
// again (as after a crash) is dropped by the replicated tables, so that count() without FINAL is
// the keys.
func TestClusterWriter(t *testing.T) {
	w, cfg := clusterWriter(t)
	ctx := context.Background()
	s, err := w.Schema(ctx, "events", nil)
	if err != nil {
		t.Fatal(err)
	}
	loadedAt := time.Unix(1700000100, 0)
	for range 2 {
		if err := w.Insert(ctx, "events", rawBlock(t, s, 0, 1000), loadedAt, "tok-0-999"); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Insert(ctx, "events", rawBlock(t, s, 1000, 500), loadedAt, "tok-1000-1499"); err != nil {
		t.Fatal(err)
	}
	count := func(conn *chconn.Conn, sql string) uint64 {
		t.Helper()
		var n uint64
		if err := conn.QueryRow(ctx, sql).Scan(&n); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
		return n
	}
	// Every replica of shard i comes to hold exactly the rows whose cityHash64(key) % 2 is i (equal
	// weights), wherever the insert went: replication carries them.
	for i, sh := range w.cluster.Shards {
		for _, addr := range sh.Replicas {
			conn, err := w.replicas.get(ctx, addr)
			if err != nil {
				t.Fatal(err)
			}
			want := uint64(0)
			for k := range 1500 {
				if w.cluster.ShardOf(intHashOfKey(fmt.Sprintf("k%d", k))) == i {
					want++
				}
			}
			await(t, func() bool { return count(conn, "SELECT count() FROM `"+cfg.Database+"`.events_local") >= want })
			if n := count(conn, "SELECT count() FROM `"+cfg.Database+"`.events_local"); n != want {
				t.Errorf("shard %d replica %s holds %d rows, want %d", sh.Num, addr, n, want)
			}
			if wrong := count(conn, fmt.Sprintf("SELECT count() FROM `%s`.events_local WHERE cityHash64(key) %% 2 != %d", cfg.Database, i)); wrong != 0 {
				t.Errorf("shard %d replica %s holds %d rows of the other shard", sh.Num, addr, wrong)
			}
		}
	}
	if n := count(w.seed, "SELECT count() FROM `"+cfg.Database+"`.events"); n != 1500 {
		t.Fatalf("count() without FINAL over the Distributed table = %d, want 1500 (the block inserted twice dropped once)", n)
	}
	if n := count(w.seed, "SELECT uniqExact(key) FROM `"+cfg.Database+"`.events"); n != 1500 {
		t.Fatalf("distinct keys = %d, want 1500", n)
	}
}

// intHashOfKey is the loader's cityHash64 of a String key.
func intHashOfKey(k string) uint64 {
	h, _ := HashColumn(&Type{Kind: KindString, Name: "String"}, []string{k})
	return h[0]
}

// TestClusterWriterFailover inserts into a shard whose first replica does not answer: the block
// goes to the next replica, and sent again (as after a failover) it is dropped.
func TestClusterWriterFailover(t *testing.T) {
	w, cfg := clusterWriter(t)
	ctx := context.Background()
	s, err := w.Schema(ctx, "events", nil)
	if err != nil {
		t.Fatal(err)
	}
	// A port nothing listens on, first in each shard.
	shards := slices.Clone(w.cluster.Shards)
	for i := range shards {
		shards[i].Replicas = append([]string{"127.0.0.1:1"}, shards[i].Replicas...)
	}
	dead, err := NewCluster(w.cluster.Name, shards)
	if err != nil {
		t.Fatal(err)
	}
	w.cluster = dead
	for range 2 {
		if err := w.Insert(ctx, "events", rawBlock(t, s, 0, 200), time.Unix(1700000100, 0), ""); err != nil {
			t.Fatal(err)
		}
	}
	// Each shard's replicas come to hold its rows once: no replica holds more than 200 in all.
	var n uint64
	await(t, func() bool {
		n = 0
		for _, sh := range shards {
			conn, err := w.replicas.get(ctx, sh.Replicas[2])
			if err != nil {
				t.Fatal(err)
			}
			var m uint64
			if err := conn.QueryRow(ctx, "SELECT count() FROM `"+cfg.Database+"`.events_local").Scan(&m); err != nil {
				t.Fatal(err)
			}
			n += m
		}
		return n >= 200
	})
	if n != 200 {
		t.Fatalf("the shards' second replicas hold %d rows, want 200", n)
	}
	// With no replica of a shard answering, the insert fails as transient and names the shard.
	w.cluster, _ = NewCluster(w.cluster.Name, []Shard{{Num: 1, Weight: 1, Replicas: []string{"127.0.0.1:1"}}})
	err = w.Insert(ctx, "events", rawBlock(t, s, 0, 10), time.Unix(1700000100, 0), "")
	if err == nil || !containsAll(err.Error(), "shard 1", "127.0.0.1:1") {
		t.Fatalf("insert with no replica up: %v", err)
	}
}

// TestClusterTables refuses what it cannot write through the shards, each with why: a plain table
// where a Distributed one is wanted, a Distributed table over another cluster, and a sharding key
// the loader cannot compute; a typed table is made with its own sorting key's first column as the
// sharding key, and a replica whose local table lacks a column is a schema problem of its shard.
func TestClusterTables(t *testing.T) {
	w, cfg := clusterWriter(t)
	ctx := context.Background()
	db := "`" + cfg.Database + "`"
	for _, sql := range []string{
		"CREATE TABLE " + db + ".plain ON CLUSTER sluice (key String) ENGINE = MergeTree ORDER BY key",
		"CREATE TABLE " + db + ".dist ON CLUSTER sluice (key String) ENGINE = Distributed(sluice, " + cfg.Database + ", plain, cityHash64(key))",
		"CREATE TABLE " + db + ".mod ON CLUSTER sluice (key String) ENGINE = Distributed(sluice, " + cfg.Database + ", plain, sipHash64(key))",
	} {
		if err := w.seed.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	for table, want := range map[string]string{"plain": "must be a Distributed table", "mod": "not one the loader computes"} {
		_, err := w.Schema(ctx, table, nil)
		if !errors.Is(err, ErrIncompatibleTable) || !containsAll(err.Error(), want) {
			t.Errorf("table %s: %v, want a refusal saying %q", table, err, want)
		}
	}

	// A Distributed table over another cluster than the loader's.
	mine := w.cluster
	w.cluster = &Cluster{Name: "elsewhere", Shards: mine.Shards, slots: mine.slots}
	if _, err := w.Schema(ctx, "dist", nil); !containsAll(fmt.Sprint(err), "over cluster sluice", "sluice writes cluster elsewhere") {
		t.Errorf("a Distributed table of another cluster: %v", err)
	}
	w.cluster = mine

	typed := mustSink(t, &sluicev1.SinkSchema{Table: "users", Create: true, OrderBy: []string{"id"}, Columns: []*sluicev1.SinkColumn{
		{Name: "id", Type: "UInt64", From: "id"}, {Name: "name", Type: "String", From: "name"}}})
	if _, err := w.Schema(ctx, "users", typed); err != nil {
		t.Fatal(err)
	}
	var full string
	if err := w.seed.QueryRow(ctx, "SELECT engine_full FROM system.tables WHERE database = ? AND name = 'users'", cfg.Database).Scan(&full); err != nil {
		t.Fatal(err)
	}
	if !containsAll(full, "Distributed", "users_local", "cityHash64(id)") {
		t.Errorf("users is %s, want a Distributed table over users_local sharded by cityHash64(id)", full)
	}
	// A sink that reads its columns from the table resolves them from the Distributed table, its
	// local tables and its sharding key from the engine: its rows land by id.
	fromTable := mustSink(t, &sluicev1.SinkSchema{Table: "users", FromTable: true})
	fs, err := w.Schema(ctx, "users", fromTable)
	if err != nil {
		t.Fatal(err)
	}
	if got := w.tables["users"]; got.local != "users_local" || got.key != "id" {
		t.Fatalf("from_table sink resolved to %+v, want users_local sharded by id", got)
	}
	blk := fs.NewBlock(100)
	for i := range 100 {
		if err := blk.Add(&Input{Key: strconv.Itoa(i), Record: []byte(fmt.Sprintf(`{"id":%d,"name":"n%d"}`, i, i))}); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Insert(ctx, "users", blk, time.Unix(1700000000, 0), ""); err != nil {
		t.Fatal(err)
	}
	for i, sh := range w.cluster.Shards {
		conn, err := w.replicas.get(ctx, sh.Replicas[0])
		if err != nil {
			t.Fatal(err)
		}
		var wrong uint64
		if err := conn.QueryRow(ctx, fmt.Sprintf("SELECT count() FROM %s.users_local WHERE cityHash64(id) %% 2 != %d", db, i)).Scan(&wrong); err != nil {
			t.Fatal(err)
		}
		if wrong != 0 {
			t.Errorf("shard %d holds %d rows whose id belongs to the other shard", sh.Num, wrong)
		}
	}

	// A replica of shard 2 without its local table: inserts go to the shard's other replica.
	// With both replicas of the shard without it, the schema check says which shard.
	last := w.cluster.Shards[len(w.cluster.Shards)-1]
	for i, addr := range last.Replicas {
		conn, err := w.replicas.get(ctx, addr)
		if err != nil {
			t.Fatal(err)
		}
		if err := conn.Exec(ctx, "DETACH TABLE "+db+".users_local"); err != nil {
			t.Fatal(err)
		}
		defer func() {
			if err := conn.Exec(ctx, "ATTACH TABLE "+db+".users_local"); err != nil {
				t.Error(err)
			}
		}()
		w.Forget("users")
		_, err = w.Schema(ctx, "users", typed)
		switch {
		case i == 0 && err != nil:
			t.Errorf("one replica of shard %d without the local table: %v, want the table taken (its other replica has it)", last.Num, err)
		case i == 0:
			if err := w.Insert(ctx, "users", blk, time.Unix(1700000001, 0), ""); err != nil {
				t.Errorf("insert with one replica of shard %d without the local table: %v", last.Num, err)
			}
		case !containsAll(fmt.Sprint(err), fmt.Sprintf("shard %d (replica ", last.Num), "has no table"):
			t.Errorf("no replica of shard %d with the local table: %v, want a schema problem of that shard", last.Num, err)
		}
	}
}

func containsAll(s string, subs ...string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}

// await waits up to a minute for cond, checking every 100 ms.
func await(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within a minute")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// freezer is a TCP proxy to target that can be frozen: it stops moving bytes both ways, as a
// SIGSTOPped server or a link that drops packets would.
type freezer struct {
	ln     net.Listener
	frozen atomic.Bool
}

func newFreezer(t *testing.T, target string) *freezer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &freezer{ln: ln}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			pipe := func(dst, src net.Conn) {
				defer dst.Close()
				buf := make([]byte, 32<<10)
				for {
					n, err := src.Read(buf)
					for f.frozen.Load() {
						time.Sleep(10 * time.Millisecond)
					}
					if n > 0 {
						if _, werr := dst.Write(buf[:n]); werr != nil {
							return
						}
					}
					if err != nil {
						return
					}
				}
			}
			go pipe(u, c)
			go pipe(c, u)
		}
	}()
	return f
}

// TestClusterWriterHungReplica: the replica shard 1's rows go to hangs (its proxy stops moving
// bytes); the insert gives it its share of the time and goes to the shard's other replica, and
// the next insert starts there.
func TestClusterWriterHungReplica(t *testing.T) {
	w, _ := clusterWriter(t)
	ctx := context.Background()
	s, err := w.Schema(ctx, "events", nil)
	if err != nil {
		t.Fatal(err)
	}
	shards := slices.Clone(w.cluster.Shards)
	fz := newFreezer(t, shards[0].Replicas[0])
	shards[0].Replicas = []string{fz.ln.Addr().String(), shards[0].Replicas[1]}
	c, err := NewCluster(w.cluster.Name, shards)
	if err != nil {
		t.Fatal(err)
	}
	w.cluster = c
	if err := w.Insert(ctx, "events", rawBlock(t, s, 0, 100), time.Unix(1700000100, 0), ""); err != nil {
		t.Fatal(err) // through the proxy: it is shard 1's replica now
	}
	fz.frozen.Store(true)
	ictx, cancel := context.WithTimeout(ctx, 6*time.Second)
	defer cancel()
	if err := w.Insert(ictx, "events", rawBlock(t, s, 100, 100), time.Unix(1700000100, 0), ""); err != nil {
		t.Fatalf("insert with shard 1's replica hung: %v, want it taken by the other replica", err)
	}
	began := time.Now()
	if err := w.Insert(ctx, "events", rawBlock(t, s, 200, 100), time.Unix(1700000100, 0), ""); err != nil || time.Since(began) > 2*time.Second {
		t.Fatalf("the insert after: %v in %s, want it straight to the replica that answered", err, time.Since(began))
	}
}

// TestClusterEvolveFinishesAHalfDoneAlter: the local tables got the new column and the Distributed
// table did not (a loader killed between the two ALTERs): the next evolve adds it to the
// Distributed table rather than failing on the local tables' column, which exists.
func TestClusterEvolveFinishesAHalfDoneAlter(t *testing.T) {
	w, cfg := clusterWriter(t)
	ctx := context.Background()
	sink := mustSink(t, &sluicev1.SinkSchema{Table: "ev", Create: true, OnNewField: "evolve", OrderBy: []string{"id"}, Columns: []*sluicev1.SinkColumn{
		{Name: "id", Type: "UInt64", From: "id"}, {Name: "name", Type: "String", From: "name"}}})
	if _, err := w.Schema(ctx, "ev", sink); err != nil {
		t.Fatal(err)
	}
	if err := w.seed.Exec(ctx, fmt.Sprintf("ALTER TABLE `%s`.ev_local ON CLUSTER sluice ADD COLUMN extra Nullable(String)", cfg.Database)); err != nil {
		t.Fatal(err)
	}
	inf := &Inference{}
	inf.Add([]byte(`"x"`))
	if err := w.Evolve(ctx, "ev", map[string]*Inference{"extra": inf}); err != nil {
		t.Fatalf("evolve after a half-done ALTER: %v", err)
	}
	// A field new to both: every server's local and Distributed tables get it.
	if _, err := w.Schema(ctx, "ev", sink); err != nil {
		t.Fatal(err)
	}
	if err := w.Evolve(ctx, "ev", map[string]*Inference{"more": inf}); err != nil {
		t.Fatalf("evolve: %v", err)
	}
	for _, sh := range w.cluster.Shards {
		for _, addr := range sh.Replicas {
			conn, err := w.replicas.get(ctx, addr)
			if err != nil {
				t.Fatal(err)
			}
			var n uint64
			err = conn.QueryRow(ctx, "SELECT count() FROM system.columns WHERE database = ? AND table IN ('ev', 'ev_local') AND name IN ('extra', 'more')", cfg.Database).Scan(&n)
			if err != nil || n != 4 {
				t.Errorf("server %s has %d of the 4 new columns (extra and more in ev and ev_local): %v", addr, n, err)
			}
		}
	}
}

// TestClusterRandShardedTable: a Distributed table sharded by rand() over replacing local tables
// ordered by id: the loader routes by id (the local table's sorting key), not by the sink's first
// column, so that the versions of one id replace each other on one shard.
func TestClusterRandShardedTable(t *testing.T) {
	w, cfg := clusterWriter(t)
	ctx := context.Background()
	db := "`" + cfg.Database + "`"
	for _, sql := range []string{
		"CREATE TABLE " + db + ".u_local ON CLUSTER sluice (name String, id UInt64, v UInt64) ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/" + cfg.Database + "/u_local', '{replica}', v) ORDER BY id",
		"CREATE TABLE " + db + ".u ON CLUSTER sluice (name String, id UInt64, v UInt64) ENGINE = Distributed(sluice, " + cfg.Database + ", u_local, rand())",
	} {
		if err := w.seed.Exec(ctx, sql); err != nil {
			t.Fatal(err)
		}
	}
	sink := mustSink(t, &sluicev1.SinkSchema{Table: "u", Columns: []*sluicev1.SinkColumn{
		{Name: "name", Type: "String", From: "name"}, {Name: "id", Type: "UInt64", From: "id"}, {Name: "v", Type: "UInt64", From: "v"}}})
	s, err := w.Schema(ctx, "u", sink)
	if err != nil {
		t.Fatal(err)
	}
	if key := w.tables["u"].key; key != "id" {
		t.Fatalf("routes by %q, want id, the local table's sorting key", key)
	}
	for v, name := range []string{"alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi"} {
		b := s.NewBlock(1)
		if err := b.Add(&Input{Key: "1", Record: []byte(fmt.Sprintf(`{"name":%q,"id":1,"v":%d}`, name, v))}); err != nil {
			t.Fatal(err)
		}
		if err := w.Insert(ctx, "u", b, time.Unix(1700000000, 0), ""); err != nil {
			t.Fatal(err)
		}
	}
	holding := 0
	for _, sh := range w.cluster.Shards {
		conn, err := w.replicas.get(ctx, sh.Replicas[0])
		if err != nil {
			t.Fatal(err)
		}
		var m uint64
		await(t, func() bool {
			return conn.QueryRow(ctx, "SELECT count() FROM "+db+".u_local WHERE id = 1").Scan(&m) == nil && (m == 0 || m == 8)
		})
		if m > 0 {
			holding++
		}
	}
	if holding != 1 {
		t.Fatalf("the versions of id 1 are on %d shards, want 1", holding)
	}
}
