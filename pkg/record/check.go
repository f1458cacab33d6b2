package record

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math/bits"
	"unicode/utf8"
)

// MaxDepth is how deeply arrays and objects may nest.
const MaxDepth = 64

// Problems a record can have; Class names them for dead letters and metrics.
var (
	ErrInvalidUTF8  = errors.New("record is not valid UTF-8")
	ErrNotJSON      = errors.New("record is not valid JSON")
	ErrDuplicateKey = errors.New("record has a member name twice in one object")
	ErrTooDeep      = fmt.Errorf("record nests deeper than %d levels", MaxDepth)
)

// Class returns the dead-letter class of an error from Check.
func Class(err error) string {
	switch {
	case errors.Is(err, ErrInvalidUTF8):
		return "invalid_utf8"
	case errors.Is(err, ErrDuplicateKey):
		return "duplicate_key"
	case errors.Is(err, ErrTooDeep):
		return "too_deep"
	default:
		return "bad_json"
	}
}

// Check returns nil when b is one JSON value in valid UTF-8 with no duplicate member names and at
// most MaxDepth levels of nesting.
func Check(b []byte) error {
	if !utf8.Valid(b) {
		return ErrInvalidUTF8
	}
	c := checker{b: b}
	c.space()
	if err := c.value(0); err != nil {
		return err
	}
	c.space()
	if c.i != len(c.b) {
		return fmt.Errorf("%w: data after the value at byte %d", ErrNotJSON, c.i)
	}
	return nil
}

// Valid reports whether b is one JSON value, as encoding/json's Valid does, at about four times
// its speed on a page of records (BenchmarkValid): it looks for no duplicate member names and takes
// any UTF-8, as encoding/json does; a value nested deeper than maxValidDepth levels is not valid
// here.
func Valid(b []byte) bool {
	c := checker{b: b, loose: true}
	c.space()
	if c.value(0) != nil {
		return false
	}
	c.space()
	return c.i == len(c.b)
}

// maxValidDepth bounds the nesting Valid takes: deep enough for any page, shallow enough for the
// stack.
const maxValidDepth = 10_000

type checker struct {
	b []byte
	i int
	// loose checks only that b is JSON: Valid.
	loose bool
}

func (c *checker) maxDepth() int {
	if c.loose {
		return maxValidDepth
	}
	return MaxDepth
}

func (c *checker) fail(what string) error {
	return fmt.Errorf("%w: %s at byte %d", ErrNotJSON, what, c.i)
}

func (c *checker) space() {
	for c.i < len(c.b) {
		switch c.b[c.i] {
		case ' ', '\t', '\n', '\r':
			c.i++
		default:
			return
		}
	}
}

func (c *checker) value(depth int) error {
	if c.i >= len(c.b) {
		return c.fail("unexpected end")
	}
	switch ch := c.b[c.i]; {
	case ch == '{':
		return c.object(depth + 1)
	case ch == '[':
		return c.array(depth + 1)
	case ch == '"':
		_, err := c.str()
		return err
	case ch == 't':
		return c.literal("true")
	case ch == 'f':
		return c.literal("false")
	case ch == 'n':
		return c.literal("null")
	case ch == '-' || (ch >= '0' && ch <= '9'):
		return c.number()
	default:
		return c.fail("unexpected character")
	}
}

func (c *checker) literal(word string) error {
	if !bytes.HasPrefix(c.b[c.i:], []byte(word)) {
		return c.fail("bad literal")
	}
	c.i += len(word)
	return nil
}

func (c *checker) number() error {
	start := c.i
	if c.b[c.i] == '-' {
		c.i++
	}
	switch {
	case c.i < len(c.b) && c.b[c.i] == '0':
		c.i++
	case c.i < len(c.b) && c.b[c.i] >= '1' && c.b[c.i] <= '9':
		c.digits()
	default:
		return c.fail("bad number")
	}
	if c.i < len(c.b) && c.b[c.i] == '.' {
		c.i++
		if c.digits() == 0 {
			return c.fail("bad fraction")
		}
	}
	if c.i < len(c.b) && (c.b[c.i] == 'e' || c.b[c.i] == 'E') {
		c.i++
		if c.i < len(c.b) && (c.b[c.i] == '+' || c.b[c.i] == '-') {
			c.i++
		}
		if c.digits() == 0 {
			return c.fail("bad exponent")
		}
	}
	if c.i == start {
		return c.fail("bad number")
	}
	return nil
}

func (c *checker) digits() int {
	n := 0
	for c.i < len(c.b) && c.b[c.i] >= '0' && c.b[c.i] <= '9' {
		c.i++
		n++
	}
	return n
}

// str checks a string and returns its raw contents between the quotes.
func (c *checker) str() ([]byte, error) {
	c.i++ // the opening quote
	start := c.i
	for c.i < len(c.b) {
		c.i += plainRun(c.b[c.i:])
		if c.i >= len(c.b) {
			break
		}
		ch := c.b[c.i]
		switch {
		case ch == '"':
			c.i++
			return c.b[start : c.i-1], nil
		case ch == '\\':
			if c.i+1 >= len(c.b) {
				return nil, c.fail("unterminated escape")
			}
			switch c.b[c.i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				c.i += 2
			case 'u':
				if c.i+6 > len(c.b) || !isHex4(c.b[c.i+2:c.i+6]) {
					return nil, c.fail("bad \\u escape")
				}
				c.i += 6
			default:
				return nil, c.fail("bad escape")
			}
		case ch < 0x20:
			return nil, c.fail("control character in string")
		default:
			c.i++
		}
	}
	return nil, c.fail("unterminated string")
}

// Eight bytes at a time: every byte 0x01 and every byte 0x80.
const (
	lows  = 0x0101010101010101
	highs = 0x8080808080808080
)

// plainRun is how many bytes at the start of b, eight at a time, need no look in a string: no
// quote, backslash or control character. For each word, x-lows&^x&highs flags the bytes that are
// zero (in x with the quote or the backslash XORed out) or, with 0x20 for 0x01, below 0x20; a
// borrow only ever flags a byte above one truly flagged, so the lowest flag is exact.
func plainRun(b []byte) int {
	n := 0
	for ; n+8 <= len(b); n += 8 {
		x := binary.LittleEndian.Uint64(b[n:])
		q, bs := x^(lows*'"'), x^(lows*'\\')
		if m := ((q - lows) &^ q & highs) | ((bs - lows) &^ bs & highs) | ((x - lows*0x20) &^ x & highs); m != 0 {
			return n + bits.TrailingZeros64(m)/8
		}
	}
	return n
}

func isHex4(b []byte) bool {
	for _, ch := range b {
		if !(ch >= '0' && ch <= '9' || ch >= 'a' && ch <= 'f' || ch >= 'A' && ch <= 'F') {
			return false
		}
	}
	return true
}

func (c *checker) array(depth int) error {
	if depth > c.maxDepth() {
		return ErrTooDeep
	}
	c.i++
	c.space()
	if c.i < len(c.b) && c.b[c.i] == ']' {
		c.i++
		return nil
	}
	for {
		c.space()
		if err := c.value(depth); err != nil {
			return err
		}
		c.space()
		if c.i >= len(c.b) {
			return c.fail("unterminated array")
		}
		switch c.b[c.i] {
		case ',':
			c.i++
		case ']':
			c.i++
			return nil
		default:
			return c.fail("expected , or ]")
		}
	}
}

// maxNamesTracked bounds the names one object's duplicate check keeps on the stack; objects with
// more members are checked against a map.
const maxNamesTracked = 16

func (c *checker) object(depth int) error {
	if depth > c.maxDepth() {
		return ErrTooDeep
	}
	c.i++
	c.space()
	if c.i < len(c.b) && c.b[c.i] == '}' {
		c.i++
		return nil
	}
	var few [maxNamesTracked][]byte
	names := few[:0]
	var many map[string]struct{}
	for {
		c.space()
		if c.i >= len(c.b) || c.b[c.i] != '"' {
			return c.fail("expected a member name")
		}
		name, err := c.str()
		if err != nil {
			return err
		}
		if !c.loose && bytes.IndexByte(name, '\\') >= 0 {
			name = unescape(name)
		}
		switch {
		case c.loose:
		case many != nil:
			if _, dup := many[string(name)]; dup {
				return fmt.Errorf("%w: %q", ErrDuplicateKey, name)
			}
			many[string(name)] = struct{}{}
		default:
			for _, n := range names {
				if bytes.Equal(n, name) {
					return fmt.Errorf("%w: %q", ErrDuplicateKey, name)
				}
			}
			if len(names) < maxNamesTracked {
				names = append(names, name)
			} else {
				many = make(map[string]struct{}, 2*maxNamesTracked)
				for _, n := range names {
					many[string(n)] = struct{}{}
				}
				many[string(name)] = struct{}{}
			}
		}
		c.space()
		if c.i >= len(c.b) || c.b[c.i] != ':' {
			return c.fail("expected :")
		}
		c.i++
		c.space()
		if err := c.value(depth); err != nil {
			return err
		}
		c.space()
		if c.i >= len(c.b) {
			return c.fail("unterminated object")
		}
		switch c.b[c.i] {
		case ',':
			c.i++
		case '}':
			c.i++
			return nil
		default:
			return c.fail("expected , or }")
		}
	}
}

// unescape decodes a member name with escapes, so that "a" and "\u0061" are the same name.
func unescape(raw []byte) []byte {
	var s string
	if err := json.Unmarshal(append(append([]byte{'"'}, raw...), '"'), &s); err != nil {
		return raw
	}
	return []byte(s)
}
