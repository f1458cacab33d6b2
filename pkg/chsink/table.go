package chsink

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/sluicedata/sluice/pkg/chconn"
)

// legalTable is a table name that needs no quoting beyond back quotes.
var legalTable = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]{0,205}$`)

// ValidTable reports whether name can be a landing table: a plain identifier, and not sluice's
// own table of owners.
func ValidTable(name string) bool { return legalTable.MatchString(name) && name != OwnersTable }

var (
	// ErrIncompatibleTable is an existing table whose columns cannot take the rows of its sink.
	ErrIncompatibleTable = errors.New("the table exists with columns that cannot take the rows")
	// ErrNoTable is the missing table of a typed sink that does not create it.
	ErrNoTable = errors.New("the table does not exist, and the sink does not create it (create: true would)")
	// ErrBufferTable is a table of engine Buffer: it acknowledges an insert while the rows are in
	// memory, before they are durable, and sluice commits the offsets of what it acknowledged.
	ErrBufferTable = fmt.Errorf("%w: its engine is Buffer, which acknowledges an insert before the rows are durable "+
		"(a restart of the server loses them); land in the Buffer's destination table instead", ErrIncompatibleTable)
)

// Engines that change how sluice writes a table.
const (
	engineBuffer      = "Buffer"
	engineDistributed = "Distributed"
)

// engineOf returns the engine of table in conn's database ("" when it does not exist), as
// system.tables has it on 18.16 and on current releases.
func engineOf(ctx context.Context, conn *chconn.Conn, table string) (string, error) {
	engine, _, err := engineFull(ctx, conn, table)
	return engine, err
}

// takesEngine reports whether sluice writes a table of engine: not a Buffer.
func takesEngine(database, table, engine string) error {
	if engine == engineBuffer {
		return fmt.Errorf("%s.%s: %w", database, table, ErrBufferTable)
	}
	return nil
}

// tableColumn is a column of an existing table that an insert may fill.
type tableColumn struct{ name, typ string }

// describe returns the columns of table that an insert may fill (not MATERIALIZED, ALIAS or
// EPHEMERAL), in the table's order; none when the table does not exist.
func describe(ctx context.Context, conn *chconn.Conn, table string) ([]tableColumn, error) {
	rows, err := conn.Query(ctx, "SELECT name, type, default_kind FROM system.columns WHERE database = ? AND table = ?", conn.Database, table)
	if err != nil {
		return nil, fmt.Errorf("describe %s.%s: %w", conn.Database, table, err)
	}
	defer rows.Close()
	var out []tableColumn
	for rows.Next() {
		var c tableColumn
		var kind string
		if err := rows.Scan(&c.name, &c.typ, &kind); err != nil {
			return nil, fmt.Errorf("describe %s.%s: %w", conn.Database, table, err)
		}
		if kind != "MATERIALIZED" && kind != "ALIAS" && kind != "EPHEMERAL" {
			out = append(out, c)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("describe %s.%s: %w", conn.Database, table, err)
	}
	return out, nil
}

// CheckTable reports whether table in conn's database, when it exists, can take the rows of sink
// (nil: the raw landing rows): nil when it can, or when it does not exist and the loader creates it;
// an error wrapping ErrIncompatibleTable that names every column missing or of another type, or
// ErrNoTable.
//
// A table of engine Buffer is refused (ErrBufferTable, which wraps ErrIncompatibleTable).
func CheckTable(ctx context.Context, conn *chconn.Conn, table string, sink *Sink) error {
	cols, err := describe(ctx, conn, table)
	if err != nil {
		return err
	}
	if len(cols) == 0 && (sink == nil || sink.Create) {
		return nil
	}
	if len(cols) > 0 && conn.Cluster != "" {
		engine, full, err := engineFull(ctx, conn, table)
		if err != nil {
			return err
		}
		if _, err := distributedLayout(conn.Database, table, conn.Cluster, engine, full); err != nil {
			return err
		}
	}
	if len(cols) > 0 && conn.Cluster == "" {
		engine, err := engineOf(ctx, conn, table)
		if err != nil {
			return err
		}
		if err := takesEngine(conn.Database, table, engine); err != nil {
			return err
		}
	}
	_, err = resolve(cols, sink)
	if err != nil {
		return fmt.Errorf("%s.%s: %w", conn.Database, table, err)
	}
	return nil
}

// resolve returns the schema that the rows of sink (nil: the raw landing rows) take in a table
// with the columns cols (none: it does not exist yet).
func resolve(cols []tableColumn, sink *Sink) (*Schema, error) {
	have := make(map[string]string, len(cols))
	var order []string
	for _, c := range cols {
		have[c.name] = c.typ
		order = append(order, c.name)
	}
	if sink == nil {
		raw := Raw
		if _, ok := have[RawJobName]; len(cols) > 0 && !ok {
			raw = rawByKey // created before sluice kept job names: it takes the rows without them
		}
		if len(cols) > 0 {
			if wrong := raw.Mismatches(have); len(wrong) > 0 {
				return nil, fmt.Errorf("%w: %s", ErrIncompatibleTable, strings.Join(wrong, "; "))
			}
		}
		return raw, nil
	}
	if len(cols) == 0 && !sink.Create {
		return nil, ErrNoTable
	}
	s, err := sink.schema(have, order)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrIncompatibleTable, err)
	}
	if len(cols) == 0 {
		return s, nil
	}
	if wrong := s.Mismatches(have); len(wrong) > 0 {
		return nil, fmt.Errorf("%w: %s", ErrIncompatibleTable, strings.Join(wrong, "; "))
	}
	if sink.OnNewField == Evolve && !sink.FromTable {
		// The columns evolution added, and any other the table has: filled by name.
		for _, c := range cols {
			if s.column(c.name) != nil {
				continue
			}
			t, err := ParseType(c.typ)
			if err != nil {
				continue // a column sluice cannot fill keeps its default
			}
			s.Columns = append(s.Columns, Column{Name: c.name, Type: t, Path: c.name, OnError: policyFor(sink.OnError, t)})
		}
	}
	return s, nil
}

// policyFor is a policy that a column of type t can have: null only for a Nullable one.
func policyFor(p Policy, t *Type) Policy {
	if p == Null && !t.Nullable {
		return Strict
	}
	return p
}
