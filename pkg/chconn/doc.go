// Package chconn opens sluice's ClickHouse connection (clickhouse-go/v2, native protocol), creates
// the configured database when it is missing, and tells which server version answers and which of
// the newer ClickHouse features that version has, so that callers use them only where they exist.
package chconn
