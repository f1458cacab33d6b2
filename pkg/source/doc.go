// Package source fetches pages from HTTP JSON sources: one request with a timeout and a body cap,
// classified failures, retries with exponential backoff and full jitter under an overall deadline
// that honour Retry-After, and parsing of a whole page and its records' keys.
package source
