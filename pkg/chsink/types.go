package chsink

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"math/big"
	"reflect"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/shopspring/decimal"
)

// Kind is the base of a ClickHouse column type.
type Kind int

// The kinds a typed column may have.
const (
	KindInt Kind = iota
	KindUint
	KindFloat
	KindDecimal
	KindBool
	KindString
	KindUUID
	KindEnum
	KindDate
	KindDateTime
	KindDateTime64
	KindArray
	KindJSON
)

// Type is a ClickHouse column type as the loader converts values into it: its kind, its bits
// (Int8…Int64, Float32/64, Enum8/16), its precision and scale (Decimal, DateTime64), its time zone
// (DateTime, DateTime64), its enum values and their codes, its element (Array), and whether it is
// Nullable or LowCardinality. ParseType builds it from a closed grammar; its SQL is rendered from
// these fields, never copied from what a spec wrote.
type Type struct {
	Kind      Kind
	Bits      int
	Precision int
	Scale     int
	TimeZone  string
	Enum      []string
	EnumCodes []int
	Elem      *Type
	Nullable  bool
	LowCard   bool
	// Name is the type as ClickHouse writes it, rendered from the fields: for DDL and errors.
	Name string
}

// GoType is the Go type clickhouse-go takes for a value of t.
func (t *Type) GoType() reflect.Type {
	var g reflect.Type
	switch t.Kind {
	case KindInt:
		g = map[int]reflect.Type{8: reflect.TypeFor[int8](), 16: reflect.TypeFor[int16](), 32: reflect.TypeFor[int32](), 64: reflect.TypeFor[int64]()}[t.Bits]
	case KindUint:
		g = map[int]reflect.Type{8: reflect.TypeFor[uint8](), 16: reflect.TypeFor[uint16](), 32: reflect.TypeFor[uint32](), 64: reflect.TypeFor[uint64]()}[t.Bits]
	case KindFloat:
		g = reflect.TypeFor[float64]()
		if t.Bits == 32 {
			g = reflect.TypeFor[float32]()
		}
	case KindDecimal:
		g = reflect.TypeFor[decimal.Decimal]()
	case KindBool:
		g = reflect.TypeFor[bool]()
	case KindUUID:
		g = reflect.TypeFor[uuid.UUID]()
	case KindDate, KindDateTime, KindDateTime64:
		g = reflect.TypeFor[time.Time]()
	case KindArray:
		g = reflect.SliceOf(t.Elem.GoType())
	default:
		g = reflect.TypeFor[string]()
	}
	if t.Nullable {
		g = reflect.PointerTo(g)
	}
	return g
}

// ConvertError is a value that does not fit its column.
type ConvertError struct{ Reason string }

func (e *ConvertError) Error() string { return e.Reason }

func bad(format string, args ...any) error {
	return &ConvertError{Reason: fmt.Sprintf(format, args...)}
}

// Convert turns one JSON value (raw, exactly as the record holds it; nil when the field is missing)
// into the Go value clickhouse-go takes for t. Numbers are read from their digits, never through a
// float64 on the way to an integer, so 2^53+1 and 2^64-1 stay exact. A value that does not fit is
// a *ConvertError that says why. Missing and null give nil for a Nullable column and an error
// otherwise (the column's policy decides what then).
func Convert(t *Type, raw []byte) (any, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		if t.Nullable {
			return reflect.Zero(t.GoType()).Interface(), nil
		}
		if len(raw) == 0 {
			return nil, bad("missing")
		}
		return nil, bad("null, and %s is not Nullable", t.Name)
	}
	v, err := convert(t, raw)
	if err != nil {
		return nil, err
	}
	if t.Nullable {
		p := reflect.New(reflect.TypeOf(v))
		p.Elem().Set(reflect.ValueOf(v))
		return p.Interface(), nil
	}
	return v, nil
}

func convert(t *Type, raw []byte) (any, error) {
	switch t.Kind {
	case KindInt, KindUint:
		return convertInt(t, raw)
	case KindFloat:
		lit, ok := numberText(raw)
		if !ok {
			return nil, bad("%s is not a number", short(raw))
		}
		f, err := strconv.ParseFloat(lit, t.Bits)
		if err != nil {
			return nil, bad("%s is out of the range of %s", short(raw), t.Name)
		}
		if t.Bits == 32 {
			return float32(f), nil
		}
		return f, nil
	case KindDecimal:
		lit, ok := numberText(raw)
		if !ok {
			return nil, bad("%s is not a number", short(raw))
		}
		d, err := decimal.NewFromString(lit)
		if err != nil {
			return nil, bad("%s is not a decimal number", short(raw))
		}
		if !d.Equal(d.Truncate(int32(t.Scale))) {
			return nil, bad("%s has more than %d decimal places", lit, t.Scale)
		}
		whole := d.Truncate(0).Abs()
		if digits := len(whole.String()); !whole.IsZero() && digits > t.Precision-t.Scale {
			return nil, bad("%s has more than %d digits before the point", lit, t.Precision-t.Scale)
		}
		return d, nil
	case KindBool:
		switch string(raw) {
		case "true":
			return true, nil
		case "false":
			return false, nil
		}
		return nil, bad("%s is not true or false", short(raw))
	case KindString, KindJSON:
		if raw[0] == '"' {
			s, ok := jsonString(raw)
			if !ok {
				return nil, bad("a string that does not decode")
			}
			return s, nil
		}
		return string(raw), nil // a number, a boolean, an object or an array: its JSON text
	case KindUUID:
		s, ok := jsonString(raw)
		if !ok {
			return nil, bad("%s is not a string", short(raw))
		}
		u, err := uuid.Parse(s)
		if err != nil {
			return nil, bad("%q is not a UUID", s)
		}
		return u, nil
	case KindEnum:
		s, ok := jsonString(raw)
		if !ok {
			return nil, bad("%s is not a string", short(raw))
		}
		for _, e := range t.Enum {
			if e == s {
				return s, nil
			}
		}
		return nil, bad("%q is not one of the values of %s", s, t.Name)
	case KindDate, KindDateTime, KindDateTime64:
		return convertTime(t, raw)
	case KindArray:
		if raw[0] != '[' {
			return nil, bad("%s is not an array", short(raw))
		}
		var items []json.RawMessage
		if err := json.Unmarshal(raw, &items); err != nil {
			return nil, bad("an array that does not decode")
		}
		out := reflect.MakeSlice(t.GoType(), 0, len(items))
		for i, item := range items {
			v, err := Convert(t.Elem, item)
			if err != nil {
				return nil, bad("item %d: %v", i, err)
			}
			out = reflect.Append(out, reflect.ValueOf(v))
		}
		return out.Interface(), nil
	}
	return nil, bad("unsupported type %s", t.Name)
}

// convertInt reads an integer exactly: from a JSON number (1e3 is 1000; 1.5 is no integer) or a
// string of digits, as APIs write integers past 2^53.
func convertInt(t *Type, raw []byte) (any, error) {
	lit, ok := numberText(raw)
	if !ok {
		if raw[0] == 't' || raw[0] == 'f' { // a boolean into UInt8, the Bool of servers before 21.12
			if t.Kind == KindUint && t.Bits == 8 && (string(raw) == "true" || string(raw) == "false") {
				return map[string]uint8{"true": 1, "false": 0}[string(raw)], nil
			}
		}
		return nil, bad("%s is not an integer", short(raw))
	}
	if v, ok := plainInt(t, lit); ok {
		return v, nil
	}
	return bigInt(t, raw, lit)
}

// bigInt reads an integer of any form that numberText takes, exactly, through a big.Int.
func bigInt(t *Type, raw []byte, lit string) (any, error) {
	n, ok := new(big.Int).SetString(lit, 10)
	if !ok {
		f, _, err := big.ParseFloat(lit, 10, 1024, big.ToNearestEven)
		if err != nil || !f.IsInt() {
			return nil, bad("%s is not an integer", short(raw))
		}
		n, _ = f.Int(nil)
	}
	if t.Kind == KindInt {
		lo := new(big.Int).Lsh(big.NewInt(-1), uint(t.Bits-1))
		hi := new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), uint(t.Bits-1)), big.NewInt(1))
		if n.Cmp(lo) < 0 || n.Cmp(hi) > 0 {
			return nil, bad("%s does not fit %s", lit, t.Name)
		}
		return sized(t.Bits, n.Int64()), nil
	}
	if n.Sign() < 0 || n.BitLen() > t.Bits {
		return nil, bad("%s does not fit %s", lit, t.Name)
	}
	return sizedUint(t.Bits, n.Uint64()), nil
}

// sized is v, which fits bits, as the Go integer of that size.
func sized(bits int, v int64) any {
	switch bits {
	case 8:
		return int8(v)
	case 16:
		return int16(v)
	case 32:
		return int32(v)
	}
	return v
}

// sizedUint is v, which fits bits, as the Go unsigned integer of that size.
func sizedUint(bits int, v uint64) any {
	switch bits {
	case 8:
		return uint8(v)
	case 16:
		return uint16(v)
	case 32:
		return uint32(v)
	}
	return v
}

// plainInt reads lit, when it is digits alone (with a sign for a signed type) that fit t, without
// the big.Int that other forms and the errors take.
func plainInt(t *Type, lit string) (any, bool) {
	if strings.ContainsAny(lit, ".eE+") {
		return nil, false
	}
	if t.Kind == KindInt {
		v, err := strconv.ParseInt(lit, 10, t.Bits)
		return sized(t.Bits, v), err == nil
	}
	v, err := strconv.ParseUint(lit, 10, t.Bits)
	return sizedUint(t.Bits, v), err == nil
}

// epochMillisAbove is where an epoch number is taken for milliseconds rather than seconds: 10^11
// seconds is the year 5138, 10^11 milliseconds is March 1973.
const epochMillisAbove = 100_000_000_000

// convertTime reads a time from RFC 3339 text (a date alone for Date), or from epoch seconds or
// milliseconds (told apart by size), as a number or a string of digits.
func convertTime(t *Type, raw []byte) (any, error) {
	if lit, ok := numberText(raw); ok && (raw[0] != '"' || !strings.ContainsAny(lit, "-:T")) {
		if n, err := strconv.ParseInt(lit, 10, 64); err == nil && n > -epochMillisAbove*1000 && n < epochMillisAbove*1000 {
			if n > -epochMillisAbove && n < epochMillisAbove {
				n *= 1000 // seconds
			}
			return fitTime(t, time.UnixMilli(n).UTC(), string(raw))
		}
		return bigTime(t, raw, lit)
	}
	s, ok := jsonString(raw)
	if !ok {
		return nil, bad("%s is not a time", short(raw))
	}
	tm, err := time.Parse(time.RFC3339Nano, s)
	if err != nil && t.Kind == KindDate {
		tm, err = time.Parse(time.DateOnly, s)
	}
	if err != nil {
		return nil, bad("%q is not an RFC 3339 time", s)
	}
	return fitTime(t, tm.UTC(), s)
}

// bigTime reads epoch seconds or milliseconds of any form numberText takes, through a big.Float.
func bigTime(t *Type, raw []byte, lit string) (any, error) {
	f, _, err := big.ParseFloat(lit, 10, 128, big.ToNearestEven)
	if err != nil {
		return nil, bad("%s is not a time", short(raw))
	}
	if ms := new(big.Float).Abs(f).Cmp(big.NewFloat(epochMillisAbove)) >= 0; !ms {
		f.Mul(f, big.NewFloat(1000))
	}
	n, _ := f.Int64()
	return fitTime(t, time.UnixMilli(n).UTC(), string(raw))
}

// fitTime checks a time against the range its column holds.
func fitTime(t *Type, tm time.Time, text string) (any, error) {
	var lo, hi time.Time
	switch t.Kind {
	case KindDate:
		lo, hi = time.Date(1970, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(2149, 6, 6, 0, 0, 0, 0, time.UTC)
		tm = tm.Truncate(24 * time.Hour)
	case KindDateTime:
		lo, hi = time.Unix(0, 0).UTC(), time.Unix(math.MaxUint32, 0).UTC()
		tm = tm.Truncate(time.Second)
	default:
		lo, hi = time.Date(1900, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(2299, 12, 31, 23, 59, 59, 0, time.UTC)
	}
	if tm.Before(lo) || tm.After(hi) {
		return nil, bad("%s is outside the range of %s", text, t.Name)
	}
	return tm, nil
}

// numberText is the digits of a JSON number, or of a string that holds one.
func numberText(raw []byte) (string, bool) {
	var s string
	if raw[0] == '"' {
		var ok bool
		if s, ok = jsonString(raw); !ok {
			return "", false
		}
		s = strings.TrimSpace(s)
	} else {
		s = string(raw)
	}
	return s, isNumber(s)
}

// isNumber reports whether s is a JSON number: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func isNumber(s string) bool {
	i := 0
	digits := func() bool {
		start := i
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
		return i > start
	}
	if i < len(s) && s[i] == '-' {
		i++
	}
	switch {
	case i < len(s) && s[i] == '0':
		i++
	case !digits():
		return false
	}
	if i < len(s) && s[i] == '.' {
		i++
		if !digits() {
			return false
		}
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			i++
		}
		if !digits() {
			return false
		}
	}
	return i == len(s)
}

// jsonString is the text of a JSON string. A string with no escape is taken as it is; one with
// escapes, or bytes that are not UTF-8, is decoded by encoding/json (which makes those U+FFFD).
func jsonString(raw []byte) (string, bool) {
	if len(raw) < 2 || raw[0] != '"' {
		return "", false
	}
	if body := raw[1 : len(raw)-1]; raw[len(raw)-1] == '"' && plainString(body) {
		return string(body), true
	}
	var s string
	return s, json.Unmarshal(raw, &s) == nil
}

// plainString reports whether b can stand between quotes as it is: no quote, backslash or control
// character, and UTF-8.
func plainString(b []byte) bool {
	for _, c := range b {
		if c < 0x20 || c == '"' || c == '\\' {
			return false
		}
	}
	return utf8.Valid(b)
}

// short is a value for an error: at most 64 bytes of it.
func short(raw []byte) string {
	if len(raw) > 64 {
		return string(raw[:61]) + "..."
	}
	return string(raw)
}
