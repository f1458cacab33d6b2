package source

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// ErrPageShape is a response that parsed as JSON but does not have the records where the job says.
var ErrPageShape = errors.New("page has no records array at the records path")

// Page is one parsed response: its records exactly as the source sent them, and the total the
// source reported (-1 when it gave none).
type Page struct {
	Records []json.RawMessage
	Total   int64
}

// ParsePage parses a whole response body before any of its records is produced. recordsPath and
// totalPath are dotted paths; an empty recordsPath means the body is the array.
func ParsePage(body []byte, recordsPath, totalPath string) (Page, error) {
	p := Page{Total: -1}
	if recordsPath == "" {
		if err := json.Unmarshal(body, &p.Records); err != nil {
			return p, fmt.Errorf("parse page: %w", err)
		}
		return p, nil
	}
	var doc map[string]json.RawMessage
	if err := json.Unmarshal(body, &doc); err != nil {
		return p, fmt.Errorf("parse page: %w", err)
	}
	raw, ok := lookup(doc, recordsPath)
	if !ok {
		return p, fmt.Errorf("%w %q", ErrPageShape, recordsPath)
	}
	if err := json.Unmarshal(raw, &p.Records); err != nil {
		return p, fmt.Errorf("%w %q: %v", ErrPageShape, recordsPath, err)
	}
	if totalPath != "" {
		if raw, ok := lookup(doc, totalPath); ok {
			n, err := strconv.ParseInt(string(bytes.TrimSpace(raw)), 10, 64)
			if err == nil && n >= 0 {
				p.Total = n
			}
		}
	}
	return p, nil
}

// lookup follows a dotted path through nested objects.
func lookup(doc map[string]json.RawMessage, path string) (json.RawMessage, bool) {
	head, rest, nested := strings.Cut(path, ".")
	raw, ok := doc[head]
	if !ok || !nested {
		return raw, ok
	}
	var inner map[string]json.RawMessage
	if err := json.Unmarshal(raw, &inner); err != nil {
		return nil, false
	}
	return lookup(inner, rest)
}

func isInteger(b []byte) bool {
	if len(b) > 0 && b[0] == '-' {
		b = b[1:]
	}
	if len(b) == 0 || len(b) > 20 {
		return false
	}
	for _, c := range b {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}
