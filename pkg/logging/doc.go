// Package logging builds the one JSON *slog.Logger a sluice process uses. The logger is passed
// explicitly to every component, including franz-go (through kslog) and clickhouse-go.
package logging
