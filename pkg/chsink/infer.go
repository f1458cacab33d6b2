package chsink

import (
	"bytes"
	"encoding/json"
	"math/big"
	"time"

	"github.com/google/uuid"

	sluicev1 "github.com/sluicedata/sluice/proto/sluice/v1"
)

// Inference is the type of one field as sampled records show it, for DDL that sluice proposes
// (sluicectl infer) or adds (on_new_field: evolve). It widens as values come: integers that all
// fit Int64 stay Int64, one past it makes UInt64 when none is negative, a fraction makes Float64;
// strings that are all RFC 3339 times are times, all UUIDs are UUIDs; null or a missing field makes
// the type Nullable; values of kinds that do not mix (a string and a number) make String, which
// holds anything as its JSON text.
type Inference struct {
	seen, null, missing bool
	kind                inferKind
	negative, beyondI64 bool
	elem                *Inference
}

type inferKind int

const (
	inferNone inferKind = iota
	inferInt
	inferFloat
	inferBool
	inferTime
	inferUUID
	inferString
	inferArray
	inferObject
)

// Add folds in one value of the field: raw as the record holds it, nil when the record lacks it.
func (in *Inference) Add(raw []byte) {
	raw = bytes.TrimSpace(raw)
	switch {
	case len(raw) == 0:
		in.missing = true
		return
	case string(raw) == "null":
		in.null = true
		return
	}
	k := kindOf(raw)
	switch k {
	case inferInt:
		n, _ := new(big.Int).SetString(string(raw), 10)
		if n == nil {
			k = inferFloat // 1e3 and the like: a number written as a float
		} else {
			in.negative = in.negative || n.Sign() < 0
			in.beyondI64 = in.beyondI64 || !n.IsInt64()
		}
	case inferArray:
		var items []json.RawMessage
		if json.Unmarshal(raw, &items) == nil {
			if in.elem == nil {
				in.elem = &Inference{}
			}
			for _, item := range items {
				in.elem.Add(item)
			}
		}
	}
	if !in.seen {
		in.seen, in.kind = true, k
		return
	}
	in.kind = widen(in.kind, k)
}

// widen is the kind that holds values of kinds a and b.
func widen(a, b inferKind) inferKind {
	switch {
	case a == b:
		return a
	case (a == inferInt && b == inferFloat) || (a == inferFloat && b == inferInt):
		return inferFloat
	}
	return inferString // a time and a plain string, or kinds that do not mix
}

func kindOf(raw []byte) inferKind {
	switch raw[0] {
	case '"':
		var s string
		if json.Unmarshal(raw, &s) != nil {
			return inferString
		}
		if _, err := time.Parse(time.RFC3339Nano, s); err == nil {
			return inferTime
		}
		if len(s) == 36 {
			if _, err := uuid.Parse(s); err == nil {
				return inferUUID
			}
		}
		return inferString
	case 't', 'f':
		return inferBool
	case '[':
		return inferArray
	case '{':
		return inferObject
	}
	if bytes.ContainsAny(raw, ".eE") {
		return inferFloat
	}
	return inferInt
}

// Type is the ClickHouse type the values seen call for, as features allow: Bool where the server
// has it (UInt8 before), DateTime64(3) where it has that (DateTime before).
func (in *Inference) Type(hasBool, hasDateTime64 bool) string {
	t := in.base(hasBool, hasDateTime64)
	if (in.null || in.missing || !in.seen) && in.kind != inferArray {
		return "Nullable(" + t + ")"
	}
	return t
}

func (in *Inference) base(hasBool, hasDateTime64 bool) string {
	switch in.kind {
	case inferInt:
		switch {
		case in.beyondI64 && in.negative:
			return "String" // no integer type holds both
		case in.beyondI64:
			return "UInt64"
		}
		return "Int64"
	case inferFloat:
		return "Float64"
	case inferBool:
		if hasBool {
			return "Bool"
		}
		return "UInt8"
	case inferTime:
		if hasDateTime64 {
			return "DateTime64(3)"
		}
		return "DateTime"
	case inferUUID:
		return "UUID"
	case inferArray:
		if in.elem == nil || !in.elem.seen || in.elem.kind == inferArray || in.elem.kind == inferObject {
			return "String" // empty, nested or of objects: kept as JSON text
		}
		return "Array(" + in.elem.Type(hasBool, hasDateTime64) + ")"
	}
	return "String"
}

// Sample is what the records seen so far say of their top-level fields: each field's values, in
// the order the fields first appeared.
type Sample struct {
	order  []string
	fields map[string]*Inference
	// Records counts the records added; Skipped the fields whose names cannot be column names.
	Records int
	Skipped map[string]bool
}

// Add reads one record (a JSON object) into the sample.
func (s *Sample) Add(record []byte) error {
	if s.fields == nil {
		s.fields, s.Skipped = map[string]*Inference{}, map[string]bool{}
	}
	seen := map[string]bool{}
	err := eachField(record, func(name, raw []byte) bool {
		n := string(name)
		if !columnName.MatchString(n) {
			s.Skipped[n] = true
			return true
		}
		in := s.fields[n]
		if in == nil {
			in = &Inference{}
			if s.Records > 0 {
				in.missing = true // the records before did not have it
			}
			s.fields[n] = in
			s.order = append(s.order, n)
		}
		in.Add(raw)
		seen[n] = true
		return true
	})
	if err != nil {
		return err
	}
	for name, in := range s.fields {
		if !seen[name] {
			in.missing = true
		}
	}
	s.Records++
	return nil
}

// Columns are the sink columns the sample calls for, in the order the fields first appeared, with
// the types that features allow (Bool from 21.12, DateTime64 from 20.1).
func (s *Sample) Columns(hasBool, hasDateTime64 bool) []*sluicev1.SinkColumn {
	out := make([]*sluicev1.SinkColumn, len(s.order))
	for i, name := range s.order {
		out[i] = &sluicev1.SinkColumn{Name: name, Type: s.fields[name].Type(hasBool, hasDateTime64)}
	}
	return out
}
