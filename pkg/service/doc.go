// Package service holds what the three sluice services do alike around their own work: build the
// JSON logger and the metrics registry, connect to Kafka and bootstrap the topics, serve /metrics,
// /healthz and /readyz, and run the service's parts until a signal ends the context.
package service
