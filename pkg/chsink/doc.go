// Package chsink writes records into ClickHouse landing tables: it creates a table when it is
// missing, inserts one block per call through clickhouse-go's batch API with the columns named (as
// ClickHouse 18.16 needs), and classifies ClickHouse errors into transient, schema and data.
package chsink
