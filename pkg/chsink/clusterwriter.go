package chsink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"

	"github.com/sluicedata/sluice/pkg/chconn"
	"github.com/sluicedata/sluice/pkg/delivery"
)

// LocalSuffix names a cluster's local tables after their Distributed table: users → users_local.
const LocalSuffix = "_local"

// ReplicatedDeduplicationWindow is how many recent insert blocks the local tables that sluice
// creates on a cluster remember (replicated_deduplication_window; 100 by default): a block sent
// again after a crash, a rebalance or a failover is dropped while it is among them. A raw
// partition's commit metadata records at most ~100 planned blocks, each split into one part per
// shard; the window holds those of many partitions and members inserting meanwhile.
const ReplicatedDeduplicationWindow = 10000

// ErrShardUnavailable is a shard none of whose replicas took its part of a block.
var ErrShardUnavailable = errors.New("no replica of the shard took its rows")

// ShardError is an insert that some shards did not take, every one of them for a transient reason
// (it wraps ErrShardUnavailable and their errors): Rows are the indexes, in the block, of the
// rows those shards were to take; the block's other rows are in. Sent again as a block of their
// own, in the same order, with the same load time (and token), those rows make exactly the parts
// that were refused, so that a part that did land after all is dropped as a repeat.
type ShardError struct {
	Rows []int
	Err  error
}

func (e *ShardError) Error() string {
	if e.Err == nil {
		return ErrShardUnavailable.Error()
	}
	return e.Err.Error()
}

func (e *ShardError) Unwrap() []error { return []error{ErrShardUnavailable, e.Err} }

// ErrNotDistributed is a sink table on a cluster that is not a Distributed table: rows written
// to it would land on one server.
var ErrNotDistributed = fmt.Errorf("%w: on a cluster the sink table must be a Distributed table over replicated local tables", ErrIncompatibleTable)

// ClusterWriter inserts blocks into the tables of one database on a cluster: every row straight
// into a replica of its shard, as the table's Distributed engine would route it, falling over to
// the shard's next replica when one does not answer. It creates missing tables ON CLUSTER: a
// replicated local table on every replica and a Distributed table over them, read like one table.
type ClusterWriter struct {
	seed     *chconn.Conn
	cluster  *Cluster
	replicas *replicas
	quorum   int
	log      *slog.Logger
	// OnShard, when set, hears after each insert into a shard whether one of its replicas took it.
	OnShard func(shard uint32, took bool)

	mu     sync.Mutex
	tables map[string]*clusterTable
}

// clusterTable is a sink table on the cluster: its local tables, the column its rows are sharded
// by ("": the first of the schema's sorting key), and the schemas resolved for it by sink id.
type clusterTable struct {
	local   string
	key     string
	schemas map[string]*Schema
}

// NewClusterWriter reads cfg.Cluster's shards through seed, checks that the server computes
// cityHash64 as the loader does, and returns a writer on seed's database.
func NewClusterWriter(ctx context.Context, seed *chconn.Conn, cfg chconn.Config, log *slog.Logger) (*ClusterWriter, error) {
	c, err := ReadCluster(ctx, seed, cfg.Cluster)
	if err != nil {
		return nil, err
	}
	if err := CheckHash(ctx, seed); err != nil {
		return nil, err
	}
	if cfg.CreateDatabase && cfg.Database != "default" {
		if err := seed.Exec(ctx, fmt.Sprintf("CREATE DATABASE IF NOT EXISTS `%s` ON CLUSTER `%s`", cfg.Database, c.Name)); err != nil {
			return nil, fmt.Errorf("create database %s on cluster %s: %w", cfg.Database, c.Name, err)
		}
	}
	return &ClusterWriter{seed: seed, cluster: c, replicas: newReplicas(cfg, log), quorum: cfg.InsertQuorum, log: log,
		tables: map[string]*clusterTable{}}, nil
}

// Close closes the connections to the replicas.
func (w *ClusterWriter) Close() { w.replicas.close() }

// Cluster is the cluster the writer writes.
func (w *ClusterWriter) Cluster() *Cluster { return w.cluster }

// Schema returns the schema that the rows of sink (nil: the raw landing rows) take in table, the
// Distributed table of the cluster, creating it and its local tables when they are missing and
// the sink creates them. The local table on every replica that answers must take the rows too: a
// replica that lacks a column is a schema error that names its shard. Its errors are classified.
func (w *ClusterWriter) Schema(ctx context.Context, table string, sink *Sink) (*Schema, error) {
	if !ValidTable(table) || len(table)+len(LocalSuffix) > 206 {
		return nil, Classify(fmt.Errorf("%w: table name %q is not a plain identifier", ErrIncompatibleTable, table))
	}
	id := ""
	if sink != nil {
		id = sink.ID
	}
	w.mu.Lock()
	if ct := w.tables[table]; ct != nil && ct.schemas[id] != nil {
		defer w.mu.Unlock()
		return ct.schemas[id], nil
	}
	w.mu.Unlock()
	ct, err := w.layout(ctx, table, sink)
	if err != nil {
		return nil, Classify(err)
	}
	cols, err := describe(ctx, w.seed, table)
	if err != nil {
		return nil, Classify(err)
	}
	s, err := resolve(cols, sink)
	if err != nil {
		return nil, Classify(fmt.Errorf("%s.%s: %w", w.seed.Database, table, err))
	}
	key := ct.key
	if key == "" {
		if key, err = sortingColumn(ctx, w.seed, ct.local); err != nil {
			return nil, Classify(err)
		}
		if key == "" {
			return nil, Classify(fmt.Errorf("%w: %s.%s: its sharding key is rand() or none, and its local table %s has no sorting column to shard by instead",
				ErrIncompatibleTable, w.seed.Database, table, ct.local))
		}
	}
	switch c := s.column(key); {
	case c == nil:
		return nil, Classify(fmt.Errorf("%w: %s.%s: its rows are sharded by %s, which the rows do not fill", ErrIncompatibleTable, w.seed.Database, table, key))
	case shardable(c.Type) != nil:
		return nil, Classify(fmt.Errorf("%w: %s.%s: its rows are sharded by %s, and %v", ErrIncompatibleTable, w.seed.Database, table, key, shardable(c.Type)))
	}
	if err := w.checkReplicas(ctx, ct.local, sink); err != nil {
		return nil, err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	ct.key = key
	if have := w.tables[table]; have != nil && have.local == ct.local && have.key == ct.key {
		ct = have // the same layout: its other sinks' schemas stay
	}
	w.tables[table] = ct
	ct.schemas[id] = s
	return s, nil
}

// layout finds, or creates, table's local tables and sharding column.
func (w *ClusterWriter) layout(ctx context.Context, table string, sink *Sink) (*clusterTable, error) {
	engine, full, err := engineFull(ctx, w.seed, table)
	if err != nil {
		return nil, err
	}
	if engine == "" && (sink == nil || sink.Create) {
		created, err := resolve(nil, sink)
		if err != nil {
			return nil, err
		}
		key := created.OrderBy[0]
		if err := shardable(created.column(key).Type); err != nil {
			return nil, fmt.Errorf("%w: %s.%s on cluster %s: its rows would be sharded by %s (the first column of order_by), and %v",
				ErrIncompatibleTable, w.seed.Database, table, w.cluster.Name, key, err)
		}
		local := table + LocalSuffix
		window := fmt.Sprintf("replicated_deduplication_window = %d", ReplicatedDeduplicationWindow)
		for _, sql := range []string{created.LocalSQL(w.seed.Database, local, w.cluster.Name, window),
			created.DistributedSQL(w.seed.Database, table, w.cluster.Name, local, key)} {
			if err := w.seed.Exec(ctx, sql); err != nil {
				return nil, fmt.Errorf("create %s.%s on cluster %s: %w", w.seed.Database, table, w.cluster.Name, err)
			}
		}
		w.log.Info("table created on the cluster", "table", table, "local", local, "cluster", w.cluster.Name, "sharding_key", ShardingKey(key))
		if engine, full, err = engineFull(ctx, w.seed, table); err != nil {
			return nil, err
		}
	}
	if engine == "" {
		return nil, fmt.Errorf("%s.%s: %w", w.seed.Database, table, ErrNoTable)
	}
	return distributedLayout(w.seed.Database, table, w.cluster.Name, engine, full)
}

// checkReplicas checks that every shard has a replica whose local table takes the rows of sink.
// A replica whose table does not (it lacks the table or a column: a replicated ALTER it has yet to
// apply, a replica added later) is said in the log, and inserts go to the shard's others; a shard
// none of whose replicas that answer takes them is a schema error that names it, and a shard
// whose replicas do not answer a transient one.
func (w *ClusterWriter) checkReplicas(ctx context.Context, local string, sink *Sink) error {
	for _, s := range w.cluster.Shards {
		good := 0
		var refused, unreached error
		for _, addr := range s.Replicas {
			conn, err := w.replicas.get(ctx, addr)
			var cols []tableColumn
			if err == nil {
				cols, err = describe(ctx, conn, local)
			}
			if err != nil {
				unreached = err
				continue
			}
			switch _, rerr := resolve(cols, sink); {
			case len(cols) == 0:
				refused = fmt.Errorf("%w: shard %d (replica %s) has no table %s.%s", ErrIncompatibleTable, s.Num, addr, conn.Database, local)
			case rerr != nil:
				refused = fmt.Errorf("shard %d (replica %s): %s.%s: %w", s.Num, addr, conn.Database, local, rerr)
			default:
				good++
				continue
			}
			w.log.Warn("a replica's table does not take the rows; inserts go to the shard's other replicas", "shard", s.Num, "replica", addr, "error", refused)
		}
		switch {
		case good > 0:
		case refused != nil:
			return Classify(refused)
		default:
			return Classify(fmt.Errorf("shard %d: no replica answers: %w", s.Num, unreached))
		}
	}
	return nil
}

// Forget drops what the writer remembers about table, after a schema error or a change.
func (w *ClusterWriter) Forget(table string) {
	w.mu.Lock()
	delete(w.tables, table)
	w.mu.Unlock()
}

// Evolve adds a Nullable column for each new field to table's local tables on every server and to
// the Distributed table, ON CLUSTER, and forgets the table's schemas. Its errors are classified.
func (w *ClusterWriter) Evolve(ctx context.Context, table string, fields map[string]*Inference) error {
	w.mu.Lock()
	ct := w.tables[table]
	w.mu.Unlock()
	defer w.Forget(table)
	if ct == nil {
		return Classify(fmt.Errorf("evolve %s: the table was not looked at", table))
	}
	// The local tables first, then the Distributed one, each given the columns it lacks: an ALTER
	// that reached one and not the other (a member killed between them, a server slow to take its
	// part) is finished by the next try rather than repeated. ON CLUSTER queues the local tables'
	// ALTER for a server that is down, which applies it when it is back, and their replicas pass
	// it on. 18.16 refuses ALTER … ON CLUSTER of a table that is not replicated on a cluster of
	// replicated shards, so the Distributed table is altered on each server in turn: a server that
	// does not answer fails the evolve, which is tried again.
	err := evolve(ctx, w.seed, ct.local, fields, w.log, func(adds string) error {
		return w.seed.Exec(ctx, fmt.Sprintf("ALTER TABLE `%s`.`%s` ON CLUSTER `%s` %s", w.seed.Database, ct.local, w.cluster.Name, adds))
	})
	if err != nil {
		return err
	}
	for _, s := range w.cluster.Shards {
		for _, addr := range s.Replicas {
			conn, err := w.replicas.get(ctx, addr)
			if err != nil {
				return Classify(fmt.Errorf("add the new columns to %s at %s: %w", table, addr, err))
			}
			err = evolve(ctx, conn, table, fields, w.log, func(adds string) error {
				return conn.Exec(ctx, fmt.Sprintf("ALTER TABLE `%s`.`%s` %s", conn.Database, table, adds))
			})
			if err != nil {
				return err
			}
		}
	}
	return nil
}

// DropsRepeats is true: the local tables of a cluster are replicated, and drop a block (a shard's
// part of one) inserted again.
func (w *ClusterWriter) DropsRepeats(context.Context, string) (bool, error) { return true, nil }

// Insert writes block into table's shards: each row into the local table of a replica of the
// shard that the Distributed table sends it to, one insert per shard, the shards at once. A shard's
// part of a block is the same every time the block is, so a replicated table drops it when it is
// sent again (after a failover, a crash or a rebalance); token, where the server takes one, names it
// with its shard. Every shard is tried: the error returned (classified) names a shard that did not
// take its part, the others' parts being in.
func (w *ClusterWriter) Insert(ctx context.Context, table string, block *Block, loadedAt time.Time, token string) error {
	if block.Len() == 0 {
		return nil
	}
	w.mu.Lock()
	ct := w.tables[table]
	w.mu.Unlock()
	if ct == nil {
		return Classify(fmt.Errorf("%w: insert into %s before its schema was resolved", ErrIncompatibleTable, table))
	}
	key := ct.key
	col := block.schema.column(key)
	if col == nil {
		return Classify(fmt.Errorf("%w: %s: no sharding column %s in the rows", ErrIncompatibleTable, table, key))
	}
	routes, err := w.cluster.Route(block, key, col.Type)
	if err != nil {
		return Classify(fmt.Errorf("%w: %s: %v", ErrIncompatibleTable, table, err))
	}
	errs := make([]error, len(routes))
	var wg sync.WaitGroup
	for i, rows := range routes {
		if len(rows) == 0 {
			continue
		}
		part := block
		if len(rows) < block.Len() {
			part = block.Pick(rows)
		}
		wg.Go(func() {
			errs[i] = w.insertShard(ctx, i, ct.local, part, loadedAt, token)
		})
	}
	wg.Wait()
	// A refusal of the rows outranks a failure to reach a shard: the loader dead-letters or holds
	// on the first, and retries the second.
	for _, err := range errs {
		if err != nil && delivery.ClassOf(err) != delivery.Transient {
			if delivery.ClassOf(err) == delivery.Schema {
				w.Forget(table)
			}
			return err
		}
	}
	var refused []int
	for i, err := range errs {
		if err != nil {
			refused = append(refused, routes[i]...)
		}
	}
	if len(refused) == 0 {
		return nil
	}
	slices.Sort(refused)
	return &ShardError{Rows: refused, Err: errors.Join(slices.DeleteFunc(errs, func(e error) bool { return e == nil })...)}
}

// insertShard inserts part into the local table of shard i's replicas: the one that took the last
// part first, then the others, until one takes it. Each replica gets its share of the time left, so
// that one that hangs (stopped, or behind a link that drops packets) gives way to the next. A
// replica that refuses the rows as not fitting its table (a column it lacks) gives way too; the rows
// are refused only when every replica of the shard refuses them.
func (w *ClusterWriter) insertShard(ctx context.Context, i int, local string, part *Block, loadedAt time.Time, token string) error {
	s := w.cluster.Shards[i]
	first := w.replicas.preferred(i)
	shardToken := ""
	if token != "" {
		shardToken = fmt.Sprintf("%s/%d", token, s.Num)
	}
	var last error
	refusals := 0
	for k := range s.Replicas {
		if ctx.Err() != nil {
			break
		}
		r := (first + k) % len(s.Replicas)
		addr := s.Replicas[r]
		actx, cancel := context.WithTimeout(ctx, w.attemptTimeout(ctx, len(s.Replicas)-k))
		err := w.sendTo(actx, addr, local, part, loadedAt, shardToken)
		cancel()
		if err == nil {
			w.replicas.prefer(i, r)
			w.heard(s.Num, true)
			return nil
		}
		last = fmt.Errorf("shard %d (replica %s): %w", s.Num, addr, err)
		switch delivery.ClassOf(err) {
		case delivery.Transient:
		case delivery.Schema:
			refusals++
		default:
			return last // bad rows are bad on every replica
		}
		w.replicas.prefer(i, (r+1)%len(s.Replicas))
		w.log.Warn("a replica did not take its shard's rows; trying the next", "shard", s.Num, "replica", addr, "error", err)
	}
	if refusals == len(s.Replicas) {
		return last
	}
	w.heard(s.Num, false)
	if last == nil {
		last = Classify(ctx.Err())
	}
	return fmt.Errorf("%w: %w", ErrShardUnavailable, last)
}

// attemptTimeout is one replica's share of the time ctx leaves, left replicas to try; without a
// deadline, the read timeout.
func (w *ClusterWriter) attemptTimeout(ctx context.Context, left int) time.Duration {
	dl, ok := ctx.Deadline()
	if !ok {
		return w.replicas.cfg.ReadTimeout
	}
	return max(time.Until(dl)/time.Duration(max(left, 1)), time.Second)
}

// sendTo inserts part into local at the replica at addr. Its errors are classified.
func (w *ClusterWriter) sendTo(ctx context.Context, addr, local string, part *Block, loadedAt time.Time, token string) error {
	conn, err := w.replicas.get(ctx, addr)
	if err != nil {
		return Classify(err)
	}
	settings, _ := insertSettings(conn.Features, "", token)
	if w.quorum > 1 {
		settings["insert_quorum"] = w.quorum
	}
	return Classify(sendBlock(clickhouse.Context(ctx, clickhouse.WithSettings(settings)), conn, local, part, loadedAt))
}

func (w *ClusterWriter) heard(shard uint32, took bool) {
	if w.OnShard != nil {
		w.OnShard(shard, took)
	}
}
