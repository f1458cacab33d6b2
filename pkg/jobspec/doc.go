// Package jobspec is the job spec a user submits to the planner (POST /v1/jobs, sluicectl submit):
// which paginated HTTP JSON API to read, how to page through it, how many tasks to split it into and
// which ClickHouse table receives the records. Parse decodes a YAML or JSON document strictly, applies
// the defaults and reports every problem with its field path, so a bad spec is rejected at submit time
// rather than by an extractor halfway through a job.
package jobspec
