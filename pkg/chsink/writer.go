package chsink

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"
	"unsafe"

	"github.com/ClickHouse/clickhouse-go/v2"

	"github.com/sluicedata/sluice/pkg/chconn"
	"github.com/sluicedata/sluice/pkg/delivery"
)

// Rows is one block of records for one table, column by column, so that appending costs no
// per-row interface conversions.
type Rows struct {
	Keys        []string
	Payloads    []string
	JobIDs      []string
	TaskIDs     []string
	Partitions  []int32
	Offsets     []int64
	ExtractedAt []time.Time
	Versions    []uint64
}

// Add appends one row. It keeps payload without copying it: the caller must not change it later.
func (r *Rows) Add(key string, payload []byte, jobID, taskID string, partition int32, offset int64, extractedAt time.Time) {
	r.Keys = append(r.Keys, key)
	r.Payloads = append(r.Payloads, unsafe.String(unsafe.SliceData(payload), len(payload)))
	r.JobIDs = append(r.JobIDs, jobID)
	r.TaskIDs = append(r.TaskIDs, taskID)
	r.Partitions = append(r.Partitions, partition)
	r.Offsets = append(r.Offsets, offset)
	r.ExtractedAt = append(r.ExtractedAt, extractedAt.UTC().Truncate(time.Second))
	r.Versions = append(r.Versions, uint64(extractedAt.UnixNano()))
}

// Slice returns rows [i, j) as a block of their own, sharing the columns' memory.
func (r *Rows) Slice(i, j int) *Rows {
	return &Rows{Keys: r.Keys[i:j], Payloads: r.Payloads[i:j], JobIDs: r.JobIDs[i:j], TaskIDs: r.TaskIDs[i:j],
		Partitions: r.Partitions[i:j], Offsets: r.Offsets[i:j], ExtractedAt: r.ExtractedAt[i:j], Versions: r.Versions[i:j]}
}

// Len is the number of rows.
func (r *Rows) Len() int { return len(r.Keys) }

// Writer inserts blocks into landing tables of one database.
type Writer struct {
	conn *chconn.Conn
	log  *slog.Logger

	mu      sync.Mutex
	created map[string]bool
}

// NewWriter returns a writer on conn's database.
func NewWriter(conn *chconn.Conn, log *slog.Logger) *Writer {
	return &Writer{conn: conn, log: log, created: map[string]bool{}}
}

// EnsureTable creates the landing table when it is missing. It remembers tables it has made sure
// of; Forget makes it check again.
func (w *Writer) EnsureTable(ctx context.Context, table string) error {
	if !ValidTable(table) {
		return fmt.Errorf("table name %q is not a plain identifier", table)
	}
	w.mu.Lock()
	done := w.created[table]
	w.mu.Unlock()
	if done {
		return nil
	}
	if err := w.conn.Exec(ctx, createTableSQL(w.conn.Database, table)); err != nil {
		return fmt.Errorf("create table %s.%s: %w", w.conn.Database, table, err)
	}
	w.mu.Lock()
	w.created[table] = true
	w.mu.Unlock()
	return nil
}

// Forget drops what the writer remembers about table, after a schema error.
func (w *Writer) Forget(table string) {
	w.mu.Lock()
	delete(w.created, table)
	w.mu.Unlock()
}

// Insert writes rows into table as one block, with loadedAt as their load time. It makes sure the
// table exists first. Its errors are classified (Classify); on a schema error it forgets the table,
// so that the next attempt creates it again if it went missing.
func (w *Writer) Insert(ctx context.Context, table string, rows *Rows, loadedAt time.Time) error {
	if rows.Len() == 0 {
		return nil
	}
	if err := w.EnsureTable(ctx, table); err != nil {
		return Classify(err)
	}
	if w.conn.Features.AsyncInsert {
		// Recent releases may default to asynchronous inserts; sluice relies on the insert being
		// durable when it returns, before offsets are committed.
		ctx = clickhouse.Context(ctx, clickhouse.WithSettings(clickhouse.Settings{"async_insert": 0}))
	}
	err := Classify(w.send(ctx, table, rows, loadedAt))
	if delivery.ClassOf(err) == delivery.Schema {
		w.Forget(table)
	}
	return err
}

func (w *Writer) send(ctx context.Context, table string, rows *Rows, loadedAt time.Time) error {
	query := fmt.Sprintf("INSERT INTO `%s`.`%s` (%s)", w.conn.Database, table, strings.Join(Columns, ", "))
	batch, err := w.conn.PrepareBatch(ctx, query)
	if err != nil {
		return fmt.Errorf("prepare insert into %s: %w", table, err)
	}
	defer batch.Abort() //nolint:errcheck // a no-op once sent
	loaded := make([]time.Time, rows.Len())
	at := loadedAt.UTC().Truncate(time.Second)
	for i := range loaded {
		loaded[i] = at
	}
	columns := []any{rows.Keys, rows.Payloads, rows.JobIDs, rows.TaskIDs, rows.Partitions, rows.Offsets,
		rows.ExtractedAt, loaded, rows.Versions}
	for i, col := range columns {
		if err := batch.Column(i).Append(col); err != nil {
			return appendError(Columns[i], table, err)
		}
	}
	if err := batch.Send(); err != nil {
		return fmt.Errorf("insert %d rows into %s: %w", rows.Len(), table, err)
	}
	return nil
}
