package main

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
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

// TestFollowerForwardsWrites: a follower sends a write to the leader's address with its token, and
// answers 503 with Retry-After when the leader does not answer.
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
	p := &Planner{lease: b, log: slog.New(slog.DiscardHandler)}
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
	kcfg := kafka.Config{Brokers: r.cluster.ListenAddrs(), DialTimeout: time.Second, RequestTimeout: 5 * time.Second}
	newTestLease := func(advertise string) (*lease, func()) {
		// The session the brokers' least: the leader leaves, it does not go silent.
		l, err := newLease(kcfg, leaseConfig{Group: "lead", Topic: "lease", Advertise: advertise, Session: 6 * time.Second},
			slog.New(slog.DiscardHandler), nil)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { _ = l.Run(ctx); close(done) }()
		var once sync.Once
		stop := func() { once.Do(func() { cancel(); <-done }) }
		t.Cleanup(stop)
		return l, stop
	}
	la, leaveA := newTestLease("http://a.example:8080")
	a, stopA := r.startWith(t, la)
	waitUntil(t, "a to lead", la.Leading)
	lb, _ := newTestLease("http://b.example:8080")
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
