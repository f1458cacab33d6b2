// Package ops serves what operators and orchestrators ask of every sluice process: Prometheus
// metrics from the process's one registry at /metrics, liveness at /healthz and readiness at
// /readyz, where readiness runs the service's checks (Kafka reachable, ClickHouse reachable).
package ops
