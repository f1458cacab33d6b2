package chsink

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"

	"github.com/ClickHouse/clickhouse-go/v2"

	"github.com/sluicedata/sluice/pkg/delivery"
)

// ClickHouse error codes that classify a failure.
var (
	schemaCodes = map[int32]bool{
		8:   true, // THERE_IS_NO_COLUMN
		10:  true, // NOT_FOUND_COLUMN_IN_BLOCK
		16:  true, // NO_SUCH_COLUMN_IN_TABLE
		44:  true, // ILLEGAL_COLUMN
		47:  true, // UNKNOWN_IDENTIFIER
		60:  true, // UNKNOWN_TABLE
		81:  true, // UNKNOWN_DATABASE
		48:  true, // NOT_IMPLEMENTED (inserting into a view or engine that takes none)
		497: true, // ACCESS_DENIED
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
		469: true, // VIOLATED_CONSTRAINT
	}
)

// transientCodes are the failures that pass with time: the server busy, a replica or ZooKeeper away,
// merges behind, an insert whose fate is unknown. They are retried, never dead-lettered.
var transientCodes = map[int32]bool{
	159:  true, // TIMEOUT_EXCEEDED
	164:  true, // READONLY
	202:  true, // TOO_MANY_SIMULTANEOUS_QUERIES
	203:  true, // NO_FREE_CONNECTION
	209:  true, // SOCKET_TIMEOUT
	210:  true, // NETWORK_ERROR
	242:  true, // TABLE_IS_READ_ONLY
	252:  true, // TOO_MANY_PARTS
	285:  true, // TOO_FEW_LIVE_REPLICAS
	319:  true, // UNKNOWN_STATUS_OF_INSERT
	394:  true, // QUERY_WAS_CANCELLED
	425:  true, // SYSTEM_ERROR
	999:  true, // KEEPER_EXCEPTION
	1002: true, // UNKNOWN_EXCEPTION
	3:    true, // UNEXPECTED_END_OF_FILE
	32:   true, // ATTEMPT_TO_READ_AFTER_EOF
	225:  true, // NO_ZOOKEEPER
	236:  true, // ABORTED
	279:  true, // ALL_CONNECTION_TRIES_FAILED (a shard of a Distributed table down)
	286:  true, // UNSATISFIED_QUORUM_FOR_PREVIOUS_WRITE
	289:  true, // REPLICA_IS_NOT_IN_QUORUM
	439:  true, // CANNOT_SCHEDULE_TASK
	1000: true, // POCO_EXCEPTION (network and system errors of the server)
}

// Unclassified is the reason of a ClickHouse error whose code none of the lists above holds (a
// materialized view's throwIf, 395, a memory limit, 241, a logical error): it may pass, or it may be
// the rows'. The loader retries it for a bounded number of attempts over a grace period, then splits
// the block to find the rows that still fail and dead-letters them, so that no code holds a table for
// good.
const Unclassified = "unclassified"

// errAppend marks a block that could not be built for the table's columns: their types cannot take
// the landing rows, which is the table's shape, not one row's fault.
var errAppend = errors.New("the table's columns cannot take the landing rows")

// Classify is the loader's one decision about a failed insert: schema failures (a missing or
// different table) hold that table's records, data failures are looked for row by row, the known
// transient ones (and failures to reach the server) are retried, and a ClickHouse error of any other
// code is transient with the reason Unclassified, for the loader's bounded rule.
func Classify(err error) error {
	if err == nil {
		return nil
	}
	var ex *clickhouse.Exception
	switch {
	case errors.Is(err, ErrBufferTable):
		return delivery.New(delivery.Schema, "buffer_table", err)
	case errors.Is(err, errAppend), errors.Is(err, ErrIncompatibleTable), errors.Is(err, ErrNoTable):
		return delivery.New(delivery.Schema, "schema", err)
	case errors.As(err, &ex) && schemaCodes[ex.Code]:
		return delivery.New(delivery.Schema, "schema", err)
	case errors.As(err, &ex) && dataCodes[ex.Code]:
		return delivery.New(delivery.Data, "data", err)
	case errors.As(err, &ex) && !transientCodes[ex.Code]:
		return delivery.New(delivery.Transient, Unclassified, err)
	}
	return delivery.New(delivery.Transient, reason(err), err)
}

// reason names a transient failure for a metric label: a small fixed set.
func reason(err error) string {
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
		return "clickhouse_error"
	case errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET), errors.Is(err, io.EOF),
		errors.Is(err, io.ErrUnexpectedEOF), errors.As(err, &nerr):
		return "network"
	default:
		return "other"
	}
}

func appendError(column, table string, err error) error {
	return fmt.Errorf("append column %s for %s: %w: %w", column, table, errAppend, err)
}
