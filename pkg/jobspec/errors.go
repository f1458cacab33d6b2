package jobspec

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"
)

// ErrUnsupportedSource is returned by SourceFromProto for a source of a kind this build does not know.
var ErrUnsupportedSource = errors.New("unsupported source kind")

// ErrMissingVariable is wrapped by ExpandHeaders' error when a header refers to a variable the lookup
// does not know. It is a configuration error: retrying does not help.
var ErrMissingVariable = errors.New("variable not set")

// ErrBadReference is wrapped by ExpandHeaders' error when a header value has an unclosed "${" or a
// reference whose name is not a valid variable name.
var ErrBadReference = errors.New("malformed ${VAR} reference")

// Problem is one thing wrong with a job spec. Path names the field as the document spells it
// ("source.pagination.page_size", "source.headers.Authorization"); it is empty for a problem with the
// document as a whole, such as a YAML syntax error. Message never quotes a header value or the user
// information of a URL.
type Problem struct {
	Path    string `json:"path"`
	Message string `json:"message"`
}

// String formats the problem as "path: message".
func (p Problem) String() string {
	if p.Path == "" {
		return p.Message
	}
	return p.Path + ": " + p.Message
}

// Error is an invalid job spec: every problem found, not just the first (past 100, the first 100 by
// path and a document-level problem counting the rest). Parse and Validate return it as a *Error; use
// errors.As to get at the problems. It marshals to JSON as {"problems": [{"path", "message"}]}, ready
// for an HTTP 400 answer.
type Error struct {
	Problems []Problem `json:"problems"`
}

// Error gives one "path: message" line per problem, sorted by path.
func (e *Error) Error() string {
	ps := slices.Clone(e.Problems)
	sortProblems(ps)
	lines := make([]string, len(ps))
	for i, p := range ps {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

// sortProblems orders problems by path, keeping the order in which problems of one path were found.
func sortProblems(ps []Problem) {
	slices.SortStableFunc(ps, func(a, b Problem) int { return strings.Compare(a.Path, b.Path) })
}

// problems collects Problems while decoding or validating: at most maxCollected of them, each cut
// to a length an answer can carry; past that it only counts, so that a document full of mistakes
// costs no more than a document with maxCollected of them.
type problems struct {
	list    []Problem
	dropped int
}

func (p *problems) add(path, message string) {
	if len(p.list) >= maxCollected {
		p.dropped++
		return
	}
	p.list = append(p.list, Problem{Path: cut(path, maxPathBytes), Message: cut(message, maxMessageBytes)})
}

// The bounds of what an Error holds: problems shown, problems collected (the rest only counted),
// and the bytes of a problem's path and message.
const (
	maxProblems     = 100
	maxCollected    = 1000
	maxPathBytes    = 256
	maxMessageBytes = 512
)

// cut shortens s to at most n bytes, on a rune boundary, marking the cut.
func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

// err returns the problems as a sorted *Error, or nil when there are none. Past maxProblems it keeps
// the first ones by path and says how many it left out.
func (p *problems) err() error {
	if len(p.list) == 0 {
		return nil
	}
	ps := slices.Clone(p.list)
	sortProblems(ps)
	if more := len(ps) - maxProblems + p.dropped; more > 0 {
		ps = append([]Problem{{Message: fmt.Sprintf("too many problems: %d more not shown", more)}}, ps[:min(len(ps), maxProblems)]...)
	}
	return &Error{Problems: ps}
}
