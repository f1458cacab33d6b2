// Package pipeline holds what the extractor and the loader share about records in flight: the
// metrics named after the article sluice grew from (pipeline_records_processed_total,
// pipeline_processing_seconds), dead-letter counts, and retry backoff; the retry loop itself is
// pkg/delivery's.
package pipeline
