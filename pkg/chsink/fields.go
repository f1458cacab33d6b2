package chsink

import (
	"bytes"
	"encoding/json"
	"errors"
)

// errNotObject is a record that is not a JSON object, which a typed table cannot take.
var errNotObject = errors.New("the record is not a JSON object")

// eachField calls fn with the name and the raw value of every member of the JSON object obj, in
// order, until fn returns false. A name with escapes is decoded; the others are not copied. obj
// comes from the raw topic, where the extractor checked it; what is malformed here is an error,
// never a panic.
func eachField(obj []byte, fn func(name []byte, raw []byte) bool) error {
	i := skipSpace(obj, 0)
	if i >= len(obj) || obj[i] != '{' {
		return errNotObject
	}
	i = skipSpace(obj, i+1)
	if i < len(obj) && obj[i] == '}' {
		return nil
	}
	for {
		if i >= len(obj) || obj[i] != '"' {
			return errMalformed
		}
		end, escaped := stringEnd(obj, i)
		if end < 0 {
			return errMalformed
		}
		name := obj[i+1 : end-1]
		if escaped {
			var s string
			if json.Unmarshal(obj[i:end], &s) != nil {
				return errMalformed
			}
			name = []byte(s)
		}
		i = skipSpace(obj, end)
		if i >= len(obj) || obj[i] != ':' {
			return errMalformed
		}
		start := skipSpace(obj, i+1)
		stop := skipValue(obj, start)
		if stop < 0 {
			return errMalformed
		}
		if !fn(name, obj[start:stop]) {
			return nil
		}
		i = skipSpace(obj, stop)
		switch {
		case i < len(obj) && obj[i] == ',':
			i = skipSpace(obj, i+1)
		case i < len(obj) && obj[i] == '}':
			return nil
		default:
			return errMalformed
		}
	}
}

var errMalformed = errors.New("the record is not well-formed JSON")

// lookup returns the raw value at a dotted path of obj (nil when a member is missing or a step is no
// object); the last member of a name wins, as in most JSON decoders.
func lookup(obj []byte, path []string) ([]byte, error) {
	var found []byte
	err := eachField(obj, func(name, raw []byte) bool {
		if string(name) == path[0] {
			found = raw
		}
		return true
	})
	if err != nil || found == nil || len(path) == 1 {
		return found, err
	}
	if found[0] != '{' {
		return nil, nil
	}
	return lookup(found, path[1:])
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// stringEnd returns one past the closing quote of the string that starts at b[i], and whether it
// has escapes; -1 when it does not end.
func stringEnd(b []byte, i int) (int, bool) {
	escaped := false
	for j := i + 1; j < len(b); {
		// The closing quote is the first that no backslash escapes: IndexByte finds quotes and
		// backslashes many bytes at a time.
		q := bytes.IndexByte(b[j:], '"')
		if q < 0 {
			break
		}
		if e := bytes.IndexByte(b[j:j+q], '\\'); e >= 0 {
			escaped = true
			j += e + 2
			continue
		}
		return j + q + 1, escaped
	}
	return -1, escaped
}

// skipValue returns one past the JSON value that starts at b[i]; -1 when there is none.
func skipValue(b []byte, i int) int {
	if i >= len(b) {
		return -1
	}
	switch b[i] {
	case '"':
		end, _ := stringEnd(b, i)
		return end
	case '{', '[':
		depth := 0
		for j := i; j < len(b); j++ {
			switch b[j] {
			case '"':
				end, _ := stringEnd(b, j)
				if end < 0 {
					return -1
				}
				j = end - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1
				}
			}
		}
		return -1
	}
	j := i
	for j < len(b) && b[j] != ',' && b[j] != '}' && b[j] != ']' && b[j] != ' ' && b[j] != '\t' && b[j] != '\n' && b[j] != '\r' {
		j++
	}
	if j == i {
		return -1
	}
	return j
}
