package chsink

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/sluicedata/sluice/pkg/chconn"
)

// column is one column of the landing table: its name and ClickHouse type.
type column struct{ name, typ string }

// landing is the landing table's schema, in insert order: what CREATE TABLE, INSERT and the check
// of an existing table derive from.
var landing = []column{
	{"key", "String"}, {"payload", "String"}, {"job_id", "String"}, {"task_id", "String"},
	{"kafka_partition", "Int32"}, {"kafka_offset", "Int64"},
	{"extracted_at", "DateTime"}, {"loaded_at", "DateTime"}, {"version", "UInt64"},
}

// Columns of a landing table, in insert order.
var Columns = func() []string {
	out := make([]string, len(landing))
	for i, c := range landing {
		out[i] = c.name
	}
	return out
}()

// legalTable is a table name that needs no quoting beyond back quotes.
var legalTable = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]{0,205}$`)

// ValidTable reports whether name can be a landing table.
func ValidTable(name string) bool { return legalTable.MatchString(name) }

// createTableSQL is the landing table: one row per record, collapsed per key by ReplacingMergeTree
// to the latest extraction (version), so that a re-run job or a replayed topic leaves one row per key
// after merges or with FINAL. The syntax works on ClickHouse 18.16 and on current releases.
func createTableSQL(database, table string) string {
	cols := make([]string, len(landing))
	for i, c := range landing {
		cols[i] = "  " + c.name + " " + c.typ
	}
	return fmt.Sprintf("CREATE TABLE IF NOT EXISTS `%s`.`%s` (\n%s\n) ENGINE = ReplacingMergeTree(version)\nORDER BY key",
		database, table, strings.Join(cols, ",\n"))
}

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
	var wrong []string
	for _, c := range landing {
		switch typ, ok := have[c.name]; {
		case !ok:
			wrong = append(wrong, "no column "+c.name)
		case typ != c.typ && !(c.typ == "DateTime" && strings.HasPrefix(typ, "DateTime(")):
			wrong = append(wrong, fmt.Sprintf("%s is %s, not %s", c.name, typ, c.typ))
		}
	}
	if len(wrong) > 0 {
		return fmt.Errorf("%w: %s.%s: %s", ErrIncompatibleTable, conn.Database, table, strings.Join(wrong, "; "))
	}
	return nil
}
