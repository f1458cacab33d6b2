package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicedata/sluice/pkg/kafka"
)

// Two planners may run; one leads. The lease is partition 0 of a one-partition topic, consumed by a
// consumer group of the planners: the member the coordinator assigns it to leads. Only the leader
// writes (plans, publishes tasks, ends jobs, stores states, marks and schedules); the others fold
// the same topics, serve reads, and send writes to the leader, whose address its lease record on
// the topic gives.
//
// A leader writes only within a term: from the moment it holds the partition, caught up with the
// events, until it learns it lost it, or until its renewals stop for half a session. A renewal is
// an offset commit carrying the member's generation, which the coordinator refuses from a member it
// expelled; the coordinator gives the partition to another member only after a session without
// heartbeats, so a term that lapses at half a session ends before another can begin.

// errNotLeader is a write asked of a planner that does not lead now.
var errNotLeader = errors.New("this planner does not lead now; another one takes the writes")

// termWriteOpts are the options of the clients a planner writes with. A write whose request is in
// flight fails when its term ends (its context does), rather than waiting for the broker's answer
// and, if none comes, sending the request again later, when another planner may lead. What that
// costs, the idempotent producer's guard against the client's own duplicates of such a write, the
// planner's writes do without: each is harmless to repeat. A request already sent may still land;
// nothing a client does can call it back.
func termWriteOpts() []kgo.Opt {
	return []kgo.Opt{kgo.AllowIdempotentProduceCancellation()}
}

// leaseRecordKey keys the lease records: the topic is compacted to the newest.
const leaseRecordKey = "leader"

// leaderRecord is what a planner writes on the lease topic once it leads.
type leaderRecord struct {
	// Address is where it serves the API (SLUICE_PLANNER_ADVERTISE); empty when not advertised.
	Address string `json:"address"`
	// Member is its member id in the lease group; Generation the group's generation it led from.
	Member     string    `json:"member"`
	Generation int32     `json:"generation"`
	Process    string    `json:"process"`
	Since      time.Time `json:"since"`
}

// term is one stretch of leading: ctx ends when the lease is lost or lapses.
type term struct {
	ctx    context.Context
	cancel context.CancelFunc
	// lapse ends the term when no renewal extends it in time.
	lapse *time.Timer
	// holds are the writes of the term in flight: a revoked leader waits for them before it lets go.
	holds      sync.WaitGroup
	active     bool
	member     string
	generation int32
	since      time.Time
}

// leaseConfig is how a planner takes part in the lease.
type leaseConfig struct {
	Group, Topic string
	// Advertise is where this planner serves the API, for the others to forward writes to.
	Advertise string
	// Session is the lease group's session timeout: how long a silent leader keeps the lease.
	Session time.Duration
}

// lease is this planner's part in the lease: its group member, its reader of the lease records,
// and its current term.
type lease struct {
	cfg     leaseConfig
	member  *kgo.Client
	watch   *kgo.Client
	log     *slog.Logger
	now     func() time.Time
	process string
	// settled is set once a leader was known: a planner is ready from then on.
	settled atomic.Bool

	mu      sync.Mutex
	owned   bool // the group assigned us the partition
	term    *term
	record  leaderRecord // the newest lease record
	holder  string       // the member the group assigned the partition to, as last described
	changed chan struct{}

	leading prometheus.Gauge
	changes *prometheus.CounterVec
}

// newLease builds the lease's clients; reg may be nil in tests.
func newLease(kcfg kafka.Config, cfg leaseConfig, log *slog.Logger, reg prometheus.Registerer) (*lease, error) {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	l := &lease{cfg: cfg, log: log, now: time.Now, process: hex.EncodeToString(b), changed: make(chan struct{})}
	f := promauto.With(reg)
	l.leading = f.NewGauge(prometheus.GaugeOpts{Name: "planner_leading",
		Help: "1 while this planner leads (holds the lease, caught up, and may write), else 0."})
	l.changes = f.NewCounterVec(prometheus.CounterOpts{Name: "planner_lease_changes_total",
		Help: "Changes of this planner's lease: gained (it leads), lost (revoked or expelled), lapsed (not renewed in time)."}, []string{"change"})
	for _, c := range []string{"gained", "lost", "lapsed"} {
		l.changes.WithLabelValues(c)
	}
	renew := cfg.Session / 5
	var err error
	l.member, err = kafka.NewClient(kcfg, "sluice-planner-lease", log, nil,
		kgo.ConsumerGroup(cfg.Group),
		kgo.ConsumeTopics(cfg.Topic),
		kgo.Balancers(kgo.CooperativeStickyBalancer()),
		kgo.SessionTimeout(cfg.Session),
		kgo.HeartbeatInterval(renew),
		kgo.RebalanceTimeout(cfg.Session),
		kgo.DisableAutoCommit(),
		kgo.OnPartitionsAssigned(func(_ context.Context, cl *kgo.Client, m map[string][]int32) {
			if l.ours(m) {
				l.gain(cl)
			}
		}),
		kgo.OnPartitionsRevoked(func(_ context.Context, _ *kgo.Client, m map[string][]int32) {
			if l.ours(m) {
				l.drop("lost", true)
			}
		}),
		kgo.OnPartitionsLost(func(_ context.Context, _ *kgo.Client, m map[string][]int32) {
			if l.ours(m) {
				l.drop("lost", false)
			}
		}),
	)
	if err != nil {
		return nil, err
	}
	l.watch, err = kafka.NewClient(kcfg, "sluice-planner-lease-watch", log, nil, append(termWriteOpts(),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{cfg.Topic: {0: kgo.NewOffset().AtStart()}}))...)
	if err != nil {
		l.member.Close()
		return nil, err
	}
	return l, nil
}

func (l *lease) ours(m map[string][]int32) bool {
	for _, p := range m[l.cfg.Topic] {
		if p == 0 {
			return true
		}
	}
	return false
}

// notify wakes whoever waits on a change; the caller holds mu.
func (l *lease) notify() {
	close(l.changed)
	l.changed = make(chan struct{})
}

// Changed is closed at the lease's next change.
func (l *lease) Changed() <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.changed
}

// gain starts a term: the group gave this member the partition.
func (l *lease) gain(cl *kgo.Client) {
	member, gen := cl.GroupMetadata()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.owned = true
	l.holder = member
	l.begin(member, gen)
}

// begin starts a term that lapses unless renewed within half a session; the caller holds mu.
func (l *lease) begin(member string, gen int32) {
	if l.term != nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	t := &term{ctx: ctx, cancel: cancel, member: member, generation: gen, since: l.now()}
	t.lapse = time.AfterFunc(l.hold(), func() { l.expire(t) })
	l.term = t
	l.changes.WithLabelValues("gained").Inc()
	l.log.Info("planner lease gained; taking over", "member", member, "generation", gen)
	l.notify()
}

// hold is how long a renewal keeps the term: half a session. The coordinator expels a member only
// after a whole session without a heartbeat, and heartbeats go every fifth of one.
func (l *lease) hold() time.Duration { return l.cfg.Session / 2 }

// expire ends term t, unrenewed in time: this planner may still hold the partition, but can no
// longer be sure that no other planner does.
func (l *lease) expire(t *term) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.term != t {
		return
	}
	l.end("lapsed")
}

// end ends the current term and fails its writes in flight; the caller holds mu.
func (l *lease) end(change string) *term {
	t := l.retire(change)
	if t != nil {
		t.cancel()
	}
	return t
}

// retire ends the current term: no write starts in it any more, and those in flight go on until
// the caller cancels it; the caller holds mu.
func (l *lease) retire(change string) *term {
	t := l.term
	if t == nil {
		return nil
	}
	t.lapse.Stop()
	l.term = nil
	l.leading.Set(0)
	l.changes.WithLabelValues(change).Inc()
	l.log.Warn("planner lease "+change+"; writes stop", "member", t.member, "generation", t.generation)
	l.notify()
	return t
}

// drop ends the term when the partition was revoked or lost. A revoked leader lets the writes in
// flight be answered (for at most half a session) before it fails what is left of them, so that
// its successor, which the group assigns only once this callback returns, starts after them. A
// lost one fails them at once: another planner may lead already.
func (l *lease) drop(change string, wait bool) {
	l.mu.Lock()
	l.owned = false
	t := l.retire(change)
	l.mu.Unlock()
	if t == nil {
		return
	}
	defer t.cancel()
	if !wait {
		return
	}
	done := make(chan struct{})
	go func() { t.holds.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(l.hold()):
		l.log.Warn("planner lease revoked with writes still in flight")
	}
}

// Pending returns the term that is not active yet: the planner must catch up and Activate it.
func (l *lease) Pending() *term {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.term != nil && !l.term.active {
		return l.term
	}
	return nil
}

// Activate records on the lease topic where this planner serves, within term t, and then lets t
// write: the planner says it leads only once the others can learn where. It fails when t ended
// meanwhile.
func (l *lease) Activate(ctx context.Context, t *term) error {
	rec := leaderRecord{Address: l.cfg.Advertise, Member: t.member, Generation: t.generation, Process: l.process, Since: l.now().UTC()}
	v, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	l.mu.Lock()
	if l.term != t {
		l.mu.Unlock()
		return errNotLeader
	}
	t.holds.Add(1) // the record is the term's first write
	l.mu.Unlock()
	defer t.holds.Done()
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(t.ctx, cancel)()
	if err := l.watch.ProduceSync(wctx, &kgo.Record{Topic: l.cfg.Topic, Partition: 0, Key: []byte(leaseRecordKey), Value: v}).FirstErr(); err != nil {
		if t.ctx.Err() != nil {
			return fmt.Errorf("%w: %w", errNotLeader, err)
		}
		return fmt.Errorf("record the lease: %w", err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.term != t {
		return errNotLeader
	}
	t.active = true
	l.record = rec
	l.leading.Set(1)
	l.settled.Store(true)
	l.log.Info("planner leads", "member", t.member, "generation", t.generation, "address", l.cfg.Advertise)
	l.notify()
	return nil
}

// Hold returns a context for one write within the active term, which ends with the term, and the
// function to call once the write is done; errNotLeader when no term is active.
func (l *lease) Hold(ctx context.Context) (context.Context, func(), error) {
	l.mu.Lock()
	t := l.term
	if t == nil || !t.active {
		l.mu.Unlock()
		return nil, nil, errNotLeader
	}
	t.holds.Add(1)
	l.mu.Unlock()
	wctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(t.ctx, cancel)
	return wctx, func() { stop(); cancel(); t.holds.Done() }, nil
}

// Leading reports whether this planner leads now: a term is active.
func (l *lease) Leading() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.term != nil && l.term.active
}

// leaderView is who leads, as a planner sees it.
type leaderView struct {
	// Leading says this planner leads; Address is where the leader serves ("" when unknown or not
	// advertised); Known says a leader is known at all.
	Leading bool      `json:"leading"`
	Known   bool      `json:"known"`
	Address string    `json:"address,omitempty"`
	Since   time.Time `json:"since,omitzero"`
	Self    string    `json:"self,omitempty"`
}

// Leader returns who leads: this planner, or the member the group assigned the lease to if its
// record names it (a record of an earlier holder says nothing).
func (l *lease) Leader() leaderView {
	l.mu.Lock()
	defer l.mu.Unlock()
	v := leaderView{Self: l.cfg.Advertise}
	switch {
	case l.term != nil && l.term.active:
		v.Leading, v.Known, v.Address, v.Since = true, true, l.cfg.Advertise, l.record.Since
	case l.holder != "" && !l.owned && l.record.Member == l.holder:
		v.Known, v.Address, v.Since = true, l.record.Address, l.record.Since
	}
	return v
}

// ready is the readiness check: a planner is ready once it knew a leader (itself or another), and
// stays so through a failover.
func (l *lease) ready(context.Context) error {
	if l.settled.Load() {
		return nil
	}
	if l.Leader().Known {
		l.settled.Store(true)
		return nil
	}
	return errors.New("no planner leads yet: the lease group has not settled")
}

// Run takes part in the lease until ctx ends: it keeps the group member polling, renews a held
// lease, and reads the lease records and the group's assignment. When ctx ends it leaves the group,
// which hands the lease to another planner at once.
func (l *lease) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer func() {
		// Close leaves the group; its revoke ends the term and waits for the writes in flight.
		l.member.Close()
		wg.Wait()
		l.watch.Close()
	}()
	wg.Go(func() {
		for {
			fs := l.member.PollFetches(ctx)
			if ctx.Err() != nil || fs.IsClientClosed() {
				return
			}
		}
	})
	wg.Go(func() { l.read(ctx) })
	t := time.NewTicker(l.cfg.Session / 5)
	defer t.Stop()
	for {
		l.renew(ctx)
		l.describe(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// renew commits to the lease partition with this member's generation while the group assigned it
// the partition: a commit the coordinator takes extends the term by half a session from when it was
// sent; one it refuses as from an expelled member or an old generation ends the term at once.
func (l *lease) renew(ctx context.Context) {
	l.mu.Lock()
	owned := l.owned
	l.mu.Unlock()
	if !owned {
		return
	}
	sent := l.now()
	cctx, cancel := context.WithTimeout(ctx, l.cfg.Session/5)
	defer cancel()
	err := kafka.CommitSync(cctx, l.member, map[string]map[int32]kgo.EpochOffset{l.cfg.Topic: {0: {Epoch: -1, Offset: 0}}})
	member, gen := l.member.GroupMetadata()
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case err == nil && l.owned:
		if l.term == nil {
			l.begin(member, gen) // lapsed, and renewed since: a new term, caught up again
			return
		}
		if left := l.hold() - l.now().Sub(sent); left > 0 {
			l.term.lapse.Reset(left)
		}
	case errors.Is(err, kerr.UnknownMemberID), errors.Is(err, kerr.IllegalGeneration), errors.Is(err, kerr.FencedInstanceID):
		l.end("lost")
	}
}

// describe learns which member holds the lease partition now.
func (l *lease) describe(ctx context.Context) {
	dctx, cancel := context.WithTimeout(ctx, l.cfg.Session/5)
	defer cancel()
	groups, err := kadm.NewClient(l.watch).DescribeGroups(dctx, l.cfg.Group)
	if err != nil {
		return
	}
	g, ok := groups[l.cfg.Group]
	if !ok || g.Err != nil {
		return
	}
	holder := ""
	for _, m := range g.Members {
		if c, ok := m.Assigned.AsConsumer(); ok {
			for _, t := range c.Topics {
				if t.Topic == l.cfg.Topic && len(t.Partitions) > 0 {
					holder = m.MemberID
				}
			}
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if holder != l.holder {
		l.holder = holder
		l.notify()
	}
}

// read follows the lease records.
func (l *lease) read(ctx context.Context) {
	for {
		fs := l.watch.PollFetches(ctx)
		if ctx.Err() != nil || fs.IsClientClosed() {
			return
		}
		fs.EachError(func(topic string, p int32, err error) {
			l.log.Warn("read the planner lease", "topic", topic, "partition", p, "error", err)
		})
		fs.EachRecord(func(r *kgo.Record) {
			var rec leaderRecord
			if err := json.Unmarshal(r.Value, &rec); err != nil {
				l.log.Warn("skip an undecodable lease record", "offset", r.Offset, "error", err)
				return
			}
			l.mu.Lock()
			l.record = rec
			l.notify()
			l.mu.Unlock()
		})
	}
}
