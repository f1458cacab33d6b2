package source

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/sluicedata/sluice/pkg/record"
)

// ErrPageShape is a response that parsed as JSON but does not have the records where the job says.
var ErrPageShape = errors.New("page has no records array at the records path")

// Page is one parsed response: its records exactly as the source sent them, and the total the
// source reported (-1 when it gave none).
type Page struct {
	Records []json.RawMessage
	Total   int64
	// Checked is set when every record passed record.Check with the page (ParsePage).
	Checked bool
	// Body is the whole response body, which Records are slices of, and Header its headers: where
	// a crawl finds the next page.
	Body   []byte
	Header http.Header
}

// ErrNotJSON is a response body that is not JSON: an HTML error page with status 200, a body cut
// short.
var ErrNotJSON = errors.New("page is not valid JSON")

// ErrTooManyRecords is a page with more records than a page may hold: a few bytes a record make
// millions of records of a page the body limit lets through, and each costs memory and work
// however small it is.
var ErrTooManyRecords = errors.New("page has more records than a page may hold")

// ParsePage parses a whole response body before any of its records is produced. recordsPath and
// totalPath are dotted paths; an empty recordsPath means the body is the array. The records are
// slices of body, exactly the bytes the source sent. A page of more than maxRecords records (when
// positive) fails with ErrTooManyRecords as soon as the scan passes it.
func ParsePage(body []byte, recordsPath, totalPath string, maxRecords int) (Page, error) {
	p := Page{Total: -1}
	// One validating pass, then a scan that only finds where values start and end: decoding the
	// page with encoding/json cost more than everything else the extractor does with a record,
	// and its Valid half the time the extractor spent on a record.
	//
	// The pass is the loader's record check over the whole page: a page that passes it holds
	// records that each pass it (their bytes are valid UTF-8, no object in them has a member name
	// twice, and they nest less deeply than the page), and they go marked Checked, so that the
	// loader does not check them again. A page that fails it is validated as encoding/json would,
	// and its records are checked one by one by the loader.
	p.Checked = record.Check(body) == nil
	if !p.Checked && !record.Valid(body) {
		return p, fmt.Errorf("parse page: %w", ErrNotJSON)
	}
	// The records array is split where the walk to it reaches it, and the walk to the total jumps
	// over it: the page's bytes are scanned once after the check, not once for each path.
	start := len(body) - len(bytes.TrimLeft(body, " \t\r\n"))
	if recordsPath != "" {
		at, reason := findStart(body, recordsPath)
		if reason != "" {
			return p, fmt.Errorf("%w %q", ErrPageShape, recordsPath)
		}
		start = at
	}
	records, end, ok := elements(body[start:], maxRecords)
	switch {
	case ok && records == nil:
		return p, fmt.Errorf("%w: more than %d", ErrTooManyRecords, maxRecords)
	case !ok:
		return p, fmt.Errorf("%w %q: not an array", ErrPageShape, recordsPath)
	}
	p.Records = records
	if totalPath != "" {
		if raw, reason := findSkip(body, totalPath, start, start+end); reason == "" {
			if n, err := strconv.ParseInt(string(raw), 10, 64); err == nil && n >= 0 {
				p.Total = n
			}
		}
	}
	return p, nil
}

// elements splits the JSON array at the start of arr, already validated, into its elements, and
// returns where the array ends in arr; nil and true when it has more than max (when positive).
func elements(arr []byte, max int) ([]json.RawMessage, int, bool) {
	s := scanner{b: arr}
	if !s.eat('[') {
		return nil, 0, false
	}
	guess := bytes.Count(arr, []byte("},")) + 1
	if max > 0 {
		guess = min(guess, max)
	}
	out := make([]json.RawMessage, 0, guess)
	s.space()
	if s.eat(']') {
		return out[:0], s.i, true
	}
	for {
		s.space()
		start := s.i
		if !s.value() {
			return nil, 0, false
		}
		if max > 0 && len(out) == max {
			return nil, 0, true
		}
		out = append(out, arr[start:s.i:s.i])
		s.space()
		if s.eat(']') {
			return out, s.i, true
		}
		if !s.eat(',') {
			return nil, 0, false
		}
	}
}

func isInteger(b []byte) bool {
	if len(b) > 0 && b[0] == '-' {
		b = b[1:]
	}
	if len(b) == 0 || len(b) > 20 {
		return false
	}
	for _, c := range b {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}
