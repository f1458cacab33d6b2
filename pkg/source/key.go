package source

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// RecordKey returns a record's key: the string, or the integer in decimal, at the dotted keyPath.
// When the record has no usable key it returns "" and the reason, which the loader dead-letters.
// It scans the record once without decoding the fields it does not need: this runs for every
// record.
//
// Two different key strings always give two different keys (KeyString says how), so that no two
// records collapse into one row because their keys decode alike.
func RecordKey(record []byte, keyPath string) (string, string) {
	raw, reason := find(record, keyPath)
	if reason != "" {
		return "", reason
	}
	switch {
	case len(raw) > 0 && raw[0] == '"':
		s, ok := plainString(raw)
		if !ok {
			if s, ok = KeyString(raw); !ok {
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
func find(doc []byte, path string) ([]byte, string) { return findSkip(doc, path, -1, -1) }

// findSkip is find in a doc whose bytes [from, to) are a value found already (a page's records
// array): the walk jumps over it instead of scanning it again.
func findSkip(doc []byte, path string, from, to int) ([]byte, string) {
	at, reason := locate(doc, path, from, to)
	if reason != "" {
		return nil, reason
	}
	s := scanner{b: doc, i: at, skipFrom: from, skipTo: to}
	if !s.value() {
		return nil, "record is not valid JSON"
	}
	return doc[at:s.i], ""
}

// findStart returns where the value at the dotted path in a JSON object starts, without scanning
// the value: the caller reads it from there.
func findStart(doc []byte, path string) (int, string) { return locate(doc, path, -1, -1) }

// locate walks the members of a JSON object, and of the objects the dotted path goes through, to
// where the value at the path starts, jumping over the value at [from, to) (none when to <= from).
func locate(doc []byte, path string, from, to int) (int, string) {
	head, rest, nested := strings.Cut(path, ".")
	s := scanner{b: doc, skipFrom: from, skipTo: to}
	s.space()
	if !s.eat('{') {
		return 0, "record is not a JSON object"
	}
	s.space()
	if s.eat('}') {
		return 0, fmt.Sprintf("key field %q is missing", path)
	}
	for {
		s.space()
		name, ok := s.str()
		if !ok {
			return 0, "record is not valid JSON"
		}
		s.space()
		if !s.eat(':') {
			return 0, "record is not valid JSON"
		}
		s.space()
		if string(name) == head || (bytes.IndexByte(name, '\\') >= 0 && unquoted(name) == head) {
			if !nested {
				return s.i, ""
			}
			at, reason := locate(doc[s.i:], rest, from-s.i, to-s.i)
			if strings.HasPrefix(reason, "key field") {
				return 0, fmt.Sprintf("key field %q is missing", path)
			}
			return s.i + at, reason
		}
		if !s.value() {
			return 0, "record is not valid JSON"
		}
		s.space()
		if s.eat('}') {
			return 0, fmt.Sprintf("key field %q is missing", path)
		}
		if !s.eat(',') {
			return 0, "record is not valid JSON"
		}
	}
}

// scanner walks JSON without building values. It does not validate everything (the loader does);
// it finds where values start and end. A value that starts at skipFrom ends at skipTo, unscanned,
// when skipTo is past it.
type scanner struct {
	b                []byte
	i                int
	skipFrom, skipTo int
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
	if s.i == s.skipFrom && s.skipTo > s.skipFrom {
		s.i = s.skipTo
		return true
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

// KeyString decodes the JSON string raw (with its quotes) as a key, injectively: two strings that
// differ (as sequences of UTF-16 code units) give two different keys. A string of valid UTF-16 decodes
// as encoding/json decodes it, with one exception below; a lone surrogate (`"\ud800"`, which
// encoding/json turns into U+FFFD, as it does every other) is kept as its escape, `\ud800` (six
// characters, lower-case hex). So that no decoded string can spell that escape, a run of backslashes
// that the text itself has right before `ud8`…`udf` and two hex digits (lower case) is doubled: the
// only valid keys that differ from their decoding are those that hold such a text, and a key of
// valid UTF-16 without it is exactly its decoding. Invalid UTF-8 bytes become U+FFFD, as in
// encoding/json (the loader dead-letters such a record as invalid_utf8). It reports false for what
// is not a JSON string.
func KeyString(raw []byte) (string, bool) {
	if len(raw) < 2 || raw[0] != '"' || raw[len(raw)-1] != '"' {
		return "", false
	}
	units, ok := keyUnits(raw[1 : len(raw)-1])
	if !ok {
		return "", false
	}
	var b strings.Builder
	b.Grow(len(raw))
	slashes := 0 // backslashes of the text not yet written
	for i, u := range units {
		switch {
		case u.lone:
			b.WriteString(strings.Repeat(`\`, 2*slashes))
			b.WriteString(`\u`)
			b.WriteString(strconv.FormatUint(uint64(u.r), 16))
			slashes = 0
		case u.r == '\\':
			slashes++
		default:
			n := slashes
			if n > 0 && spellsEscape(units[i:]) {
				n *= 2
			}
			b.WriteString(strings.Repeat(`\`, n))
			b.WriteRune(u.r)
			slashes = 0
		}
	}
	b.WriteString(strings.Repeat(`\`, slashes))
	return b.String(), true
}

// keyUnit is a character of a decoded key string, or a lone surrogate (lone) of UTF-16.
type keyUnit struct {
	r    rune
	lone bool
}

// spellsEscape reports whether the text of us starts as an escape of a lone surrogate without its
// backslash: "ud" and a hex digit from 8 to f, then two hex digits, all lower case.
func spellsEscape(us []keyUnit) bool {
	if len(us) < 5 {
		return false
	}
	hex := func(u keyUnit) bool { return !u.lone && (u.r >= '0' && u.r <= '9' || u.r >= 'a' && u.r <= 'f') }
	return !us[0].lone && us[0].r == 'u' && !us[1].lone && us[1].r == 'd' &&
		!us[2].lone && us[2].r >= '8' && us[2].r <= 'f' && hex(us[2]) && hex(us[3]) && hex(us[4])
}

// keyUnits decodes the contents of a JSON string into characters and lone surrogates.
func keyUnits(s []byte) ([]keyUnit, bool) {
	out := make([]keyUnit, 0, len(s))
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c < 0x20 || c == '"':
			return nil, false
		case c != '\\':
			r, n := utf8.DecodeRune(s[i:]) // RuneError for an invalid byte, as encoding/json
			out = append(out, keyUnit{r: r})
			i += n
			continue
		}
		if i+1 >= len(s) {
			return nil, false
		}
		switch e := s[i+1]; e {
		case '"', '\\', '/':
			out = append(out, keyUnit{r: rune(e)})
		case 'b':
			out = append(out, keyUnit{r: '\b'})
		case 'f':
			out = append(out, keyUnit{r: '\f'})
		case 'n':
			out = append(out, keyUnit{r: '\n'})
		case 'r':
			out = append(out, keyUnit{r: '\r'})
		case 't':
			out = append(out, keyUnit{r: '\t'})
		case 'u':
			r, ok := hex4(s[i+2:])
			if !ok {
				return nil, false
			}
			i += 6
			if utf16.IsSurrogate(r) && r < 0xdc00 && len(s) >= i+6 && s[i] == '\\' && s[i+1] == 'u' {
				if lo, ok := hex4(s[i+2:]); ok && lo >= 0xdc00 && lo <= 0xdfff {
					out = append(out, keyUnit{r: utf16.DecodeRune(r, lo)})
					i += 6
					continue
				}
			}
			out = append(out, keyUnit{r: r, lone: utf16.IsSurrogate(r)})
			continue
		default:
			return nil, false
		}
		i += 2
	}
	return out, true
}

// hex4 reads four hex digits.
func hex4(s []byte) (rune, bool) {
	if len(s) < 4 {
		return 0, false
	}
	var r rune
	for _, c := range s[:4] {
		switch {
		case c >= '0' && c <= '9':
			r = r<<4 | rune(c-'0')
		case c >= 'a' && c <= 'f':
			r = r<<4 | rune(c-'a'+10)
		case c >= 'A' && c <= 'F':
			r = r<<4 | rune(c-'A'+10)
		default:
			return 0, false
		}
	}
	return r, true
}
