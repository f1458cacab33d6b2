package source

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/sluicedata/sluice/pkg/pipeline"
	sluicev1 "github.com/sluicedata/sluice/proto/sluice/v1"
)

// Source is one job's source, of one kind: the planner asks it for a plan, an extractor opens one
// task's slice and reads it page by page. The planner and the extractor know nothing else of a
// kind; New is the one place that knows them all.
type Source interface {
	// Plan splits the source into at most tasks slices, asking the source for its extent when it
	// must. Its errors are *Error.
	Plan(ctx context.Context, tasks int) (Plan, error)
	// Replan gives the same plan again from the extent that Plan found, asking the source nothing.
	Replan(extent []byte, tasks int) (Plan, error)
	// Open returns a reader of the slice of task. Its errors are *Error.
	Open(task *sluicev1.Task) (Reader, error)
	// Limits are how the extractor paces the source.
	Limits() Limits
}

// Plan is a source split into slices.
type Plan struct {
	// Expected is how many records the slices hold; -1 when the source does not say (the slices
	// read until the source ends them).
	Expected int64
	// Slices are tasks with only their slice set: the planner adds the job's fields.
	Slices []*sluicev1.Task
	// Extent is what planning found out of the source, for Replan.
	Extent []byte
}

// Reader reads one slice, page by page, in order. A reader that holds something between pages
// (a postgres COPY holds a connection) is also an io.Closer, closed by whoever opened it.
type Reader interface {
	// Next reads the next page. It returns false once the slice is read to its end. A failure is a
	// *Error that has spent the page's retries (or says the read was cancelled); Next is not called
	// again after one.
	Next(ctx context.Context) (Read, bool, error)
	// More reports whether Next may still make a request: false once the slice is read to its end
	// (a rate limit is spent only on requests).
	More() bool
	// Key returns a record's key, or why it has none.
	Key(record json.RawMessage) (key, reason string)
	// Then is the task that continues this slice once it is read to its end (a crawl's next page,
	// with only its id and slice set), or nil when there is none.
	Then() *sluicev1.Task
}

// Read is one page of a slice.
type Read struct {
	// Records are exactly as the source gave them.
	Records []json.RawMessage
	// At is the page's place in its slice (an offset, a page number, the sequence of a crawl): with
	// a record's index in the page it finds the record again.
	At uint64
	// Attempts are the requests the page took.
	Attempts int
	// Checked is set when every record passed the loader's check with its page (Page.Checked).
	Checked bool
}

// Limits pace one job's reads.
type Limits struct {
	// RateLimit is requests per second to Host for the whole extractor group; 0 is none.
	RateLimit float64
	Host      string
	// Concurrency caps the job's tasks one member works on at once; 0 is no cap.
	Concurrency int
}

// Env is what a source gets from the service that runs it.
type Env struct {
	// Fetcher makes HTTP requests, with its retries and metrics.
	Fetcher *Fetcher
	// Lookup resolves the ${…} references of a source's secrets in this process (Secrets.Lookup),
	// and Allowed, when set, says whether one may go to a host (Secrets.Allowed).
	Lookup  func(string) (string, bool)
	Allowed func(name, host string) bool
	// Backoff spaces the attempts at one page.
	Backoff pipeline.Backoff
	// PageDeadline bounds all attempts at one page, waits included.
	PageDeadline time.Duration
	// Tokens are the process's OAuth2 tokens.
	Tokens *Tokens
	// Postgres are the process's connections to the databases of postgres sources.
	Postgres *Pools
}

// ErrUnknownKind is a source of a kind this build does not read.
var ErrUnknownKind = errors.New("unknown kind of source")

// New returns the source that src describes.
func New(src *sluicev1.Source, env Env) (Source, error) {
	switch k := src.GetKind().(type) {
	case *sluicev1.Source_Http:
		return newHTTP(k.Http, src.GetIncremental(), env), nil
	case *sluicev1.Source_Postgres:
		return newPostgres(k.Postgres, src.GetIncremental(), env), nil
	default:
		return nil, &Error{Class: "bad_task", Err: fmt.Errorf("%w: %T", ErrUnknownKind, k)}
	}
}
