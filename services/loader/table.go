package main

import (
	"cmp"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sluicedata/sluice/pkg/chsink"
	"github.com/sluicedata/sluice/pkg/delivery"
	sluicev1 "github.com/sluicedata/sluice/proto/sluice/v1"
)

// tableKey is a table and a sink schema ("" for the raw landing rows): the records of one insert.
type tableKey struct{ table, schema string }

// item is one raw record, decoded, on its way to its table.
type item struct {
	// Where the record is on the raw topic, and its Kafka key and value: not the *kgo.Record,
	// which would keep alive the whole slab of records franz-go allocated with it.
	partition             int32
	offset                int64
	owner                 *partition // the ownership the record was polled in
	rawKey, raw           []byte
	job, task, run, table string
	schema                string
	key                   string
	payload               []byte
	extractedAt           time.Time
	polled                time.Time
	// jobName and planned are the job's name and when this run of it was planned, from its id:
	// the row's $source (in the raw table) and the start of its version.
	jobName string
	planned time.Time
}

// table is the records waiting for one table with one sink schema, and what the table said last.
type table struct {
	name     string
	schemaID string // "" for the raw landing rows
	sink     *chsink.Sink
	items    []*item
	// bytes is the size of the waiting records.
	bytes int
	// rows is the most records a new block of the table takes. It starts at the batch size,
	// halves when an insert runs out of time or ClickHouse refuses a block for the partitions its
	// rows fall in (shrink), and doubles back while the table is behind.
	rows int
	// flying is set while a flight inserts the table's blocks.
	flying bool
	// ceiling is half the smallest block ClickHouse refused for its partitions, the most its
	// blocks grow back to (0: none was refused); timeouts counts the flights in a row that ran
	// out of time.
	ceiling, timeouts int
	// stalled is set when the table's records could make no block at the last plan (a block
	// recorded by the partition's last owner is not all polled, or the partition's commit metadata
	// is full): it is not due again until a record comes or a flight lands.
	stalled bool
	// class is the class of the last failed insert (transient or schema) while records wait.
	class   delivery.Class
	reason  string
	attempt int
	retryAt time.Time
	// since is when the table first refused records for a schema reason; after the grace the
	// loader dead-letters what it refuses.
	since time.Time
	// unclassifiedSince is when the table's inserts began to fail with an unclassified ClickHouse
	// error, and unclassified how many have since; past both bounds its next flight isolates the
	// rows that still fail.
	unclassifiedSince time.Time
	unclassified      int
	// told are the jobs whose status says that this table holds their records.
	told map[string]bool
}

func (t *table) key() tableKey { return tableKey{t.name, t.schemaID} }

// succeeded clears what t's failures left once a flight of it landed whole. full says that the
// flight's blocks took t's block size in all: when another such block is waiting the table is
// behind, and larger blocks are fewer inserts (and parts) for the same records, up to batchRows.
func (t *table) succeeded(full bool, batchRows int) {
	t.class, t.reason, t.attempt, t.since, t.retryAt = delivery.Transient, "", 0, time.Time{}, time.Time{}
	t.timeouts, t.unclassified, t.unclassifiedSince = 0, 0, time.Time{}
	if ceiling := cmp.Or(t.ceiling, batchRows); full && len(t.items) >= t.rows && t.rows < ceiling {
		t.rows = min(2*t.rows, ceiling)
	}
}

// failed holds t's records after an insert failed with err, of class (transient or schema), until
// a retry delay from now.
func (t *table) failed(class delivery.Class, err error, delay time.Duration, now time.Time) {
	t.class, t.reason = class, err.Error()
	t.retryAt = now.Add(delay)
	t.attempt++
}

// shrink halves the blocks of a table whose insert ran out of time, or that ClickHouse refused
// because the block's rows fall in more partitions than one insert may write
// (max_partitions_per_insert_block), down to minRows. Such a refused block (of failedRows rows)
// was not written and never will be: the table's blocks stay at half its size, and shrink reports
// that it is to be planned again as smaller blocks. A block that timed out is tried again whole,
// since part of it may be in; when it times out a second time in a row it is planned again
// smaller all the same (what landed twice, the table collapses). A table refused as too many parts
// because merges are behind keeps its block size: it waits for its retry, and smaller blocks would
// only make more parts.
func (t *table) shrink(failedRows int, err error, minRows int) (replan bool) {
	refused := refusedPartitions(err)
	timeout := delivery.ReasonOf(err) == "timeout"
	if timeout {
		t.timeouts++
	}
	if !refused && !timeout {
		return false
	}
	t.rows = max(t.rows/2, minRows)
	if refused {
		t.rows = min(t.rows, max(failedRows/2, 1))
		t.ceiling = t.rows
	}
	return refused || t.timeouts >= 2
}

// isolates reports whether t's next flight looks for the rows that an unclassified error is about:
// the error came back attempts times over at least grace, so that it is taken for the rows' (a
// view that throws on them, say) and no longer for the server's.
func (t *table) isolates(now time.Time, attempts int, grace time.Duration) bool {
	return t.unclassified >= attempts && now.Sub(t.unclassifiedSince) >= grace
}

// refusedPartitions reports whether ClickHouse refused a block because its rows fall in more
// partitions than one insert may write: the same block is refused every time.
func refusedPartitions(err error) bool {
	return delivery.ReasonOf(err) == "too_many_parts" && strings.Contains(err.Error(), "partitions for single INSERT block")
}

// tell puts on the status of every job with records waiting for t that its table refuses them, or,
// with cleared, that it takes them again; grace is how long they wait before their dead letters.
func (t *table) tell(b *batch, cleared bool, grace time.Duration) {
	jobs := map[string]uint64{}
	if cleared {
		for job := range t.told {
			jobs[job] = 0
		}
	} else {
		for _, it := range t.items {
			if it.job != "" && !t.told[it.job] {
				jobs[it.job]++
			}
		}
	}
	for job, n := range jobs {
		held := &sluicev1.LoadHeld{Table: t.name, ErrorClass: "schema", Reason: strings.ToValidUTF8(t.reason, "\uFFFD"), Records: n, Cleared: cleared,
			Since: timestamppb.New(t.since), DeadLetterAt: timestamppb.New(t.since.Add(grace))}
		b.events = append(b.events, &sluicev1.JobEvent{JobId: job, Producer: "loader", Event: &sluicev1.JobEvent_LoadHeld{LoadHeld: held}})
		if cleared {
			delete(t.told, job)
		} else {
			t.told[job] = true
		}
	}
}
