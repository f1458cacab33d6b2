package main

import (
	"context"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"golang.org/x/time/rate"

	"github.com/sluicedata/sluice/pkg/pipeline"
)

// A job's rate_limit is for the whole extractor group and one source host: each member takes its
// share, the limit divided by the members the group has now. A member slows down when the source
// says so (429, a 503 with Retry-After, RateLimit-Remaining 0) and recovers gradually.
const (
	// membersEvery is how often a member counts the group's members (and at every rebalance).
	membersEvery = 5 * time.Second
	// recoverEvery is how long a member waits after a throttle before each step back up.
	recoverEvery = 5 * time.Second
	// recoverStep is the share of the full rate each step gives back.
	recoverStep = 0.1
	// minFactor is as far as throttles slow a member down.
	minFactor = 1.0 / 32
)

// pacer is one source host's rate limit on this member.
type pacer struct {
	mu      sync.Mutex
	limiter *rate.Limiter
	group   float64 // requests per second for the whole group
	members int
	// factor is 1, halved by each throttle, recovering by recoverStep every recoverEvery.
	factor    float64
	throttled time.Time
	until     time.Time // no request before this (Retry-After, RateLimit-Reset)
	used      time.Time // last asked for, guarded by the pacers' mu
}

func newPacer(group float64, members int) *pacer {
	p := &pacer{group: group, members: max(members, 1), factor: 1}
	p.limiter = rate.NewLimiter(rate.Limit(p.share()), 1)
	return p
}

// share is this member's requests per second now. The caller holds mu.
func (p *pacer) share() float64 { return p.group * p.factor / float64(p.members) }

// recover steps the factor back up for the time since the last throttle. The caller holds mu.
func (p *pacer) recover(now time.Time) {
	if p.factor >= 1 {
		return
	}
	if steps := int(now.Sub(p.throttled) / recoverEvery); steps > 0 {
		p.factor = min(1, p.factor+float64(steps)*recoverStep)
		p.throttled = p.throttled.Add(time.Duration(steps) * recoverEvery)
		p.limiter.SetLimitAt(now, rate.Limit(p.share()))
	}
}

// allow takes a request now if the pace allows it.
func (p *pacer) allow(now time.Time) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.recover(now)
	return !now.Before(p.until) && p.limiter.AllowN(now, 1)
}

// wait blocks until a request may go.
func (p *pacer) wait(ctx context.Context) error {
	for {
		p.mu.Lock()
		now := time.Now()
		p.recover(now)
		until := p.until
		p.mu.Unlock()
		if now.Before(until) {
			if !pipeline.Sleep(ctx, until.Sub(now)) {
				return ctx.Err()
			}
			continue
		}
		if err := p.limiter.Wait(ctx); err != nil {
			return err
		}
		p.mu.Lock()
		held := time.Now().Before(p.until) // a Retry-After came while this request waited
		p.mu.Unlock()
		if !held {
			return nil
		}
	}
}

// setMembers takes the group's member count.
func (p *pacer) setMembers(n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if n = max(n, 1); n != p.members {
		p.members = n
		p.limiter.SetLimit(rate.Limit(p.share()))
	}
}

// observe reads what a response says of the pace: a 429, or a 503 with Retry-After, halves it
// and holds requests for the wait asked; RateLimit-Remaining 0 holds them until RateLimit-Reset.
// It reports whether the answer was a throttle.
func (p *pacer) observe(now time.Time, status int, h http.Header) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	retryAfter := seconds(h.Get("Retry-After"))
	throttle := status == http.StatusTooManyRequests || (status == http.StatusServiceUnavailable && retryAfter > 0)
	if throttle {
		// One halving per recovery step: the answers to requests already in flight, and their
		// retries, say the same thing again.
		if p.throttled.IsZero() || now.Sub(p.throttled) >= recoverEvery {
			p.factor = max(p.factor/2, minFactor)
			p.throttled = now
			p.limiter.SetLimitAt(now, rate.Limit(p.share()))
		}
		p.until = later(p.until, now.Add(retryAfter))
	}
	if h.Get("RateLimit-Remaining") == "0" {
		p.until = later(p.until, now.Add(seconds(h.Get("RateLimit-Reset"))))
	}
	return throttle
}

func (p *pacer) perSecond() float64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.share()
}

// seconds reads a header of delay-seconds; 0 when it is not one.
func seconds(v string) time.Duration {
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return 0
	}
	return time.Duration(min(n, 3600)) * time.Second
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// pacers are this member's pacers, by host and group rate.
type pacers struct {
	mu      sync.Mutex
	byKey   map[pacerKey]*pacer
	members int
}

type pacerKey struct {
	host string
	rate float64
}

func newPacers() *pacers { return &pacers{byKey: map[pacerKey]*pacer{}, members: 1} }

func (ps *pacers) get(host string, group float64) *pacer {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	k := pacerKey{host, group}
	p := ps.byKey[k]
	if p == nil {
		p = newPacer(group, ps.members)
		ps.byKey[k] = p
	}
	p.used = time.Now()
	return p
}

// idleAfter is how long a pacer unused is kept.
const idleAfter = 10 * time.Minute

// sweep drops the pacers not asked for since idleAfter and returns the hosts left without any.
func (ps *pacers) sweep(now time.Time) []string {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	gone := map[string]bool{}
	for k, p := range ps.byKey {
		p.mu.Lock()
		holding := now.Before(p.until) // a Retry-After still runs: it stays
		p.mu.Unlock()
		if now.Sub(p.used) > idleAfter && !holding {
			delete(ps.byKey, k)
			gone[k.host] = true
		}
	}
	for k := range ps.byKey {
		delete(gone, k.host)
	}
	var out []string
	for h := range gone {
		out = append(out, h)
	}
	return out
}

// forHost returns the pacers of host.
func (ps *pacers) forHost(host string) []*pacer {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	var out []*pacer
	for k, p := range ps.byKey {
		if k.host == host {
			out = append(out, p)
		}
	}
	return out
}

func (ps *pacers) setMembers(n int) {
	ps.mu.Lock()
	ps.members = max(n, 1)
	all := make([]*pacer, 0, len(ps.byKey))
	for _, p := range ps.byKey {
		all = append(all, p)
	}
	ps.mu.Unlock()
	for _, p := range all {
		p.setMembers(n)
	}
}

// countMembers keeps the pacers' member count, every membersEvery and whenever kick fires.
func (x *Extractor) countMembers(ctx context.Context, kick <-chan struct{}) error {
	adm := kadm.NewClient(x.cl)
	t := time.NewTicker(membersEvery)
	defer t.Stop()
	for {
		for _, host := range x.pacers.sweep(time.Now()) { // their series go with them
			x.metrics.ratePerSecond.DeleteLabelValues(host)
			x.metrics.throttles.DeleteLabelValues(host)
		}
		if groups, err := adm.DescribeGroups(ctx, x.cfg.Group); err == nil {
			if g, ok := groups[x.cfg.Group]; ok && g.Err == nil && len(g.Members) > 0 {
				x.pacers.setMembers(len(g.Members))
				x.metrics.members.Set(float64(len(g.Members)))
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-kick:
		}
	}
}
