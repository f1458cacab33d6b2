package source

import (
	"encoding/json"
	"fmt"
	"math/big"
	"regexp"
	"strings"
	"time"
)

// CursorValue returns the value at the dotted path of a record as an incremental job's cursor: a
// string's text or a number's digits; false when the record has none there (or null).
func CursorValue(record []byte, path string) (string, bool) {
	raw, reason := find(record, path)
	if reason != "" || len(raw) == 0 {
		return "", false
	}
	switch raw[0] {
	case '"':
		s, ok := plainString(raw)
		if !ok && json.Unmarshal(raw, &s) != nil {
			return "", false
		}
		// PostgreSQL's infinite timestamps are no place to continue from: a mark there would end
		// every later run's reading.
		if s == "" || s == "infinity" || s == "-infinity" {
			return "", false
		}
		return s, true
	case '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
		return string(raw), true
	}
	return "", false
}

// timeLayouts are the ways a cursor may write a time: RFC 3339, and without a zone (PostgreSQL's
// timestamp, taken as UTC) or as a date.
var timeLayouts = []string{time.RFC3339Nano, "2006-01-02T15:04:05.999999999", time.DateOnly}

// parseTime reads a cursor time, with the layout it is written in.
func parseTime(s string) (time.Time, string, bool) {
	for _, l := range timeLayouts {
		if t, err := time.Parse(l, s); err == nil {
			return t, l, true
		}
	}
	return time.Time{}, "", false
}

// CompareCursors orders two cursor values: as times when both are (RFC 3339, without a zone, or a
// date), as numbers when both are, and as text otherwise. It returns -1, 0 or +1.
func CompareCursors(a, b string) int { return parseCursor(a).compare(parseCursor(b)) }

// cursor is a cursor value read once: as a time, a number, or only its text.
type cursor struct {
	text string
	t    time.Time
	n    *big.Float
	time bool
}

func parseCursor(s string) cursor {
	c := cursor{text: s}
	if t, _, ok := parseTime(s); ok {
		c.t, c.time = t, true
	} else if n, ok := new(big.Float).SetPrec(200).SetString(s); ok {
		c.n = n
	}
	return c
}

func (a cursor) compare(b cursor) int {
	switch {
	case a.time && b.time:
		return a.t.Compare(b.t)
	case a.n != nil && b.n != nil:
		return a.n.Cmp(b.n)
	}
	return strings.Compare(a.text, b.text)
}

// Kinds of cursor: what an incremental job's cursor values are written as.
const (
	KindTime   = "time"   // RFC 3339, without a zone (taken as UTC), or a date
	KindNumber = "number" // an integer or a decimal, as a JSON number or its digits in a string
)

// Reasons a CursorRule rejects a value; they are the reason label of the metrics that count them.
const (
	RejectUnparseable = "unparseable"
	RejectFuture      = "future"
)

// numberRE is a number as a cursor may write it: a JSON number's digits, or the same in a string.
// It leaves out what big.Float would also read (Inf, hex, underscores), which no mark can go on from.
var numberRE = regexp.MustCompile(`^-?[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?$`)

// CursorKind returns the kind a cursor value is written as, "" when it is neither a time nor a
// number.
func CursorKind(v string) string { return parseCursor(v).kind() }

func (c cursor) kind() string {
	switch {
	case c.time:
		return KindTime
	case c.n != nil && numberRE.MatchString(c.text):
		return KindNumber
	}
	return ""
}

// RunKind is the kind of cursor a run of an incremental job reads, as far as the planner knows it:
// its mark's, else its initial value's, else its lookback's (a duration goes with times, an integer
// with numbers); "" when nothing tells.
func RunKind(mark, initial, lookback string) string {
	if k := CursorKind(mark); k != "" {
		return k
	}
	if k := CursorKind(initial); k != "" {
		return k
	}
	_, derr := time.ParseDuration(lookback)
	number := numberRE.MatchString(lookback)
	switch {
	case derr == nil && !number:
		return KindTime
	case derr != nil && number:
		return KindNumber
	}
	return "" // "0" is both
}

// CursorRule is what a cursor value must be to count towards an incremental job's mark: written as
// the job's kind, and, when a time, no later than now plus MaxSkew. One value that breaks it would
// otherwise become the mark, which never moves back: a time years ahead leaves every later run
// nothing to read, and text that is no cursor refuses every later run's lookback.
type CursorRule struct {
	// Kind is KindTime or KindNumber; "" takes either.
	Kind string
	// MaxSkew is how far past now a time may lie, for clocks that differ and records stamped ahead;
	// 0 bounds no time (tasks planned before the planner said).
	MaxSkew time.Duration
}

// Check returns why v may not count, RejectUnparseable or RejectFuture, or "" when it may.
func (r CursorRule) Check(v string, now time.Time) string { return r.check(parseCursor(v), now) }

func (r CursorRule) check(c cursor, now time.Time) string {
	switch kind := c.kind(); {
	case kind == "" || r.Kind != "" && kind != r.Kind:
		return RejectUnparseable
	case kind == KindTime && r.MaxSkew > 0 && c.t.After(now.Add(r.MaxSkew)):
		return RejectFuture
	}
	return ""
}

// Rejected counts the cursor values a CursorRule rejected, by reason.
type Rejected struct {
	Unparseable, Future uint64
}

// Add counts one value rejected for reason.
func (c *Rejected) Add(reason string) {
	switch reason {
	case RejectUnparseable:
		c.Unparseable++
	case RejectFuture:
		c.Future++
	}
}

// MaxCursor keeps the largest of the cursor values added that its Rule accepts, parsing each once,
// and counts those it rejects: the extractor adds every record's.
type MaxCursor struct {
	Rule     CursorRule
	Rejected Rejected
	max      cursor
	set      bool
}

// Add takes a cursor value into account at now, reporting whether the rule accepted it.
func (m *MaxCursor) Add(v string, now time.Time) bool {
	c := parseCursor(v)
	if reason := m.Rule.check(c, now); reason != "" {
		m.Rejected.Add(reason)
		return false
	}
	if !m.set || c.compare(m.max) > 0 {
		m.max, m.set = c, true
	}
	return true
}

// Value is the largest cursor value added, "" when none was.
func (m *MaxCursor) Value() string { return m.max.text }

// Since is where a run of an incremental job starts: its mark less the lookback (a duration for a
// time mark, written as the mark is; a number for a numeric one), or the initial value before any
// run succeeded. A lookback that cannot be taken off the mark is an error, never ignored.
func Since(mark, initial, lookback string) (string, error) {
	if mark == "" {
		return initial, nil
	}
	if lookback == "" {
		return mark, nil
	}
	if t, layout, ok := parseTime(mark); ok {
		if d, err := time.ParseDuration(lookback); err == nil {
			switch layout {
			case time.RFC3339Nano:
				return t.Add(-d).UTC().Format(time.RFC3339Nano), nil
			case time.DateOnly: // a date less a lookback of part of a day is the day before
				return t.Add(-d).Truncate(24 * time.Hour).Format(time.DateOnly), nil
			default:
				return t.Add(-d).Format(layout), nil
			}
		}
		return "", fmt.Errorf("the mark %q is a time and the lookback %q is not a duration such as 10m", mark, lookback)
	}
	if n, ok := new(big.Int).SetString(mark, 10); ok {
		if l, ok := new(big.Int).SetString(lookback, 10); ok {
			return n.Sub(n, l).String(), nil
		}
	}
	if n, ok := new(big.Rat).SetString(mark); ok {
		if l, ok := new(big.Rat).SetString(lookback); ok {
			return decimalText(n.Sub(n, l)), nil
		}
	}
	return "", fmt.Errorf("the lookback %q cannot be taken off the mark %q: a duration goes with times, a number with numbers", lookback, mark)
}

// decimalText writes r in decimal digits, exactly when it has a finite expansion.
func decimalText(r *big.Rat) string {
	if r.IsInt() {
		return r.Num().String()
	}
	if s, exact := r.FloatPrec(); exact {
		return r.FloatString(s)
	}
	return r.FloatString(20)
}
