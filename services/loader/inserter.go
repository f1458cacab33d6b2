package main

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicedata/sluice/pkg/catalog"
	"github.com/sluicedata/sluice/pkg/chsink"
	"github.com/sluicedata/sluice/pkg/delivery"
	"github.com/sluicedata/sluice/pkg/pipeline"
)

// blockSink takes one block of a table's rows: every insert of the loader is one call of it, with
// the block's load time and its deduplication token ("" when the server takes none). It returns
// once the rows are durable, with errors classified (chsink.Classify). chsink.Writer is one; a
// sink that splits a block by shard and sends each part to one replica of its shard, failing over
// to another, takes its place in newLoader's links.
type blockSink interface {
	Insert(ctx context.Context, table string, block *chsink.Block, loadedAt time.Time, token string) error
	// DropsRepeats reports whether the table drops a block inserted again (chsink.Writer's): only
	// then must each block go in alone, as a member that takes its partition over forms it again.
	DropsRepeats(ctx context.Context, table string) (bool, error)
}

// tableSchemas is what the inserter needs of ClickHouse besides the inserts: the schema of a
// table for a sink, and the columns that new fields call for.
type tableSchemas interface {
	Schema(ctx context.Context, table string, sink *chsink.Sink) (*chsink.Schema, error)
	Evolve(ctx context.Context, table string, fields map[string]*chsink.Inference) error
}

// inserter inserts a flight's blocks: a table's planned blocks, built from their records, each
// given to the blockSink and, when ClickHouse rejects rows, split until the rejected ones are
// found. It runs in a flight, off the loop: it reads the plan and changes nothing of the loader's.
type inserter struct {
	sink    blockSink
	schemas tableSchemas
	sinks   sinkCatalog
	retrier *delivery.Retrier
	backoff pipeline.Backoff
	// timeout bounds a flight's inserts; the sink's lookup gets a quarter of it, and each block's
	// retries half.
	timeout time.Duration
	topic   string
	log     *slog.Logger
	metrics *loaderMetrics
	// tokens is set when the server takes insert deduplication tokens (22.2 and later): only then
	// are they computed. topicID is the raw topic's id, read at start and at every assignment.
	tokens  atomic.Bool
	topicID atomic.Pointer[string]
}

func newInserter(topic string, timeout time.Duration, backoff pipeline.Backoff) *inserter {
	return &inserter{topic: topic, timeout: timeout, backoff: backoff, log: slog.New(slog.DiscardHandler)}
}

// insertResult is what insertTable did with one table's records.
type insertResult struct {
	inserted []*item
	rejected []rejection
	err      error
	// units is how many of the plan's blocks were tried, and parked those of them that a shard of
	// the cluster did not take (chsink.ErrShardUnavailable): they wait, the others are done. sink
	// is the sink resolved for a table that had none; took is how long the flight took.
	units  int
	parked map[int]string
	sink   *chsink.Sink
	took   time.Duration
}

// rejection is a record that its table refused, with the dead-letter class and why: a value its
// schema does not take, or a row ClickHouse refused as bad data.
type rejection struct {
	item  *item
	class string
	err   error
}

// insertTable inserts a table's waiting records, block by block as tp plans them: it resolves
// their sink (when sink is nil for a typed table) and the table's schema, builds each block (a
// record whose value does not fit is rejected there, with its column named), adds the columns that
// new fields call for when the sink evolves, and inserts it. The records of blocks known to be in
// count as inserted. It returns what is in, what is rejected, how many blocks are done, and the
// failure that stopped the rest (nil when nothing is left); the records of the block that failed
// wait, those rejected while building it too, and are rejected again on the next try. It runs in
// a flight: it reads the plan and changes nothing of the loader's.
func (in *inserter) insertTable(ctx context.Context, name, schemaID string, sink *chsink.Sink, tp *tablePlan) (res insertResult) {
	res.inserted = tp.known
	if schemaID != "" && sink == nil {
		// Its own budget: a schemas topic that cannot be read must not take the whole flight's.
		sctx, cancel := context.WithTimeout(ctx, in.timeout/4)
		found, err := in.sinks.Sink(sctx, schemaID)
		cancel()
		switch {
		case errors.Is(err, catalog.ErrUnknown), errors.Is(err, catalog.ErrInvalid):
			for _, u := range tp.units {
				for _, it := range u.items {
					res.rejected = append(res.rejected, rejection{it, "unknown_schema", err})
				}
			}
			res.units = len(tp.units)
			return res
		case err != nil:
			res.err = delivery.New(delivery.Transient, "schemas", err)
			return res
		}
		sink, res.sink = found, found
	}
	units, err := in.group(ctx, name, tp.units)
	if err != nil {
		res.err = err
		return res
	}
	for _, u := range units {
		ins, rej, err := in.insertUnit(ctx, name, sink, u.unit, tp.isolate)
		res.inserted = append(res.inserted, ins...)
		var pe *parkedError
		if errors.As(err, &pe) {
			// Shards of the cluster did not take their rows: those wait, the other shards' are in
			// (counted inserted), and the blocks after it go on, so that the other shards' rows
			// keep landing. Its partition's commit stays below the block until it is all in.
			if res.parked == nil {
				res.parked = map[int]string{}
			}
			res.rejected = append(res.rejected, rej...)
			res.parked[res.units], res.units = pe.token, res.units+u.blocks
			res.err = cmp.Or(res.err, pe.err)
			continue
		}
		if err != nil {
			res.err = err
			return res
		}
		res.rejected = append(res.rejected, rej...)
		res.units += u.blocks
	}
	return res
}

// insert is what one insert sends: a planned block, or several that follow one another in the plan
// (blocks of the same table from other partitions, with the same load time) sent as one.
type insert struct {
	*unit
	blocks int
}

// group makes the inserts of a table's planned blocks. Where the table drops a block inserted again,
// each block goes alone, as a member that takes its partition over forms it again; elsewhere a
// block sent again lands again all the same (and collapses by version), so the blocks that follow
// one another with one load time, each of another partition, go as one insert: ClickHouse spends
// less on fewer, larger blocks, and the rows are the same (a partition's rows in an insert are
// still exactly one of its blocks). A block partly in (its token kept) always goes alone.
func (in *inserter) group(ctx context.Context, table string, units []*unit) ([]insert, error) {
	out := make([]insert, 0, len(units))
	if len(units) < 2 {
		for _, u := range units {
			out = append(out, insert{u, 1})
		}
		return out, nil
	}
	repeats, err := in.sink.DropsRepeats(ctx, table)
	if err != nil {
		return nil, err
	}
	var parts map[int32]bool // the partitions of the last insert
	for _, u := range units {
		last := len(out) - 1
		if repeats || last < 0 || u.token != "" || out[last].token != "" || out[last].blk.loadedAt != u.blk.loadedAt || parts[u.partition] {
			out = append(out, insert{u, 1})
			parts = map[int32]bool{u.partition: true}
			continue
		}
		parts[u.partition] = true
		if out[last].blocks == 1 { // its own unit, not the plan's, before it grows
			merged := *out[last].unit
			merged.items = slices.Clone(merged.items)
			out[last].unit = &merged
		}
		out[last].items = append(out[last].items, u.items...)
		out[last].blocks++
	}
	return out, nil
}

// insertUnit inserts the records of one planned block.
func (in *inserter) insertUnit(ctx context.Context, name string, sink *chsink.Sink, u *unit, isolate bool) (inserted []*item, rejected []rejection, err error) {
	loadedAt := time.Unix(u.blk.loadedAt, 0)
	for evolved := false; ; evolved = true {
		schema, err := in.schemas.Schema(ctx, name, sink)
		if err != nil {
			return nil, nil, err
		}
		block := schema.NewBlock(len(u.items))
		good := make([]*item, 0, len(u.items))
		rejected = rejected[:0]
		for _, it := range u.items {
			row := chsink.Input{Key: it.key, Record: it.payload, Job: it.job, Task: it.task, Source: it.jobName, Partition: it.partition,
				Offset: it.offset, ExtractedAt: it.extractedAt, Planned: it.planned}
			if err := block.Add(&row); err != nil {
				rejected = append(rejected, rejection{it, fieldClass(err), err})
				continue
			}
			good = append(good, it)
		}
		if len(block.New) > 0 && !evolved {
			if err := in.schemas.Evolve(ctx, name, block.New); err != nil {
				return nil, nil, err
			}
			continue
		}
		token := u.token // a block partly in: its remaining rows go with its first try's token
		if token == "" {
			token = in.tokenFor(name, good, loadedAt)
		}
		inserted, rej, err := in.insertRows(ctx, name, good, block, loadedAt, isolate, token)
		var pe *parkedError
		if errors.As(err, &pe) {
			pe.token = token
			return inserted, rejected, err
		}
		if err == nil && isolate && len(inserted) == 0 && len(good) > 1 && len(rej) == len(good) {
			// Every row failed alone: the failure is the table's (a view that throws on every
			// row, a server that takes no insert), not the rows'. It is held like a schema
			// failure, the job says so, and it is dead-lettered only after that grace.
			return nil, nil, delivery.New(delivery.Schema, "schema", fmt.Errorf("every row of the block failed on its own: %w", rej[0].err))
		}
		if err != nil {
			// What got in waits with the rest: the block is tried again whole, its halves formed
			// and named as before, so that the rows in come to the same blocks (dropped by their
			// tokens, or collapsed by the table), and it stays one block for a member that takes
			// the partition over.
			return nil, nil, err
		}
		in.metrics.fieldsDiscarded.Add(float64(block.Discarded))
		return inserted, append(rejected, rej...), nil
	}
}

// fieldClass is the dead-letter class of a record its schema refuses.
func fieldClass(err error) string {
	var fe *chsink.FieldError
	switch {
	case errors.As(err, &fe) && fe.Field == "*":
		return "bad_json"
	case errors.As(err, &fe) && fe.Field != "":
		return "unknown_field"
	}
	return "bad_value"
}

// insertRows inserts items, whose rows block holds, as one block, retrying transient failures while
// ctx lasts. On a data failure it inserts each half on its own, down to single rows, which are the
// rejected ones; with isolate, an unclassified failure is taken as a data failure too (rejected with
// class unclassified), not retried.
func (in *inserter) insertRows(ctx context.Context, name string, items []*item, rows *chsink.Block, loadedAt time.Time, isolate bool, token string) ([]*item, []rejection, error) {
	if len(items) == 0 {
		return nil, nil, nil
	}
	pol := delivery.Policy{Backoff: in.backoff, Deadline: in.timeout / 2}
	var refused error // refused for its partitions: the same block is refused every time
	_, err := in.retrier.Do(ctx, "insert", pol, func(int) error {
		began := time.Now()
		err := in.sink.Insert(ctx, name, rows, loadedAt, token)
		switch {
		case err == nil:
			in.metrics.insertSeconds.Observe(time.Since(began).Seconds())
			in.metrics.rowsInserted.Add(float64(rows.Len()))
		case refusedPartitions(err):
			refused = err
			return nil
		case errors.Is(err, chsink.ErrShardUnavailable):
			// Not tried again here: the shards' rows wait for the table's next flight, and the
			// blocks after it are tried meanwhile (insertTable).
			refused = err
			return nil
		case isolate && delivery.ReasonOf(err) == chsink.Unclassified:
			return delivery.New(delivery.Data, chsink.Unclassified, err)
		}
		return err
	})
	if refused != nil {
		err = refused
	}
	var shards *chsink.ShardError
	if errors.As(err, &shards) {
		waiting := make(map[int]bool, len(shards.Rows))
		for _, r := range shards.Rows {
			waiting[r] = true
		}
		var landed []*item
		for i, it := range items {
			if !waiting[i] {
				landed = append(landed, it)
			}
		}
		in.metrics.rowsInserted.Add(float64(len(landed)))
		return landed, nil, &parkedError{err: err}
	}
	switch {
	case err == nil:
		return items, nil, nil
	case delivery.ClassOf(err) != delivery.Data:
		return nil, nil, err
	case len(items) == 1:
		return nil, []rejection{{items[0], delivery.ReasonOf(err), err}}, nil
	}
	mid := len(items) / 2
	inLeft, rejLeft, err := in.insertRows(ctx, name, items[:mid], rows.Slice(0, mid), loadedAt, isolate, in.tokenFor(name, items[:mid], loadedAt))
	if err != nil {
		return inLeft, rejLeft, unpark(err)
	}
	inRight, rejRight, err := in.insertRows(ctx, name, items[mid:], rows.Slice(mid, rows.Len()), loadedAt, isolate, in.tokenFor(name, items[mid:], loadedAt))
	return append(inLeft, inRight...), append(rejLeft, rejRight...), unpark(err)
}

// token is the insert deduplication token of a block of items: the table and sink schema, the raw
// topic's id (a topic deleted and created again under the same name has another one), where the
// records are, and a sha256 of what the block holds (each record's offset and its envelope whole:
// key, payload, job, task, extraction time) and of the load time. The same records always make the
// same token, and so the same block; other records at the same offsets (a recreated topic, another
// deployment loading the same table) make another, so that the server drops only a block that is
// in already.
// parkedError is a block that some shards of a cluster took and others did not
// (chsink.ShardError): the rows of those wait, to go again with token.
type parkedError struct {
	err   error
	token string
}

// unpark is err without parking: the rows that wait after a half of a split block are not one
// shard's part of a block, and go again as blocks of their own.
func unpark(err error) error {
	var pe *parkedError
	if errors.As(err, &pe) {
		return pe.err
	}
	return err
}

func (e *parkedError) Error() string { return e.err.Error() }
func (e *parkedError) Unwrap() error { return e.err }

// tokenFor is the token of a block of items, "" where the server takes none.
func (in *inserter) tokenFor(table string, items []*item, loadedAt time.Time) string {
	if !in.tokens.Load() {
		return ""
	}
	return in.token(table, items, loadedAt)
}

func (in *inserter) token(table string, items []*item, loadedAt time.Time) string {
	h := sha256.New()
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(loadedAt.Unix()))
	h.Write(n[:])
	for _, it := range items {
		binary.BigEndian.PutUint64(n[:], uint64(it.offset))
		h.Write(n[:])
		binary.BigEndian.PutUint64(n[:], uint64(len(it.raw)))
		h.Write(n[:])
		h.Write(it.raw)
	}
	first, last := items[0], items[len(items)-1]
	topicID := ""
	if id := in.topicID.Load(); id != nil {
		topicID = *id
	}
	return fmt.Sprintf("sluice2-%s-%s-%s-%s-%d-%d-%d-%x", table, first.schema, in.topic, topicID, first.partition,
		first.offset, last.offset, h.Sum(nil))
}

// readTopicID reads the raw topic's id, which the tokens of inserts name; it keeps the last one it
// read when the broker does not answer (a topic recreated meanwhile differs in the tokens' content
// hash all the same).
func (in *inserter) readTopicID(ctx context.Context, cl *kgo.Client) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	topics, err := kadm.NewClient(cl).ListTopics(ctx, in.topic)
	if err == nil {
		err = topics.Error()
	}
	d, ok := topics[in.topic]
	if err != nil || !ok || d.ID == (kadm.TopicID{}) {
		in.log.Warn("read the raw topic's id for the insert tokens; keeping the last one", "topic", in.topic, "error", err)
		return
	}
	id := hex.EncodeToString(d.ID[:])
	if old := in.topicID.Swap(&id); old != nil && *old != id {
		in.log.Warn("the raw topic was created again: its id changed", "topic", in.topic, "was", *old, "now", id)
	}
}
