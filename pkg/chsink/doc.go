// Package chsink writes records into ClickHouse landing tables: it creates a table when it is
// missing, inserts one block per call through clickhouse-go's batch API with the columns named (as
// ClickHouse 18.16 needs), refuses tables that acknowledge rows before they are durable (Buffer)
// and writes Distributed ones synchronously, records which jobs own which tables (_sluice_owners),
// and classifies ClickHouse errors into transient, schema and data.
package chsink
