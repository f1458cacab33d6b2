package main

import (
	"errors"
	"fmt"

	"github.com/sluicedata/sluice/pkg/chsink"
	"github.com/sluicedata/sluice/pkg/record"
	sluicev1 "github.com/sluicedata/sluice/proto/sluice/v1"
)

// validate decides whether a raw record can be loaded. It returns the dead-letter class and the
// reason when it cannot: a bad record is dead-lettered on its own, its neighbours load.
func validate(r *sluicev1.Record, maxBytes int) (string, error) {
	switch {
	case !chsink.ValidTable(r.Table):
		return "bad_table", fmt.Errorf("record names table %q, which is not a plain identifier", r.Table)
	case r.KeyError != "":
		return "missing_key", errors.New(r.KeyError)
	case r.Key == "":
		return "missing_key", errors.New("record has no key")
	case len(r.Payload) > maxBytes:
		return "too_large", fmt.Errorf("record is %d bytes, more than the %d allowed", len(r.Payload), maxBytes)
	}
	if err := record.Check(r.Payload); err != nil {
		return record.Class(err), err
	}
	return "", nil
}
