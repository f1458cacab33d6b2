package main

import (
	"errors"
	"fmt"

	"github.com/sluicedata/sluice/pkg/chsink"
	"github.com/sluicedata/sluice/pkg/record"
)

// validate decides whether a raw record can be loaded; tables are the names it found valid already. It returns the dead-letter class and the
// reason when it cannot: a bad record is dead-lettered on its own, its neighbours load.
func validate(r *envelope, tables map[string]bool, maxBytes int) (string, error) {
	if !tables[r.table] {
		if !chsink.ValidTable(r.table) {
			return "bad_table", fmt.Errorf("record names table %q, which is not a plain identifier", r.table)
		}
		if len(tables) >= maxInterned {
			clear(tables)
		}
		tables[r.table] = true
	}
	switch {
	case !validSchemaID(r.schema):
		return "bad_envelope", fmt.Errorf("record names sink schema %q, which is not an id", r.schema)
	case r.keyError != "":
		return "missing_key", errors.New(r.keyError)
	case r.key == "":
		return "missing_key", errors.New("record has no key")
	case len(r.payload) > maxBytes:
		return "too_large", fmt.Errorf("record is %d bytes, more than the %d allowed", len(r.payload), maxBytes)
	}
	if r.checked {
		return "", nil // the extractor checked it with its page (pkg/source ParsePage)
	}
	if err := record.Check(r.payload); err != nil {
		return record.Class(err), err
	}
	return "", nil
}

// validSchemaID reports whether id can be a sink schema id: empty, or 16 lower-case hex digits.
func validSchemaID(id string) bool {
	if id == "" {
		return true
	}
	if len(id) != 16 {
		return false
	}
	for i := range len(id) {
		if c := id[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}
