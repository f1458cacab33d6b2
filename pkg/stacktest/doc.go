// Package stacktest gives integration tests the real Kafka and ClickHouse that `make test` starts
// (deploy/local/stack.sh), with names unique to each test so that tests run side by side. Tests that
// use it are skipped unless SLUICE_INTEGRATION=1, and fail, never skip, when the stack does not answer.
package stacktest
