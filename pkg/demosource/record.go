package demosource

import (
	"strconv"
	"time"
)

// epoch is the created_at of record 0; record i was created i seconds later.
var epoch = time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC).Unix()

// padLetters maps six bits of a hash to a letter, so that the pad needs no JSON escaping.
const padLetters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijkl"

// kind is the shape of a served record: valid, or one of the malformed shapes.
type kind int

const (
	kindValid kind = iota
	kindNoID
	kindBadName
	kindNestedID
)

// Record returns the JSON of record i (from 0): a compact object with, in this order, "id" (i),
// "name" ("user-<i>"), "email", "created_at" (RFC 3339, i seconds after 2020-01-01T00:00:00Z) and
// "pad", letters that bring the record to size bytes. A record whose fields alone exceed size is not
// padded. The same arguments always give the same bytes.
func Record(i int64, size int) []byte {
	return appendRecord(make([]byte, 0, max(size, 128)), i, size, kindValid)
}

// MalformedRecord returns the JSON of record i as the source serves it when IsMalformed says so.
// The shape cycles with i%3: 0 lacks the "id" field; 1 has raw bytes 0xff 0xfe, invalid UTF-8,
// inside the "name" string (encoding/json still parses it, replacing them with U+FFFD); 2 has
// {"bad":true} for "id". It is padded to size bytes like Record.
func MalformedRecord(i int64, size int) []byte {
	return appendRecord(make([]byte, 0, max(size, 128)), i, size, malformedKind(i))
}

// IsMalformed reports whether the source serves record i malformed when every Nth record is
// (i%every == every-1); every 0 means never.
func IsMalformed(i, every int64) bool {
	return every > 0 && i%every == every-1
}

func malformedKind(i int64) kind {
	return kindNoID + kind(uint64(i)%3)
}

// appendRecord appends record i of shape k to dst. It allocates only when dst must grow.
func appendRecord(dst []byte, i int64, size int, k kind) []byte {
	start := len(dst)
	dst = append(dst, '{')
	switch k {
	case kindValid, kindBadName:
		dst = append(dst, `"id":`...)
		dst = strconv.AppendInt(dst, i, 10)
		dst = append(dst, ',')
	case kindNestedID:
		dst = append(dst, `"id":{"bad":true},`...)
	case kindNoID:
	}
	dst = append(dst, `"name":"user-`...)
	dst = strconv.AppendInt(dst, i, 10)
	if k == kindBadName {
		dst = append(dst, 0xff, 0xfe)
	}
	dst = append(dst, `","email":"user-`...)
	dst = strconv.AppendInt(dst, i, 10)
	dst = append(dst, `@example.com","created_at":"`...)
	dst = time.Unix(epoch+i, 0).UTC().AppendFormat(dst, time.RFC3339)
	dst = append(dst, `","pad":"`...)
	dst = appendPad(dst, i, size-(len(dst)-start)-len(`"}`))
	return append(dst, `"}`...)
}

// appendPad appends n letters that depend only on i.
func appendPad(dst []byte, i int64, n int) []byte {
	if n <= 0 {
		return dst
	}
	off := len(dst)
	dst = append(dst, make([]byte, n)...)
	pad := dst[off:]
	// Each record starts at its own point of the splitmix64 sequence, so that no two pads share a
	// run of letters and the pads compress no better than random letters.
	state := mix(uint64(i) ^ 0x5a17ce)
	for j := 0; j < n; {
		state += golden
		h := mix(state)
		for k := 0; k < 10 && j < n; k++ {
			pad[j] = padLetters[h&63]
			h >>= 6
			j++
		}
	}
	return dst
}
