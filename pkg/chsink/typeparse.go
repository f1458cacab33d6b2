package chsink

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
	_ "time/tzdata" // time zones are checked against the tz database whatever the machine has
	"unicode/utf8"
)

// The bounds of a column type a spec may write: its length, how deep types nest in it, and the
// values of one enum.
const (
	MaxTypeLen    = 4096
	MaxTypeDepth  = 8
	maxEnumValues = 1024
)

// ParseType reads a ClickHouse type such as Int64, Nullable(DateTime64(3, 'UTC')), Array(String),
// LowCardinality(String), Decimal(18, 4) or Enum8('a' = 1, 'b' = 2). It knows a closed set of
// constructors and checks each argument (precisions in range, time zones from the tz database, enum
// names and codes unique and in range); the type's Name is rendered from what it read, so nothing a
// spec writes reaches SQL as it was written.
func ParseType(s string) (*Type, error) {
	if len(s) > MaxTypeLen {
		return nil, fmt.Errorf("column type of %d bytes: at most %d", len(s), MaxTypeLen)
	}
	p := &typeParser{lex: typeLexer{in: s}}
	t, err := p.typ(0)
	if err == nil {
		if tok := p.next(); tok.kind != tokEOF {
			err = fmt.Errorf("unexpected %s after the type", tok)
		}
	}
	if err == nil {
		err = p.lex.err
	}
	if err != nil {
		return nil, fmt.Errorf("column type %q: %w", abbreviate(s, 80), err)
	}
	t.render()
	return t, nil
}

// abbreviate cuts s to n bytes (on a rune boundary) for an error.
func abbreviate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

type tokKind int

const (
	tokEOF tokKind = iota
	tokIdent
	tokInt
	tokString
	tokPunct
)

type token struct {
	kind tokKind
	text string // an identifier, an integer's digits, a string's value, a punctuation mark
}

func (t token) String() string {
	switch t.kind {
	case tokEOF:
		return "end"
	case tokString:
		return "a string"
	}
	return strconv.Quote(abbreviate(t.text, 40))
}

// typeLexer splits a type into identifiers, integers, quoted strings and ( ) , =.
type typeLexer struct {
	in  string
	pos int
	err error
}

func (l *typeLexer) next() token {
	for l.pos < len(l.in) && strings.IndexByte(" \t\r\n", l.in[l.pos]) >= 0 {
		l.pos++
	}
	if l.pos >= len(l.in) || l.err != nil {
		return token{kind: tokEOF}
	}
	c, start := l.in[l.pos], l.pos
	switch {
	case strings.IndexByte("(),=", c) >= 0:
		l.pos++
		return token{kind: tokPunct, text: string(c)}
	case c == '_' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z':
		for l.pos < len(l.in) && (l.in[l.pos] == '_' || isAlnum(l.in[l.pos])) {
			l.pos++
		}
		return token{kind: tokIdent, text: l.in[start:l.pos]}
	case c == '-' || '0' <= c && c <= '9':
		l.pos++
		for l.pos < len(l.in) && '0' <= l.in[l.pos] && l.in[l.pos] <= '9' {
			l.pos++
		}
		return token{kind: tokInt, text: l.in[start:l.pos]}
	case c == '\'':
		var b strings.Builder
		for l.pos++; l.pos < len(l.in); l.pos++ {
			switch c := l.in[l.pos]; c {
			case '\'':
				l.pos++
				return token{kind: tokString, text: b.String()}
			case '\\':
				if l.pos+1 >= len(l.in) || (l.in[l.pos+1] != '\'' && l.in[l.pos+1] != '\\') {
					l.err = errors.New(`a string may escape only ' and \ with \`)
					return token{kind: tokEOF}
				}
				l.pos++
				b.WriteByte(l.in[l.pos])
			default:
				b.WriteByte(c)
			}
		}
		l.err = errors.New("unclosed string")
		return token{kind: tokEOF}
	}
	l.err = fmt.Errorf("unexpected character %q", c)
	return token{kind: tokEOF}
}

func isAlnum(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
}

// typeParser reads a type by recursive descent, one token of look-ahead.
type typeParser struct {
	lex    typeLexer
	peeked *token
}

func (p *typeParser) next() token {
	if p.peeked != nil {
		t := *p.peeked
		p.peeked = nil
		return t
	}
	return p.lex.next()
}

func (p *typeParser) peek() token {
	if p.peeked == nil {
		t := p.lex.next()
		p.peeked = &t
	}
	return *p.peeked
}

// punct consumes the punctuation mark want, or says what came instead.
func (p *typeParser) punct(want string) error {
	if t := p.next(); t.kind != tokPunct || t.text != want {
		return cmpErr(p.lex.err, fmt.Errorf("want %q, got %s", want, t))
	}
	return nil
}

// cmpErr is the lexer's error when it has one: the token it gave up on means nothing.
func cmpErr(lexErr, err error) error {
	if lexErr != nil {
		return lexErr
	}
	return err
}

// integer reads an integer argument in [lo, hi].
func (p *typeParser) integer(what string, lo, hi int) (int, error) {
	t := p.next()
	if t.kind != tokInt {
		return 0, cmpErr(p.lex.err, fmt.Errorf("%s must be an integer, got %s", what, t))
	}
	n, err := strconv.Atoi(t.text)
	if err != nil || n < lo || n > hi {
		return 0, fmt.Errorf("%s must be %d to %d, got %s", what, lo, hi, abbreviate(t.text, 24))
	}
	return n, nil
}

// timeZone reads a time zone argument: a name the tz database knows.
func (p *typeParser) timeZone() (string, error) {
	t := p.next()
	if t.kind != tokString {
		return "", cmpErr(p.lex.err, fmt.Errorf("a time zone must be a quoted name, got %s", t))
	}
	tz := t.text
	ok := tz != "" && tz != "Local" && len(tz) <= 64
	for i := 0; ok && i < len(tz); i++ {
		ok = isAlnum(tz[i]) || strings.IndexByte("_+-/", tz[i]) >= 0
	}
	if ok {
		_, err := time.LoadLocation(tz)
		ok = err == nil
	}
	if !ok {
		return "", fmt.Errorf("%q is not a time zone of the tz database", abbreviate(tz, 64))
	}
	return tz, nil
}

var simpleTypes = map[string]Type{
	"Int8": {Kind: KindInt, Bits: 8}, "Int16": {Kind: KindInt, Bits: 16}, "Int32": {Kind: KindInt, Bits: 32}, "Int64": {Kind: KindInt, Bits: 64},
	"UInt8": {Kind: KindUint, Bits: 8}, "UInt16": {Kind: KindUint, Bits: 16}, "UInt32": {Kind: KindUint, Bits: 32}, "UInt64": {Kind: KindUint, Bits: 64},
	"Float32": {Kind: KindFloat, Bits: 32}, "Float64": {Kind: KindFloat, Bits: 64},
	"Bool": {Kind: KindBool}, "String": {Kind: KindString}, "UUID": {Kind: KindUUID},
	"Date": {Kind: KindDate}, "DateTime": {Kind: KindDateTime}, "JSON": {Kind: KindJSON},
}

// typ reads one type, depth levels inside others.
func (p *typeParser) typ(depth int) (*Type, error) {
	if depth >= MaxTypeDepth {
		return nil, fmt.Errorf("types nest more than %d deep", MaxTypeDepth)
	}
	name := p.next()
	if name.kind != tokIdent {
		return nil, cmpErr(p.lex.err, fmt.Errorf("want a type name, got %s", name))
	}
	args := p.peek().kind == tokPunct && p.peek().text == "("
	if st, ok := simpleTypes[name.text]; ok && (!args || name.text == "DateTime") {
		t := st
		if args { // DateTime('Europe/Berlin')
			p.next()
			tz, err := p.timeZone()
			if err != nil {
				return nil, err
			}
			t.TimeZone = tz
			if err := p.punct(")"); err != nil {
				return nil, err
			}
		}
		return &t, nil
	} else if ok {
		return nil, fmt.Errorf("%s takes no arguments", name.text)
	}
	if !args {
		return nil, fmt.Errorf("unknown type %s", name)
	}
	p.next() // (
	t, err := p.constructed(name.text, depth)
	if err != nil {
		return nil, err
	}
	return t, p.punct(")")
}

// constructed reads the arguments of the type constructor name, after its "(" and before its ")".
func (p *typeParser) constructed(name string, depth int) (*Type, error) {
	switch name {
	case "Nullable":
		e, err := p.typ(depth + 1)
		if err != nil {
			return nil, err
		}
		if e.Nullable || e.LowCard || e.Kind == KindArray || e.Kind == KindJSON {
			return nil, errors.New("the type inside Nullable must be neither Nullable, LowCardinality, an Array nor JSON")
		}
		e.Nullable = true
		return e, nil
	case "LowCardinality":
		e, err := p.typ(depth + 1)
		if err != nil {
			return nil, err
		}
		switch {
		case e.LowCard:
			return nil, errors.New("LowCardinality inside LowCardinality")
		case e.Kind != KindString && e.Kind != KindInt && e.Kind != KindUint && e.Kind != KindFloat && e.Kind != KindDate && e.Kind != KindDateTime:
			return nil, errors.New("LowCardinality takes a string, a number, a Date or a DateTime")
		}
		e.LowCard = true
		return e, nil
	case "Array":
		e, err := p.typ(depth + 1)
		if err != nil {
			return nil, err
		}
		return &Type{Kind: KindArray, Elem: e}, nil
	case "Decimal":
		prec, err := p.integer("a decimal's precision", 1, 38)
		if err != nil {
			return nil, err
		}
		if err := p.punct(","); err != nil {
			return nil, err
		}
		scale, err := p.integer("a decimal's scale", 0, prec)
		if err != nil {
			return nil, err
		}
		return &Type{Kind: KindDecimal, Precision: prec, Scale: scale}, nil
	case "Decimal32", "Decimal64", "Decimal128":
		prec := map[string]int{"Decimal32": 9, "Decimal64": 18, "Decimal128": 38}[name]
		scale, err := p.integer("a decimal's scale", 0, prec)
		if err != nil {
			return nil, err
		}
		return &Type{Kind: KindDecimal, Precision: prec, Scale: scale}, nil
	case "DateTime64":
		prec, err := p.integer("DateTime64's precision", 0, 9)
		if err != nil {
			return nil, err
		}
		t := &Type{Kind: KindDateTime64, Precision: prec}
		if tok := p.peek(); tok.kind == tokPunct && tok.text == "," {
			p.next()
			if t.TimeZone, err = p.timeZone(); err != nil {
				return nil, err
			}
		}
		return t, nil
	case "Enum8", "Enum16":
		return p.enum(name)
	}
	return nil, fmt.Errorf("unknown type %s", strconv.Quote(abbreviate(name, 40)))
}

// enum reads the values of an Enum8 or Enum16: 'name' = code, each name and code once.
func (p *typeParser) enum(name string) (*Type, error) {
	t := &Type{Kind: KindEnum, Bits: 8}
	lo, hi := math.MinInt8, math.MaxInt8
	if name == "Enum16" {
		t.Bits, lo, hi = 16, math.MinInt16, math.MaxInt16
	}
	names, codes := map[string]bool{}, map[int]bool{}
	for {
		if len(t.Enum) == maxEnumValues {
			return nil, fmt.Errorf("an enum has at most %d values", maxEnumValues)
		}
		v := p.next()
		if v.kind != tokString {
			return nil, cmpErr(p.lex.err, fmt.Errorf("enum values must be quoted, got %s", v))
		}
		if !utf8.ValidString(v.text) || strings.ContainsFunc(v.text, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
			return nil, errors.New("an enum value must be UTF-8 text without control characters")
		}
		if err := p.punct("="); err != nil {
			return nil, err
		}
		code, err := p.integer("an "+name+" code", lo, hi)
		if err != nil {
			return nil, err
		}
		if names[v.text] || codes[code] {
			return nil, fmt.Errorf("enum value %q or code %d given twice", abbreviate(v.text, 40), code)
		}
		names[v.text], codes[code] = true, true
		t.Enum, t.EnumCodes = append(t.Enum, v.text), append(t.EnumCodes, code)
		if tok := p.peek(); tok.kind != tokPunct || tok.text != "," {
			return t, nil
		}
		p.next()
	}
}

// render sets the Name of t and of its element: the type as ClickHouse writes it.
func (t *Type) render() string {
	var base string
	switch t.Kind {
	case KindInt:
		base = "Int" + strconv.Itoa(t.Bits)
	case KindUint:
		base = "UInt" + strconv.Itoa(t.Bits)
	case KindFloat:
		base = "Float" + strconv.Itoa(t.Bits)
	case KindDecimal:
		base = fmt.Sprintf("Decimal(%d, %d)", t.Precision, t.Scale)
	case KindBool:
		base = "Bool"
	case KindString:
		base = "String"
	case KindUUID:
		base = "UUID"
	case KindDate:
		base = "Date"
	case KindJSON:
		base = "JSON"
	case KindDateTime:
		base = "DateTime"
		if t.TimeZone != "" {
			base += "(" + quoteString(t.TimeZone) + ")"
		}
	case KindDateTime64:
		base = "DateTime64(" + strconv.Itoa(t.Precision)
		if t.TimeZone != "" {
			base += ", " + quoteString(t.TimeZone)
		}
		base += ")"
	case KindEnum:
		items := make([]string, len(t.Enum))
		for i, v := range t.Enum {
			items[i] = quoteString(v) + " = " + strconv.Itoa(t.EnumCodes[i])
		}
		base = "Enum" + strconv.Itoa(t.Bits) + "(" + strings.Join(items, ", ") + ")"
	case KindArray:
		base = "Array(" + t.Elem.render() + ")"
	}
	if t.Nullable {
		base = "Nullable(" + base + ")"
	}
	if t.LowCard {
		base = "LowCardinality(" + base + ")"
	}
	t.Name = base
	return base
}

// quoteString is s as a ClickHouse string literal.
func quoteString(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}
