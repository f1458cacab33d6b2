package chsink

import (
	"fmt"
	"regexp"
)

// Columns of a landing table, in insert order.
var Columns = []string{
	"key", "payload", "job_id", "task_id", "kafka_partition", "kafka_offset",
	"extracted_at", "loaded_at", "version",
}

// legalTable is a table name that needs no quoting beyond back quotes.
var legalTable = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]{0,205}$`)

// ValidTable reports whether name can be a landing table.
func ValidTable(name string) bool { return legalTable.MatchString(name) }

// createTableSQL is the landing table: one row per record, collapsed per key by ReplacingMergeTree
// to the latest extraction (version), so that a re-run job or a replayed topic leaves one row per key
// after merges or with FINAL. The syntax works on ClickHouse 18.16 and on current releases.
func createTableSQL(database, table string) string {
	return fmt.Sprintf("CREATE TABLE IF NOT EXISTS `%s`.`%s` (\n"+
		"  key String,\n"+
		"  payload String,\n"+
		"  job_id String,\n"+
		"  task_id String,\n"+
		"  kafka_partition Int32,\n"+
		"  kafka_offset Int64,\n"+
		"  extracted_at DateTime,\n"+
		"  loaded_at DateTime,\n"+
		"  version UInt64\n"+
		") ENGINE = ReplacingMergeTree(version)\n"+
		"ORDER BY key", database, table)
}
