// Package record checks that a record's bytes can be loaded as the JSON they claim to be: valid
// UTF-8, valid JSON, no member name twice in one object (encoding/json would keep the last one
// silently), and nesting no deeper than a limit. It reads the bytes once and allocates nothing.
package record
