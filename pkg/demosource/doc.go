// Package demosource is a paginated JSON API with deterministic records and configurable faults:
// rate limiting, server errors, slow and truncated responses, malformed records and record ranges
// that always fail. `make demo` and the end-to-end tests extract from it, in-process or as the
// demosource service, and check what lands in ClickHouse against Record.
package demosource
