package source

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	sluicev1 "github.com/sluicedata/sluice/proto/sluice/v1"
)

// pgCopier reads one key range as one COPY (SELECT …) TO STDOUT in binary, streamed: PostgreSQL
// sends the range's rows while the extractor produces the pages already read, and a page is cut
// from the stream when it holds size rows or maxBytes of records. A COPY that fails (a lost
// connection, a page that took longer than the source's timeout) is started again after the last
// row of the last page returned, as the next page query of a paged read would: no row of a page
// returned is read twice, none is lost. The records are the bytes the paged read gets: the same
// SELECT writes them.
type pgCopier struct {
	p    *pgSource
	pool *pgxpool.Pool
	keys *sluicev1.KeyRange
	size int
	// maxBytes bounds the records of one page (0: no bound); a page holds at least one row.
	maxBytes int
	g        *pgRange
	s        *copyStream
	// after is the key of the last row of the pages returned, read how many rows they held.
	after   string
	started bool
	read    uint64
	done    bool
	// arena is the size of the last page's records, what the next page's buffer starts at.
	arena int
}

func (r *pgCopier) More() bool { return !r.done }

func (r *pgCopier) Then() *sluicev1.Task { return nil }

func (r *pgCopier) Key(record json.RawMessage) (string, string) {
	return RecordKey(record, r.p.src.GetKey())
}

// Close ends the COPY of a reader left before the range's end, and gives its connection back.
func (r *pgCopier) Close() error {
	if r.s != nil {
		r.s.close()
		r.s = nil
	}
	return nil
}

// Next cuts the next page from the COPY, starting it when none runs. Each attempt at a page is
// bounded by the source's timeout, from the request of the page to its last row.
func (r *pgCopier) Next(ctx context.Context) (Read, bool, error) {
	if r.done {
		return Read{}, false, nil
	}
	if ctx.Err() != nil { // the pipe may hold a page: a read cancelled returns none of it
		r.Close()
		return Read{}, false, &Error{Class: "canceled", Err: ctx.Err(), At: r.read}
	}
	var (
		records []json.RawMessage
		last    string
	)
	attempts, ferr := r.p.retry(ctx, func(actx context.Context) error {
		var err error
		if r.s == nil {
			if r.s, err = r.open(ctx, actx); err != nil {
				return err
			}
		}
		records, last, err = r.s.page(actx, r.size, r.maxBytes, r.arena+r.arena/8)
		if err != nil {
			// What the attempt read is read again: the COPY starts again after the last page.
			r.Close()
		}
		return err
	})
	if ferr != nil {
		r.Close()
		ferr.At = r.read
		return Read{}, false, ferr
	}
	at := r.read
	r.arena = r.s.used
	if r.s.ended {
		r.done = true
		r.Close()
	}
	if len(records) == 0 {
		return Read{}, false, nil
	}
	r.after, r.started = last, true
	r.read += uint64(len(records))
	return Read{Records: records, At: at, Attempts: attempts}, true, nil
}

// open starts the COPY of the range's rows from after the pages returned, in a read-only
// transaction that ends with the stream. Its statements before the COPY are bounded by actx; the
// COPY lives until the stream is closed or ctx ends.
func (r *pgCopier) open(ctx, actx context.Context) (*copyStream, error) {
	tx, err := r.pool.BeginTx(actx, pgx.TxOptions{AccessMode: pgx.ReadOnly})
	if err != nil {
		return nil, err
	}
	if err := r.prepare(actx, tx); err != nil {
		rollback(actx, tx)
		return nil, err
	}
	var more []string
	if r.started {
		// The last row returned again (key >= after), as a paged read asks for it: a second row with
		// its key shows rather than being skipped.
		more = append(more, r.g.key+" >= "+r.g.cast(r.after))
	}
	sql := "COPY (" + r.g.query(more...) + ") TO STDOUT (FORMAT binary)"
	sctx, cancel := context.WithCancel(ctx)
	s := &copyStream{tx: tx, cancel: cancel, done: make(chan struct{}), pipe: newCopyPipe()}
	s.keys.reset(r.p.src.GetKey(), r.after, r.started)
	go func() {
		defer close(s.done)
		_, err := tx.Conn().PgConn().CopyTo(sctx, s.pipe, sql)
		s.pipe.end(err)
	}()
	return s, nil
}

// prepare resolves the incremental cursor's type and the range's query, once.
func (r *pgCopier) prepare(ctx context.Context, q querier) error {
	if err := r.p.resolve(ctx, q); err != nil {
		return err
	}
	if r.g != nil {
		return nil
	}
	g, err := r.p.newRange(ctx, q, r.keys)
	if err != nil {
		return err
	}
	r.g = g
	return nil
}

// rollback ends tx; a rollback that cannot be sent closes the connection, which never goes back
// to the pool with the transaction open.
func rollback(ctx context.Context, tx pgx.Tx) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	_ = tx.Rollback(rctx)
}

// copyStream is one running COPY and the reading of its rows: binary COPY, each row a count of
// fields (2, or -1 for the end) and each field its length and bytes, the key first.
type copyStream struct {
	tx     pgx.Tx
	cancel context.CancelFunc
	done   chan struct{}
	pipe   *copyPipe
	keys   keyCheck
	closed bool
	// ended is the COPY read to its end, without error.
	ended bool

	// cur[off:] is what the stream has read from the pipe and not parsed yet.
	cur    []byte
	off    int
	header bool
	// taken is the rows the stream has handed out; key the key of the row being read, and held
	// whether the length of its record (held) is read and the record not: the record did not fit
	// the last page.
	taken   int
	key     []byte
	held    bool
	heldLen int
	small   [4]byte
	// used is the bytes of the last page's records.
	used int
}

// copySignature starts a binary COPY.
var copySignature = []byte("PGCOPY\n\xff\r\n\x00")

// errCopyCut is a COPY that ended without its trailer.
var errCopyCut = errors.New("the COPY ended before its last row")

// errCopyShape is a COPY that is not the rows the reader asked for.
var errCopyShape = errors.New("the COPY is not of the rows asked for")

// page reads up to size rows, or up to maxBytes of records (at least one row), into one buffer of
// capacity hint.
func (s *copyStream) page(ctx context.Context, size, maxBytes, hint int) ([]json.RawMessage, string, error) {
	if !s.header {
		if err := s.readHeader(ctx); err != nil {
			return nil, "", err
		}
	}
	arena := make([]byte, 0, hint)
	records := make([]json.RawMessage, 0, min(size, 16384))
	var last []byte
	for len(records) < size {
		if !s.held {
			fields, err := s.int(ctx, 2)
			if err != nil {
				return nil, "", err
			}
			if fields == -1 { // the trailer: the COPY must end here, without error
				if s.off != len(s.cur) {
					return nil, "", errCopyShape
				}
				if err := s.fill(ctx); err != errEOF {
					return nil, "", cmpErr(err, errCopyShape)
				}
				s.ended = true
				break
			}
			if fields != 2 {
				return nil, "", errCopyShape
			}
			n, err := s.int(ctx, 4)
			if err != nil {
				return nil, "", err
			}
			if n < 0 {
				return nil, "", s.keys.null()
			}
			if s.key, err = s.take(ctx, s.key[:0], n); err != nil {
				return nil, "", err
			}
			skip, err := s.keys.next(s.key, s.taken)
			if err != nil {
				return nil, "", err
			}
			if s.heldLen, err = s.int(ctx, 4); err != nil {
				return nil, "", err
			}
			if s.heldLen < 0 {
				return nil, "", errCopyShape
			}
			if skip {
				if err := s.skip(ctx, s.heldLen); err != nil {
					return nil, "", err
				}
				continue
			}
			s.held = true
		}
		// The bound is checked before the record is read: a record past it waits for the next page.
		if len(records) > 0 && maxBytes > 0 && len(arena)+s.heldLen > maxBytes {
			break
		}
		from := len(arena)
		var err error
		if arena, err = s.take(ctx, arena, s.heldLen); err != nil {
			return nil, "", err
		}
		records = append(records, json.RawMessage(arena[from:len(arena):len(arena)]))
		last = append(last[:0], s.key...)
		s.held = false
		s.taken++
	}
	s.used = len(arena)
	return records, string(last), nil
}

func cmpErr(err, fallback error) error {
	if err == nil {
		return fallback
	}
	return err
}

func (s *copyStream) readHeader(ctx context.Context) error {
	head, err := s.take(ctx, s.small[:0:0], len(copySignature)+8)
	if err != nil {
		return err
	}
	if !bytes.Equal(head[:len(copySignature)], copySignature) {
		return errCopyShape
	}
	ext := int(int32(binary.BigEndian.Uint32(head[len(copySignature)+4:])))
	if ext < 0 {
		return errCopyShape
	}
	if err := s.skip(ctx, ext); err != nil {
		return err
	}
	s.header = true
	return nil
}

// int reads a big-endian signed integer of size 2 or 4 bytes.
func (s *copyStream) int(ctx context.Context, size int) (int, error) {
	b := s.cur[s.off:]
	if len(b) >= size {
		s.off += size
	} else {
		var err error
		if b, err = s.take(ctx, s.small[:0], size); err != nil {
			return 0, err
		}
	}
	if size == 2 {
		return int(int16(binary.BigEndian.Uint16(b))), nil
	}
	return int(int32(binary.BigEndian.Uint32(b))), nil
}

// take appends the next n bytes of the stream to dst.
func (s *copyStream) take(ctx context.Context, dst []byte, n int) ([]byte, error) {
	for n > 0 {
		if s.off == len(s.cur) {
			if err := s.fill(ctx); err != nil {
				return dst, cut(err)
			}
		}
		k := min(n, len(s.cur)-s.off)
		dst = append(dst, s.cur[s.off:s.off+k]...)
		s.off += k
		n -= k
	}
	return dst, nil
}

// skip passes over the next n bytes of the stream.
func (s *copyStream) skip(ctx context.Context, n int) error {
	for n > 0 {
		if s.off == len(s.cur) {
			if err := s.fill(ctx); err != nil {
				return cut(err)
			}
		}
		k := min(n, len(s.cur)-s.off)
		s.off += k
		n -= k
	}
	return nil
}

// cut is a failure to read a part of a row: the end of the COPY there is an error.
func cut(err error) error {
	if err == errEOF {
		return errCopyCut
	}
	return err
}

// errEOF is the end of a COPY that succeeded.
var errEOF = errors.New("end of the COPY")

// fill replaces cur, read to its end, with what the COPY has sent since, waiting for it. It returns
// errEOF once the COPY ended and everything it sent is read, and the COPY's error if it failed.
func (s *copyStream) fill(ctx context.Context) error {
	p := s.pipe
	for {
		p.mu.Lock()
		if len(p.pending) > 0 {
			spare := s.cur[:0]
			if cap(spare) > 4*copyPipeBytes { // a huge row's buffer goes, not kept for the next
				spare = nil
			}
			s.cur, p.pending, s.off = p.pending, spare, 0
			p.mu.Unlock()
			signal(p.taken)
			return nil
		}
		if p.ended {
			err := p.err
			p.mu.Unlock()
			if err == nil {
				return errEOF
			}
			return err
		}
		p.mu.Unlock()
		select {
		case <-p.ready:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// close stops the COPY when it still runs (its connection is closed then, not reused), waits for
// it, and ends its transaction.
func (s *copyStream) close() {
	if s.closed {
		return
	}
	s.closed = true
	if !s.ended {
		close(s.pipe.stop)
		s.cancel()
	}
	<-s.done
	s.cancel()
	rollback(context.Background(), s.tx)
}

// copyPipeBytes bounds what a COPY sends ahead of the reader (one row more when a row is larger).
const copyPipeBytes = 256 << 10

// copyPipe hands the bytes of a COPY from the goroutine that runs it to the reader: the COPY
// appends to pending, up to copyPipeBytes, and the reader takes all of it at once, so that a
// reader that keeps up takes a row at a time and one that does not takes many.
type copyPipe struct {
	mu      sync.Mutex
	pending []byte
	ended   bool
	err     error
	// ready has a signal when pending has bytes or the COPY ended; taken when the reader took
	// pending. stop is closed when the reader is gone.
	ready, taken chan struct{}
	stop         chan struct{}
}

func newCopyPipe() *copyPipe {
	return &copyPipe{ready: make(chan struct{}, 1), taken: make(chan struct{}, 1), stop: make(chan struct{})}
}

// errCopyStopped ends a COPY whose reader is gone.
var errCopyStopped = errors.New("the COPY's reader stopped")

// Write takes one message of the COPY, waiting while pending is full.
func (p *copyPipe) Write(b []byte) (int, error) {
	for {
		p.mu.Lock()
		if len(p.pending) == 0 || len(p.pending)+len(b) <= copyPipeBytes {
			p.pending = append(p.pending, b...)
			p.mu.Unlock()
			signal(p.ready)
			return len(b), nil
		}
		p.mu.Unlock()
		select {
		case <-p.taken:
		case <-p.stop:
			return 0, errCopyStopped
		}
	}
}

// end records the COPY's end and why.
func (p *copyPipe) end(err error) {
	p.mu.Lock()
	p.ended, p.err = true, err
	p.mu.Unlock()
	signal(p.ready)
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}
