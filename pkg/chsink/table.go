package chsink

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/sluicedata/sluice/pkg/chconn"
)

// Columns of a landing table, in insert order.
var Columns = Raw.Names()

// legalTable is a table name that needs no quoting beyond back quotes.
var legalTable = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]{0,205}$`)

// ValidTable reports whether name can be a landing table.
func ValidTable(name string) bool { return legalTable.MatchString(name) }

// createTableSQL is the landing table: one row per record, collapsed per key by ReplacingMergeTree
// to the latest extraction (version), so that a re-run job or a replayed topic leaves one row per key
// after merges or with FINAL.
func createTableSQL(database, table string) string { return Raw.CreateSQL(database, table) }

// ErrIncompatibleTable is an existing table whose columns cannot take the landing rows.
var ErrIncompatibleTable = errors.New("the table exists with columns that cannot take the landing rows")

// CheckTable reports whether table in conn's database, when it exists, can take the landing rows:
// nil when it does not exist (the loader creates it) or has every landing column with its type; an
// error wrapping ErrIncompatibleTable that names every column missing or of another type.
func CheckTable(ctx context.Context, conn *chconn.Conn, table string) error {
	rows, err := conn.Query(ctx, "SELECT name, type FROM system.columns WHERE database = ? AND table = ?", conn.Database, table)
	if err != nil {
		return fmt.Errorf("describe %s.%s: %w", conn.Database, table, err)
	}
	defer rows.Close()
	have := map[string]string{}
	for rows.Next() {
		var name, typ string
		if err := rows.Scan(&name, &typ); err != nil {
			return fmt.Errorf("describe %s.%s: %w", conn.Database, table, err)
		}
		have[name] = typ
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("describe %s.%s: %w", conn.Database, table, err)
	}
	if len(have) == 0 {
		return nil
	}
	wrong := Raw.Mismatches(have)
	if len(wrong) > 0 {
		return fmt.Errorf("%w: %s.%s: %s", ErrIncompatibleTable, conn.Database, table, strings.Join(wrong, "; "))
	}
	return nil
}
