package chsink

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"

	"github.com/sluicedata/sluice/pkg/chconn"
	"github.com/sluicedata/sluice/pkg/delivery"
)

// Writer inserts blocks into the tables of one database.
type Writer struct {
	conn *chconn.Conn
	log  *slog.Logger

	mu sync.Mutex
	// schemas are the schemas resolved per table, by sink id ("" for the raw landing rows), and
	// engines the tables' engines.
	schemas map[string]map[string]*Schema
	engines map[string]string
}

// NewWriter returns a writer on conn's database.
func NewWriter(conn *chconn.Conn, log *slog.Logger) *Writer {
	return &Writer{conn: conn, log: log, schemas: map[string]map[string]*Schema{}, engines: map[string]string{}}
}

// Schema returns the schema that the rows of sink (nil: the raw landing rows) take in table,
// creating the table first when it is missing and the sink creates it. It remembers what it
// resolved; Forget makes it look again. Its errors are classified (Classify); a table of engine
// Buffer is a schema error (ErrBufferTable).
func (w *Writer) Schema(ctx context.Context, table string, sink *Sink) (*Schema, error) {
	if !ValidTable(table) {
		return nil, Classify(fmt.Errorf("%w: table name %q is not a plain identifier", ErrIncompatibleTable, table))
	}
	id := ""
	if sink != nil {
		id = sink.ID
	}
	w.mu.Lock()
	s := w.schemas[table][id]
	w.mu.Unlock()
	if s != nil {
		return s, nil
	}
	cols, err := describe(ctx, w.conn, table)
	if err != nil {
		return nil, Classify(err)
	}
	if len(cols) == 0 && (sink == nil || sink.Create) {
		created, err := resolve(nil, sink)
		if err != nil {
			return nil, Classify(err)
		}
		var settings []string
		if w.conn.Features.NonReplicatedDeduplication {
			// The window in which a block inserted again is dropped (by its token, or its hash).
			settings = append(settings, fmt.Sprintf("non_replicated_deduplication_window = %d", DeduplicationWindow))
		}
		if err := w.conn.Exec(ctx, created.CreateSQL(w.conn.Database, table, settings...)); err != nil {
			return nil, Classify(fmt.Errorf("create table %s.%s: %w", w.conn.Database, table, err))
		}
		if cols, err = describe(ctx, w.conn, table); err != nil {
			return nil, Classify(err)
		}
	}
	engine, err := w.engine(ctx, table)
	if err != nil {
		return nil, err
	}
	if err := takesEngine(w.conn.Database, table, engine); err != nil {
		return nil, Classify(err)
	}
	if s, err = resolve(cols, sink); err != nil {
		return nil, Classify(fmt.Errorf("%s.%s: %w", w.conn.Database, table, err))
	}
	w.mu.Lock()
	if w.schemas[table] == nil {
		w.schemas[table] = map[string]*Schema{}
	}
	w.schemas[table][id] = s
	w.mu.Unlock()
	return s, nil
}

// engine returns the engine of table, which it remembers until Forget. Its errors are classified.
func (w *Writer) engine(ctx context.Context, table string) (string, error) {
	w.mu.Lock()
	engine, ok := w.engines[table]
	w.mu.Unlock()
	if ok {
		return engine, nil
	}
	engine, err := engineOf(ctx, w.conn, table)
	if err != nil {
		return "", Classify(err)
	}
	w.mu.Lock()
	w.engines[table] = engine
	w.mu.Unlock()
	return engine, nil
}

// DropsRepeats reports whether table drops a block inserted again, so that a block sent again must
// be formed again exactly as it was: a replicated table (by the block's hash), a Distributed one
// (its shards'), and any table on a server with non_replicated_deduplication_window (sluice creates
// its tables with the window there). Where it does not, a block sent again lands again, and only
// the table's collapsing by version makes it harmless, however the rows were grouped into blocks.
// Its errors are classified.
func (w *Writer) DropsRepeats(ctx context.Context, table string) (bool, error) {
	if w.conn.Features.NonReplicatedDeduplication {
		return true, nil
	}
	engine, err := w.engine(ctx, table)
	if err != nil {
		return false, err
	}
	return engine == engineDistributed || strings.HasPrefix(engine, "Replicated"), nil
}

// DeduplicationWindow is how many recent insert blocks a table that sluice creates remembers, on
// servers that have non_replicated_deduplication_window (20.10 and later): a block inserted again
// within it is dropped.
const DeduplicationWindow = 10000

// EnsureTable creates the raw landing table when it is missing.
func (w *Writer) EnsureTable(ctx context.Context, table string) error {
	_, err := w.Schema(ctx, table, nil)
	return err
}

// Forget drops what the writer remembers about table, after a schema error or a change.
func (w *Writer) Forget(table string) {
	w.mu.Lock()
	delete(w.schemas, table)
	delete(w.engines, table)
	w.mu.Unlock()
}

// Evolve adds a Nullable column to table for each new field, of the type its values suggest, and
// forgets the table's schemas so that the next ones fill the columns. Fields whose names cannot be
// column names are left out (and stay discarded). Columns that exist already (another loader added
// them) are left as they are. Its errors are classified.
func (w *Writer) Evolve(ctx context.Context, table string, fields map[string]*Inference) error {
	defer w.Forget(table)
	return evolve(ctx, w.conn, table, fields, w.log, func(adds string) error {
		return w.conn.Exec(ctx, fmt.Sprintf("ALTER TABLE `%s`.`%s` %s", w.conn.Database, table, adds))
	})
}

// evolve adds the columns of fields that table (in conn's database) lacks, with alter, which takes
// the ADD COLUMN clauses. Its errors are classified.
func evolve(ctx context.Context, conn *chconn.Conn, table string, fields map[string]*Inference, log *slog.Logger, alter func(adds string) error) error {
	missing := func() ([]string, error) {
		cols, err := describe(ctx, conn, table)
		if err != nil {
			return nil, err
		}
		have := map[string]bool{}
		for _, c := range cols {
			have[c.name] = true
		}
		var out []string
		for name := range fields {
			if columnName.MatchString(name) && !have[name] {
				out = append(out, name)
			}
		}
		slices.Sort(out)
		return out, nil
	}
	names, err := missing()
	if err != nil || len(names) == 0 {
		return Classify(err)
	}
	adds := make([]string, len(names))
	for i, name := range names {
		typ := fields[name].Type(conn.Features.Bool, conn.Features.DateTime64)
		if !strings.HasPrefix(typ, "Nullable(") && !strings.HasPrefix(typ, "Array(") {
			typ = "Nullable(" + typ + ")" // the rows before have no value
		}
		adds[i] = fmt.Sprintf("ADD COLUMN `%s` %s", name, typ) // IF NOT EXISTS is newer than 18.16
	}
	if err := alter(strings.Join(adds, ", ")); err != nil {
		if still, derr := missing(); derr == nil && len(still) == 0 {
			return nil // another loader added them meanwhile
		}
		return Classify(fmt.Errorf("add columns %s to %s: %w", strings.Join(names, ", "), table, err))
	}
	log.Info("table evolved", "table", table, "columns", strings.Join(adds, ", "))
	return nil
}

// Insert writes block into table as one insert, with loadedAt as the load time of a loaded_at
// column. token names the block's records: where the server has insert_deduplication_token (22.2
// and later) it goes with the insert, so that a block inserted again is dropped by a table with a
// deduplication window. An insert into a Distributed table waits until its shards have the rows
// (insert_distributed_sync); a Buffer table is refused. Its errors are classified (Classify); on
// a schema error it forgets the table, so that the next attempt looks at it again (and creates it
// again if it went missing).
func (w *Writer) Insert(ctx context.Context, table string, block *Block, loadedAt time.Time, token string) error {
	if block.Len() == 0 {
		return nil
	}
	engine, err := w.engine(ctx, table)
	if err != nil {
		return err
	}
	settings, err := insertSettings(w.conn.Features, engine, token)
	if err != nil {
		w.Forget(table)
		return Classify(fmt.Errorf("%s.%s: %w", w.conn.Database, table, err))
	}
	if len(settings) > 0 {
		ctx = clickhouse.Context(ctx, clickhouse.WithSettings(settings))
	}
	err = Classify(sendBlock(ctx, w.conn, table, block, loadedAt))
	if delivery.ClassOf(err) == delivery.Schema {
		w.Forget(table)
	}
	return err
}

// insertSettings are the settings of an insert into a table of engine, on a server with features:
// what sluice relies on, set explicitly. It refuses a Buffer table (ErrBufferTable).
func insertSettings(f chconn.Features, engine, token string) (clickhouse.Settings, error) {
	if engine == engineBuffer {
		return nil, ErrBufferTable
	}
	settings := clickhouse.Settings{}
	if f.AsyncInsert {
		// Recent releases may default to asynchronous inserts; sluice relies on the insert being
		// durable when it returns, before offsets are committed.
		settings["async_insert"] = 0
	}
	if f.InsertDeduplicationToken && token != "" {
		settings["insert_deduplication_token"] = token
	}
	if engine == engineDistributed {
		// By default a Distributed table acknowledges an insert once the rows are queued on the
		// local disk, before any shard has them. The setting exists in 18.16; current releases
		// call it distributed_foreground_insert and keep this name as its alias.
		settings["insert_distributed_sync"] = 1
	}
	return settings, nil
}

// sendBlock inserts block into table of conn's database, as one insert. A large block goes in
// chunks of sendChunkRows rows, one INSERT all the same: the server gathers an insert's chunks into
// one part (up to min_insert_block_size_rows, a million rows by default), and the client holds one
// chunk's encoded columns at a time instead of the whole block's.
func sendBlock(ctx context.Context, conn *chconn.Conn, table string, block *Block, loadedAt time.Time) error {
	names := block.schema.Names()
	quoted := make([]string, len(names))
	for i, n := range names {
		quoted[i] = "`" + n + "`"
	}
	query := fmt.Sprintf("INSERT INTO `%s`.`%s` (%s)", conn.Database, table, strings.Join(quoted, ", "))
	batch, err := conn.PrepareBatch(ctx, query)
	if err != nil {
		return fmt.Errorf("prepare insert into %s: %w", table, err)
	}
	defer batch.Abort() //nolint:errcheck // a no-op once sent
	for at := 0; at < block.Len(); at += sendChunkRows {
		chunk := block
		if block.Len() > sendChunkRows {
			chunk = block.Slice(at, min(at+sendChunkRows, block.Len()))
			if at > 0 {
				if err := batch.Flush(); err != nil {
					return fmt.Errorf("insert %d rows into %s: %w", block.Len(), table, err)
				}
			}
		}
		cols := batch.Columns()
		for i, col := range chunk.columns(loadedAt) {
			if vals, ok := col.([]string); ok && i < len(cols) {
				reserve(cols[i], vals)
			}
			if err := batch.Column(i).Append(col); err != nil {
				return appendError(names[i], table, err)
			}
		}
	}
	if err := batch.Send(); err != nil {
		return fmt.Errorf("insert %d rows into %s: %w", block.Len(), table, err)
	}
	return nil
}

// sendChunkRows is how many rows of a block sendBlock sends at a time.
const sendChunkRows = 10_000
