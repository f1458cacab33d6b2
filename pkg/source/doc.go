// Package source is the boundary between sluice and the systems it extracts from. A Source plans
// a job into slices (Plan, and Replan from the extent it found), opens one task's slice, and reads
// it page by page (Reader); New is the one place that knows every kind. The planner and the
// extractor see only this boundary.
//
// The HTTP kind pages a JSON API by offset or page number: one request with a timeout and a body
// cap, classified failures, retries with exponential backoff and full jitter under an overall
// deadline that honour Retry-After, a short page inside a slice fetched again and then failed,
// and parsing of a whole page and its records' keys.
package source
