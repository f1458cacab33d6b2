package source

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"unicode/utf8"
)

// RecordKey returns a record's key: the string, or the integer in decimal, at the dotted keyPath.
// When the record has no usable key it returns "" and the reason, which the loader dead-letters.
// It scans the record once without decoding the fields it does not need: this runs for every
// record.
func RecordKey(record []byte, keyPath string) (string, string) {
	raw, reason := find(record, keyPath)
	if reason != "" {
		return "", reason
	}
	switch {
	case len(raw) > 0 && raw[0] == '"':
		s, ok := plainString(raw)
		if !ok {
			if err := json.Unmarshal(raw, &s); err != nil {
				return "", fmt.Sprintf("key field %q is not a usable string", keyPath)
			}
		}
		if s == "" {
			return "", fmt.Sprintf("key field %q is an empty string", keyPath)
		}
		return s, ""
	case isInteger(raw):
		return string(raw), ""
	default:
		return "", fmt.Sprintf("key field %q is not a string or an integer", keyPath)
	}
}

// find returns the raw value at the dotted path in a JSON object.
func find(doc []byte, path string) ([]byte, string) {
	head, rest, nested := strings.Cut(path, ".")
	s := scanner{b: doc}
	s.space()
	if !s.eat('{') {
		return nil, "record is not a JSON object"
	}
	s.space()
	if s.eat('}') {
		return nil, fmt.Sprintf("key field %q is missing", path)
	}
	for {
		s.space()
		name, ok := s.str()
		if !ok {
			return nil, "record is not valid JSON"
		}
		s.space()
		if !s.eat(':') {
			return nil, "record is not valid JSON"
		}
		s.space()
		start := s.i
		if !s.value() {
			return nil, "record is not valid JSON"
		}
		if string(name) == head || (bytes.IndexByte(name, '\\') >= 0 && unquoted(name) == head) {
			if !nested {
				return doc[start:s.i], ""
			}
			raw, reason := find(doc[start:s.i], rest)
			if reason != "" && strings.HasPrefix(reason, "key field") {
				return nil, fmt.Sprintf("key field %q is missing", head+"."+rest)
			}
			return raw, reason
		}
		s.space()
		if s.eat('}') {
			return nil, fmt.Sprintf("key field %q is missing", path)
		}
		if !s.eat(',') {
			return nil, "record is not valid JSON"
		}
	}
}

// scanner walks JSON without building values. It does not validate everything (the loader does);
// it finds where values start and end.
type scanner struct {
	b []byte
	i int
}

func (s *scanner) space() {
	for s.i < len(s.b) && (s.b[s.i] == ' ' || s.b[s.i] == '\n' || s.b[s.i] == '\t' || s.b[s.i] == '\r') {
		s.i++
	}
}

func (s *scanner) eat(c byte) bool {
	if s.i < len(s.b) && s.b[s.i] == c {
		s.i++
		return true
	}
	return false
}

// str reads a string and returns its contents between the quotes, escapes left in.
func (s *scanner) str() ([]byte, bool) {
	if !s.eat('"') {
		return nil, false
	}
	start := s.i
	for s.i < len(s.b) {
		// The closing quote is the first one that no backslash escapes: IndexByte finds quotes
		// and backslashes many bytes at a time.
		q := bytes.IndexByte(s.b[s.i:], '"')
		if q < 0 {
			return nil, false
		}
		if e := bytes.IndexByte(s.b[s.i:s.i+q], '\\'); e >= 0 {
			s.i += e + 2
			continue
		}
		s.i += q + 1
		return s.b[start : s.i-1], true
	}
	return nil, false
}

// value skips one value of any kind.
func (s *scanner) value() bool {
	if s.i >= len(s.b) {
		return false
	}
	switch s.b[s.i] {
	case '"':
		_, ok := s.str()
		return ok
	case '{', '[':
		depth := 0
		for s.i < len(s.b) {
			switch s.b[s.i] {
			case '"':
				if _, ok := s.str(); !ok {
					return false
				}
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					s.i++
					return true
				}
			}
			s.i++
		}
		return false
	default:
		start := s.i
		for s.i < len(s.b) && !strings.ContainsRune(" \t\r\n,}]", rune(s.b[s.i])) {
			s.i++
		}
		return s.i > start
	}
}

// plainString returns the contents of a quoted string that has no escapes.
func plainString(raw []byte) (string, bool) {
	if len(raw) < 2 || bytes.IndexByte(raw, '\\') >= 0 || !utf8.Valid(raw) {
		return "", false
	}
	return string(raw[1 : len(raw)-1]), true
}

func unquoted(name []byte) string {
	var s string
	if err := json.Unmarshal(append(append([]byte{'"'}, name...), '"'), &s); err != nil {
		return ""
	}
	return s
}
