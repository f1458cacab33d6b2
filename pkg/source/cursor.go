package source

import (
	"encoding/json"
	"fmt"
	"math/big"
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
		var s string
		// PostgreSQL's infinite timestamps are no place to continue from: a mark there would end
		// every later run's reading.
		if json.Unmarshal(raw, &s) != nil || s == "" || s == "infinity" || s == "-infinity" {
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
func CompareCursors(a, b string) int {
	if ta, _, ok := parseTime(a); ok {
		if tb, _, ok := parseTime(b); ok {
			return ta.Compare(tb)
		}
	}
	if na, ok := new(big.Float).SetPrec(200).SetString(a); ok {
		if nb, ok := new(big.Float).SetPrec(200).SetString(b); ok {
			return na.Cmp(nb)
		}
	}
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

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
