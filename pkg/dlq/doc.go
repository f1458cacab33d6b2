// Package dlq builds and produces sluice's dead letters: one topic for every stage, each letter a
// sluicev1.DeadLetter with the original bytes (or a stub with their size and sha256 when too large)
// and its context, repeated as Kafka headers for tools that do not decode protobuf.
package dlq
