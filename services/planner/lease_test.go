package main

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sluicedata/sluice/pkg/events"
	"github.com/sluicedata/sluice/pkg/kafka"
	sluicev1 "github.com/sluicedata/sluice/proto/sluice/v1"
)

// The tests in this file hold the planners' lease on a kfake cluster, with a one-second session.

const testSession = time.Second

func leaseCluster(t *testing.T) *kfake.Cluster {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "lease"), kfake.GroupMinSessionTimeout(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// runLease starts a planner's part in the lease; stop ends it as a planner that shuts down does.
func runLease(t *testing.T, c *kfake.Cluster, advertise string) (l *lease, stop func()) {
	t.Helper()
	kcfg := kafka.Config{Brokers: c.ListenAddrs(), DialTimeout: time.Second, RequestTimeout: 5 * time.Second}
	l, err := newLease(kcfg, leaseConfig{Group: "lead", Topic: "lease", Advertise: advertise, Session: testSession},
		slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = l.Run(ctx); close(done) }()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return l, stop
}

// takeOver activates the term of whichever of ls gains the lease, as Planner.Lead does, and
// returns it.
func takeOver(t *testing.T, ls ...*lease) *lease {
	t.Helper()
	var leader *lease
	waitUntil(t, "a planner to gain the lease", func() bool {
		for _, l := range ls {
			if tm := l.Pending(); tm != nil && l.Activate(context.Background(), tm) == nil {
				leader = l
				return true
			}
		}
		return false
	})
	return leader
}

// TestLeaseOneLeadsTheOtherKnowsWhere: of two planners one leads and may write; the other may not,
// and learns the leader's address from the lease record once the group says who holds it.
func TestLeaseOneLeadsTheOtherKnowsWhere(t *testing.T) {
	c := leaseCluster(t)
	a, _ := runLease(t, c, "http://a.example:8080")
	b, _ := runLease(t, c, "http://b.example:8080")
	leader := takeOver(t, a, b)
	follower := b
	if leader == b {
		follower = a
	}
	if !leader.Leading() || follower.Leading() {
		t.Fatalf("leading: leader %v, follower %v", leader.Leading(), follower.Leading())
	}
	if _, _, err := follower.Hold(context.Background()); !errors.Is(err, errNotLeader) {
		t.Fatalf("the follower may write: %v", err)
	}
	waitUntil(t, "the follower to know the leader", func() bool {
		v := follower.Leader()
		return v.Known && !v.Leading && v.Address == leader.cfg.Advertise
	})
	if follower.ready(context.Background()) != nil || leader.ready(context.Background()) != nil {
		t.Fatal("both planners must be ready once a leader is known")
	}
	// The follower stays a follower: the group keeps the lease where it is while both answer.
	time.Sleep(3 * testSession)
	if !leader.Leading() || follower.Leading() {
		t.Fatal("the lease moved between two live planners")
	}
}

// TestLeaseMovesOnLeave: a leader that stops leaves the group, and the other planner leads at once;
// the stopped one's writes end with its term.
func TestLeaseMovesOnLeave(t *testing.T) {
	c := leaseCluster(t)
	a, stopA := runLease(t, c, "http://a.example:8080")
	leader := takeOver(t, a)
	wctx, release, err := leader.Hold(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	b, _ := runLease(t, c, "http://b.example:8080")
	release() // the write in flight ends; the leaver waits for it
	stopA()
	if wctx.Err() == nil {
		t.Fatal("a write of a term that ended goes on")
	}
	if takeOver(t, b) != b || a.Leading() {
		t.Fatal("the lease did not move to the planner that stayed")
	}
}

// TestLeaseSilentLeaderFencesItself: a leader whose heartbeats and renewals stop reaching the
// coordinator (a pause, a partition) stops writing before the coordinator can give the lease to
// the other planner, which then leads.
func TestLeaseSilentLeaderFencesItself(t *testing.T) {
	c := leaseCluster(t)
	a, _ := runLease(t, c, "http://a.example:8080")
	takeOver(t, a)
	b, _ := runLease(t, c, "http://b.example:8080")
	waitUntil(t, "b to know a leads", func() bool { return b.Leader().Known })

	aMember, _ := a.member.GroupMetadata()
	var mu sync.Mutex
	var aEnded, bGained time.Time
	silence := func(member func(kmsg.Request) string) func(kmsg.Request) (kmsg.Response, error, bool) {
		return func(req kmsg.Request) (kmsg.Response, error, bool) {
			c.KeepControl()
			if member(req) == aMember {
				return nil, errors.New("a is silent"), true
			}
			return nil, nil, false
		}
	}
	c.ControlKey(int16(kmsg.Heartbeat), silence(func(r kmsg.Request) string { return r.(*kmsg.HeartbeatRequest).MemberID }))
	c.ControlKey(int16(kmsg.OffsetCommit), silence(func(r kmsg.Request) string { return r.(*kmsg.OffsetCommitRequest).MemberID }))
	c.ControlKey(int16(kmsg.JoinGroup), silence(func(r kmsg.Request) string { return r.(*kmsg.JoinGroupRequest).MemberID }))
	c.ControlKey(int16(kmsg.SyncGroup), silence(func(r kmsg.Request) string { return r.(*kmsg.SyncGroupRequest).MemberID }))

	waitUntil(t, "the silent leader to stop", func() bool {
		if a.Leading() {
			return false
		}
		mu.Lock()
		defer mu.Unlock()
		if aEnded.IsZero() {
			aEnded = time.Now()
		}
		return true
	})
	if _, _, err := a.Hold(context.Background()); !errors.Is(err, errNotLeader) {
		t.Fatalf("the silent leader may still write: %v", err)
	}
	if takeOver(t, b) != b {
		t.Fatal("b did not lead")
	}
	bGained = time.Now()
	if !aEnded.Before(bGained) {
		t.Fatalf("a stopped at %s, after b led at %s", aEnded, bGained)
	}
}

// TestFollowerForwardsWrites: a follower sends a write to the leader's address, one of its peers,
// with its token, and answers 503 with Retry-After when the leader does not answer.
func TestFollowerForwardsWrites(t *testing.T) {
	c := leaseCluster(t)
	var got http.Header
	leaderSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = r.Header.Clone()
		w.WriteHeader(http.StatusCreated)
	}))
	t.Cleanup(leaderSrv.Close)
	a, _ := runLease(t, c, leaderSrv.URL)
	takeOver(t, a)
	b, _ := runLease(t, c, "http://b.example:8080")
	waitUntil(t, "b to know a leads", func() bool { return b.Leader().Known })
	p := &Planner{lease: b, log: slog.New(slog.DiscardHandler), peers: mustPeers(t, leaderSrv.URL)}
	h := p.leaderOnly(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		t.Error("the follower served a write itself")
	}))

	req := httptest.NewRequest(http.MethodPost, "/v1/jobs", nil)
	req.Header.Set("Authorization", "Bearer token")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusCreated || got.Get("Authorization") != "Bearer token" || got.Get(forwardedHeader) == "" {
		t.Fatalf("forwarded: %d, the leader got %v", rec.Code, got)
	}

	// A write forwarded already is not forwarded again.
	req.Header.Set(forwardedHeader, "1")
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") == "" {
		t.Fatalf("a forwarded write to a follower: %d %v", rec.Code, rec.Header())
	}

	leaderSrv.Close() // the leader went away; the lease has not moved yet
	req.Header.Del(forwardedHeader)
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") == "" {
		t.Fatalf("a write while the leader is away: %d %v", rec.Code, rec.Header())
	}
}

// TestFollowerTakesOverAJob: a follower folds a job the leader planned and publishes nothing; the
// job completes while the leader no longer works but still holds the lease, and nobody records its
// end; once the leader leaves, the follower leads, records the end, and publishes no task again.
func TestFollowerTakesOverAJob(t *testing.T) {
	r := newPlannerRig(t)
	la, leaveA := r.lease(t, "http://a.example:8080")
	a, stopA := r.startWith(t, la)
	waitUntil(t, "a to lead", la.Leading)
	lb, _ := r.lease(t, "http://b.example:8080")
	b, _ := r.startWith(t, lb)
	waitUntil(t, "b to know a leads", func() bool { return lb.Leader().Known })

	job, _, err := a.Submit(context.Background(), r.spec(t, "users"), "")
	if err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "b to fold the job", func() bool { j, ok := b.jobs.Get(job.ID, time.Now()); return ok && j.Tasks.Planned == 4 })

	// The leader stops working, its lease held still; the extractors and loaders finish the job.
	stopA()
	var evs []*sluicev1.JobEvent
	for i := range 4 {
		tid := taskID(job.ID, i)
		evs = append(evs, extracted(job.ID, tid, "r1", 250), loaded(job.ID, tid, "r1", 0, int64(i*250), int64(i*250+249)))
	}
	if err := events.Publish(context.Background(), r.client(t), "events", evs...); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "b to fold the job's end", func() bool { j, _ := b.jobs.Get(job.ID, time.Now()); return j.State == stateSucceeded })
	finished := func() int {
		n := 0
		for _, rec := range r.count(t, "events") {
			if ev, err := events.Decode(rec); err == nil && ev.JobId == job.ID && ev.GetFinished() != nil {
				n++
			}
		}
		return n
	}
	if n := finished(); n != 0 || lb.Leading() {
		t.Fatalf("the follower recorded the end %d times (leading %v)", n, lb.Leading())
	}

	leaveA() // a leaves the group: b leads, and records what it folded
	if la.Leading() {
		t.Fatal("a still leads after it stopped")
	}
	waitUntil(t, "b to lead", lb.Leading)
	waitUntil(t, "b to record the job's end", func() bool { return finished() == 1 })
	if n := len(r.count(t, "tasks")); n != 4 {
		t.Fatalf("%d tasks on the tasks topic, want the job's 4 once", n)
	}
}

func mustPeers(t testing.TB, entries ...string) peers {
	t.Helper()
	ps, err := parsePeers(entries)
	if err != nil {
		t.Fatal(err)
	}
	return ps
}

// writeToFollower sends a write with an admin's token to a follower whose lease is l and whose
// peers are ps, and returns the answer.
func writeToFollower(t *testing.T, l *lease, ps peers) *httptest.ResponseRecorder {
	t.Helper()
	p := &Planner{lease: l, log: slog.New(slog.DiscardHandler), peers: ps}
	h := p.leaderOnly(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
		t.Error("the follower served a write itself")
	}))
	req := httptest.NewRequest(http.MethodPost, "/v1/jobs", nil)
	req.Header.Set("Authorization", "Bearer admin-secret")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// TestFollowerForwardsNoTokenToAForgedLeader: whoever can write the lease topic can name the
// holder's member id (the group's description gives it) beside an address of theirs. The follower
// forwards writes only to its peers (SLUICE_PLANNER_PEERS): the forged address gets nothing, and
// the caller is told to send the write again.
func TestFollowerForwardsNoTokenToAForgedLeader(t *testing.T) {
	c := leaseCluster(t)
	leaderSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusCreated) }))
	t.Cleanup(leaderSrv.Close)
	var mu sync.Mutex
	var stolen []string
	forged := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		stolen = append(stolen, r.Header.Get("Authorization"))
		w.WriteHeader(http.StatusCreated)
	}))
	t.Cleanup(forged.Close)
	a, _ := runLease(t, c, leaderSrv.URL)
	takeOver(t, a)
	b, _ := runLease(t, c, "http://b.example:8080")
	waitUntil(t, "b to know a leads", func() bool { return b.Leader().Known })

	member, gen := a.member.GroupMetadata()
	v, err := json.Marshal(leaderRecord{Address: forged.URL, Member: member, Generation: gen})
	if err != nil {
		t.Fatal(err)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	if err := cl.ProduceSync(context.Background(), &kgo.Record{Topic: "lease", Key: []byte(leaseRecordKey), Value: v}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "b to read the forged record", func() bool { return b.Leader().Address == forged.URL })

	rec := writeToFollower(t, b, mustPeers(t, leaderSrv.URL))
	mu.Lock()
	defer mu.Unlock()
	if len(stolen) > 0 {
		t.Fatalf("the follower sent the caller's token (%q) to an address read from the lease topic", stolen)
	}
	if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") == "" ||
		!strings.Contains(rec.Body.String(), "not among SLUICE_PLANNER_PEERS") {
		t.Fatalf("a write while the lease names a stranger: %d %v %s; want 503 with Retry-After, naming SLUICE_PLANNER_PEERS",
			rec.Code, rec.Header(), rec.Body)
	}
}

// TestFollowerWithoutPeersForwardsNothing: with SLUICE_PLANNER_PEERS empty a follower forwards no
// write, not even to the leader the lease names, and answers 503 with Retry-After, closing the
// connection so that the client's next try may reach the leader.
func TestFollowerWithoutPeersForwardsNothing(t *testing.T) {
	c := leaseCluster(t)
	var forwarded atomic.Int32
	leaderSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		forwarded.Add(1)
		w.WriteHeader(http.StatusCreated)
	}))
	t.Cleanup(leaderSrv.Close)
	a, _ := runLease(t, c, leaderSrv.URL)
	takeOver(t, a)
	b, _ := runLease(t, c, "http://b.example:8080")
	waitUntil(t, "b to know where a leads", func() bool { return b.Leader().Address == leaderSrv.URL })

	rec := writeToFollower(t, b, peers{})
	if forwarded.Load() != 0 {
		t.Fatal("a follower without peers forwarded a write")
	}
	// The connection closes: a client's next try, through a Service, may reach the leader.
	if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") == "" || rec.Header().Get("Connection") != "close" ||
		!strings.Contains(rec.Body.String(), "SLUICE_PLANNER_PEERS is empty") {
		t.Fatalf("a write to a follower without peers: %d %v %s; want 503 with Retry-After", rec.Code, rec.Header(), rec.Body)
	}
}

// lease runs a planner's part in the lease on the rig's cluster, with the brokers' least session
// (a leader in these tests leaves, it does not go silent); leave ends it as a planner that shuts
// down does.
func (r *plannerRig) lease(t *testing.T, advertise string) (l *lease, leave func()) {
	t.Helper()
	kcfg := kafka.Config{Brokers: r.cluster.ListenAddrs(), DialTimeout: time.Second, RequestTimeout: 5 * time.Second}
	l, err := newLease(kcfg, leaseConfig{Group: "lead", Topic: "lease", Advertise: advertise, Session: 6 * time.Second},
		slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = l.Run(ctx); close(done) }()
	var once sync.Once
	leave = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(leave)
	return l, leave
}

// TestTakeOverWaitsForTheJobsTopic: the leader sets a mark on the jobs topic and leaves; the
// follower, whose reader of the jobs topic is behind, leads only once it has folded the mark in,
// so that it does not write from an older mark (nor run a schedule deleted, nor keep a job
// forgotten, just before the lead moved).
func TestTakeOverWaitsForTheJobsTopic(t *testing.T) {
	r := newPlannerRig(t)
	la, leaveA := r.lease(t, "http://a.example:8080")
	a, stopA := r.startWith(t, la)
	waitUntil(t, "a to lead", la.Leading)

	held, release := make(chan struct{}), make(chan struct{})
	var holdOnce, releaseOnce sync.Once
	r.onState = func(rec *kgo.Record) {
		if string(rec.Key) == markPrefix+"users" {
			holdOnce.Do(func() { close(held) })
			<-release
		}
	}
	lb, _ := r.lease(t, "http://b.example:8080")
	b, _ := r.startWith(t, lb)
	r.onState = nil
	t.Cleanup(func() { releaseOnce.Do(func() { close(release) }) })
	waitUntil(t, "b to catch up", func() bool { return b.ready(context.Background()) == nil && lb.Leader().Known })

	if _, err := a.SetMark(context.Background(), "users", "42", "alice"); err != nil {
		t.Fatal(err)
	}
	<-held // b's reader of the jobs topic has the mark, not folded in yet
	stopA()
	leaveA()
	waitUntil(t, "b to gain the lease", func() bool { return lb.Pending() != nil || lb.Leading() })
	// b folded every event already: what it waits for now is the jobs topic alone.
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		if lb.Leading() {
			t.Fatalf("b leads before it folded the jobs topic as it was when it gained the lease (its mark %v)", b.names.mark("users"))
		}
		time.Sleep(10 * time.Millisecond)
	}
	releaseOnce.Do(func() { close(release) })
	waitUntil(t, "b to lead", lb.Leading)
	if m := b.names.mark("users"); m.GetValue() != "42" {
		t.Fatalf("b leads with the mark %v, want the 42 its predecessor set", m)
	}
}

// cancelOver asks planner p, through the API's handler, to cancel job id.
func cancelOver(p *Planner, id string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodPost, "/v1/jobs/"+id+"/cancel", nil)
	req.SetPathValue("id", id)
	rec := httptest.NewRecorder()
	p.cancel(rec, req)
	return rec
}

// finishedEvents counts the job's ends on the events topic.
func (r *plannerRig) finishedEvents(t *testing.T, id string) int {
	t.Helper()
	n := 0
	for _, rec := range r.count(t, r.events) {
		if ev, err := events.Decode(rec); err == nil && ev.JobId == id && ev.GetFinished() != nil {
			n++
		}
	}
	return n
}

// TestCancelAfterTheTermEndedChangesNothing: the term ends between the follower's check that let
// a cancel through and the cancel (a lapse, a revoke): the planner changes nothing, writes
// nothing, and answers 503 with Retry-After, so that the client sends the cancel again to the
// leader.
func TestCancelAfterTheTermEndedChangesNothing(t *testing.T) {
	r := newPlannerRig(t)
	la, _ := r.lease(t, "http://a.example:8080")
	a, _ := r.startWith(t, la)
	waitUntil(t, "a to lead", la.Leading)
	job, _, err := a.Submit(context.Background(), r.spec(t, "users"), "")
	if err != nil {
		t.Fatal(err)
	}
	la.mu.Lock()
	la.end("lapsed")
	la.mu.Unlock()

	rec := cancelOver(a, job.ID)
	if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") == "" {
		t.Fatalf("a cancel after the term ended: %d %v %s; want 503 with Retry-After", rec.Code, rec.Header(), rec.Body)
	}
	if j, _ := a.jobs.Get(job.ID, time.Now()); j.State != stateRunning {
		t.Fatalf("the job is %s here after a cancel that no topic has", j.State)
	}
	if n := r.finishedEvents(t, job.ID); n != 0 {
		t.Fatalf("%d ends of the job on the events topic, want none", n)
	}
}

// TestCancelCaughtByTheTermsEndIsSentAgain: the term lapses while the cancel's end of the job is
// being written, so its state cannot be stored: the answer is 503 with Retry-After (not "the
// planner keeps trying", which a planner that does not lead does not), and the cancel sent again
// to the leader (the same planner, in its next term) ends the job cancelled, its state stored.
func TestCancelCaughtByTheTermsEndIsSentAgain(t *testing.T) {
	r := newPlannerRig(t)
	la, _ := r.lease(t, "http://a.example:8080")
	a, _ := r.startWith(t, la)
	waitUntil(t, "a to lead", la.Leading)
	job, _, err := a.Submit(context.Background(), r.spec(t, "users"), "")
	if err != nil {
		t.Fatal(err)
	}
	// The term lapses as the job's end reaches the broker (a produce names its topic, or the
	// topic's id).
	topics, err := kadm.NewClient(r.client(t)).ListTopics(context.Background(), r.events)
	if err != nil {
		t.Fatal(err)
	}
	eventsID := topics[r.events].ID
	r.cluster.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
		for _, tp := range req.(*kmsg.ProduceRequest).Topics {
			if tp.Topic == r.events || tp.TopicID == eventsID {
				r.cluster.DropControl()
				la.mu.Lock()
				la.end("lapsed")
				la.mu.Unlock()
			}
		}
		return nil, nil, false
	})

	rec := cancelOver(a, job.ID)
	if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") == "" {
		t.Fatalf("a cancel whose term ended under it: %d %v %s; want 503 with Retry-After", rec.Code, rec.Header(), rec.Body)
	}

	waitUntil(t, "a to lead again", la.Leading)
	rec = cancelOver(a, job.ID)
	if rec.Code != http.StatusOK {
		t.Fatalf("the cancel sent again to the leader: %d %s", rec.Code, rec.Body)
	}
	if j, _ := a.jobs.Get(job.ID, time.Now()); j.State != stateCancelled {
		t.Fatalf("the job is %s, want cancelled", j.State)
	}
	stored := false
	for _, rec := range r.count(t, r.jobs) {
		stored = stored || string(rec.Key) == job.ID && len(rec.Value) > 0
	}
	if !stored || r.finishedEvents(t, job.ID) == 0 {
		t.Fatalf("the cancelled job's state stored %v, its end on the events topic %d times", stored, r.finishedEvents(t, job.ID))
	}
}

// TestTermEndFailsAWriteInFlight: a write whose request reached the broker unanswered (the answer
// lost, the broker slow) fails as soon as the term ends: the client neither waits for the answer
// nor sends the request again later, when another planner may lead.
func TestTermEndFailsAWriteInFlight(t *testing.T) {
	r := newPlannerRig(t)
	la, _ := r.lease(t, "http://a.example:8080")
	a, _ := r.startWith(t, la)
	waitUntil(t, "a to lead", la.Leading)

	topics, err := kadm.NewClient(r.client(t)).ListTopics(context.Background(), r.events)
	if err != nil {
		t.Fatal(err)
	}
	eventsID := topics[r.events].ID
	arrived := make(chan struct{})
	var once sync.Once
	r.cluster.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
		for _, tp := range req.(*kmsg.ProduceRequest).Topics {
			if tp.Topic == r.events || tp.TopicID == eventsID {
				once.Do(func() { close(arrived) })
				return nil, nil, true // no answer: the write is in flight
			}
		}
		return nil, nil, false
	})
	done := make(chan error, 1)
	go func() {
		done <- a.publishEvents(context.Background(), &sluicev1.JobEvent{JobId: "j", Producer: "planner",
			Event: &sluicev1.JobEvent_TasksPublished{TasksPublished: &sluicev1.TasksPublished{Tasks: 1}}})
	}()
	<-arrived
	la.mu.Lock()
	la.end("lapsed")
	la.mu.Unlock()
	select {
	case err := <-done:
		if !errors.Is(err, errNotLeader) {
			t.Fatalf("a write in flight as the term ended: %v, want errNotLeader", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a write in flight goes on after its term ended")
	}
}

// TestLeadsOnceItsRecordIsWritten: a planner that gained the lease says it leads (GET /v1/leader,
// planner_leading, writes served) only once its lease record, where the others learn its address,
// is on the topic.
func TestLeadsOnceItsRecordIsWritten(t *testing.T) {
	c := leaseCluster(t)
	a, _ := runLease(t, c, "http://a.example:8080")
	var tm *term
	waitUntil(t, "a to gain the lease", func() bool { tm = a.Pending(); return tm != nil })

	arrived := make(chan struct{})
	var once sync.Once
	c.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		once.Do(func() { close(arrived) })
		return nil, nil, true // no answer: the record is in flight
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Activate(ctx, tm) }()
	<-arrived
	if a.Leading() || a.Leader().Leading {
		t.Fatal("the planner says it leads while its lease record is in flight")
	}
	cancel()
	if err := <-done; err == nil || a.Leading() {
		t.Fatalf("a lease record not written: Activate %v, leading %v", err, a.Leading())
	}
}

// TestLeaveLetsWritesInFlightFinish: a leader that leaves (a SIGTERM) hands the lease over after
// its writes in flight are answered, so that they land before its successor catches up; it starts
// no new one meanwhile.
func TestLeaveLetsWritesInFlightFinish(t *testing.T) {
	r := newPlannerRig(t)
	la, leaveA := r.lease(t, "http://a.example:8080")
	a, _ := r.startWith(t, la)
	waitUntil(t, "a to lead", la.Leading)

	topics, err := kadm.NewClient(r.client(t)).ListTopics(context.Background(), r.events)
	if err != nil {
		t.Fatal(err)
	}
	eventsID := topics[r.events].ID
	arrived, answer := make(chan struct{}), make(chan struct{})
	var once sync.Once
	r.cluster.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
		for _, tp := range req.(*kmsg.ProduceRequest).Topics {
			if tp.Topic == r.events || tp.TopicID == eventsID {
				r.cluster.DropControl()
				once.Do(func() { close(arrived) })
				r.cluster.SleepControl(func() { <-answer }) // the broker answers late
			}
		}
		return nil, nil, false
	})
	done := make(chan error, 1)
	go func() {
		done <- a.publishEvents(context.Background(), &sluicev1.JobEvent{JobId: "j", Producer: "planner",
			Event: &sluicev1.JobEvent_TasksPublished{TasksPublished: &sluicev1.TasksPublished{Tasks: 1}}})
	}()
	<-arrived
	left := make(chan struct{})
	go func() { leaveA(); close(left) }()
	waitUntil(t, "a to stop leading", func() bool { return !la.Leading() })
	if _, _, err := la.Hold(context.Background()); !errors.Is(err, errNotLeader) {
		t.Fatalf("a leader that leaves starts a write: %v", err)
	}
	close(answer)
	if err := <-done; err != nil {
		t.Fatalf("a write in flight as its leader left: %v, want it answered", err)
	}
	<-left
}
