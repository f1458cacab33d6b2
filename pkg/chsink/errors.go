package chsink

import (
	"context"
	"errors"
	"io"
	"net"
	"syscall"

	"github.com/ClickHouse/clickhouse-go/v2"
)

// Class says what to do about a failed insert.
type Class int

const (
	// Transient failures are retried with backoff; nothing is committed or dead-lettered meanwhile.
	Transient Class = iota
	// Schema failures (the table or a column is missing or different) stop loading of that table
	// until the table is fixed; the writer recreates a missing table itself.
	Schema
	// Data failures are caused by rows: the batch is split to find them.
	Data
)

func (c Class) String() string {
	switch c {
	case Schema:
		return "schema"
	case Data:
		return "data"
	default:
		return "transient"
	}
}

// ClickHouse error codes that classify a failure.
var (
	schemaCodes = map[int32]bool{
		16: true, // NO_SUCH_COLUMN_IN_TABLE
		47: true, // UNKNOWN_IDENTIFIER
		60: true, // UNKNOWN_TABLE
		81: true, // UNKNOWN_DATABASE
		44: true, // ILLEGAL_COLUMN
		8:  true, // THERE_IS_NO_COLUMN
	}
	dataCodes = map[int32]bool{
		6:   true, // CANNOT_PARSE_TEXT
		26:  true, // CANNOT_PARSE_QUOTED_STRING
		27:  true, // CANNOT_PARSE_INPUT_ASSERTION_FAILED
		41:  true, // CANNOT_PARSE_DATETIME
		53:  true, // TYPE_MISMATCH
		69:  true, // ARGUMENT_OUT_OF_BOUND
		70:  true, // CANNOT_CONVERT_TYPE
		72:  true, // CANNOT_PARSE_NUMBER
		117: true, // INCORRECT_DATA
		131: true, // TOO_LARGE_STRING_SIZE
	}
)

// Classify maps an insert error to its class. Anything unknown is transient: retrying a healthy
// record is safe, dead-lettering it is not.
func Classify(err error) Class {
	var ex *clickhouse.Exception
	switch {
	case err == nil:
		return Transient
	case errors.As(err, &ex) && schemaCodes[ex.Code]:
		return Schema
	case errors.As(err, &ex) && dataCodes[ex.Code]:
		return Data
	default:
		return Transient
	}
}

// Reason names a failure for a metric label: a small fixed set.
func Reason(err error) string {
	var (
		ex   *clickhouse.Exception
		nerr net.Error
	)
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.As(err, &ex) && ex.Code == 252:
		return "too_many_parts"
	case errors.As(err, &ex):
		return Classify(err).String()
	case errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET), errors.Is(err, io.EOF),
		errors.Is(err, io.ErrUnexpectedEOF), errors.As(err, &nerr):
		return "network"
	default:
		return "other"
	}
}
