package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httputil"
	"net/url"
	"time"

	"github.com/sluicedata/sluice/pkg/kafka"
)

// Lead takes over whenever this planner gains the lease: it waits until the events and the records
// of the jobs topic written before are folded in (those its predecessor wrote until it stopped
// included: ends, marks, schedules, tombstones), then starts to write, and
// publishes the ends of jobs it folded that nobody recorded. Until then the term writes nothing.
func (p *Planner) Lead(ctx context.Context) error {
	if p.lease == nil {
		return nil
	}
	for {
		changed := p.lease.Changed()
		if t := p.lease.Pending(); t != nil {
			if err := p.takeOver(ctx, t); err != nil && ctx.Err() == nil {
				p.log.Warn("take over the lead; trying again", "error", err)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		case <-time.After(time.Second): // a take-over that failed is tried again
		}
	}
}

// takeOver catches up with the events and the jobs topic, and activates term t.
func (p *Planner) takeOver(ctx context.Context, t *term) error {
	for !p.caughtUp.Load() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.ctx.Done():
			return errNotLeader
		case <-time.After(50 * time.Millisecond):
		}
	}
	// The events and the jobs topic's records (marks, schedules, final states, tombstones) there
	// now, read after the lease was gained: everything the planner before wrote while it led.
	if err := p.readWritten(ctx); err != nil {
		return err
	}
	if err := p.readStates(ctx); err != nil {
		return err
	}
	if err := p.lease.Activate(ctx, t); err != nil {
		return err
	}
	p.publishUnended(ctx)
	return nil
}

// errStatesBehind is a take-over that has not folded in the jobs topic as it was at the take-over.
var errStatesBehind = errors.New("the planner is still reading the jobs topic written before it took the lead over")

// readStates waits, ctx allowing, until every record on the jobs topic now is folded in.
func (p *Planner) readStates(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	ends, err := kafka.ToRead(ctx, p.cl, p.topics.jobs)
	if err == nil {
		err = p.statesFolded.wait(ctx, ends)
	}
	if err != nil {
		return fmt.Errorf("%w (%w)", errStatesBehind, err)
	}
	return nil
}

// forwardedHeader marks a write one planner forwarded to the leader: it is not forwarded again.
const forwardedHeader = "Sluice-Forwarded"

// leaderOnly serves a write on the leader. A follower forwards it, the caller's token with it, to
// the leader's address only when that address is among its peers (SLUICE_PLANNER_PEERS): the
// address comes from the lease topic, and a record there proves nothing. Otherwise it answers 503
// with Retry-After (no planner leads at the moment, forwarding is off, the leader's address is not
// a peer's), and the client sends the write again, through a Service in front of both planners
// perhaps to the leader.
func (p *Planner) leaderOnly(h http.Handler) http.Handler {
	if p.lease == nil {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p.lease.Leading() {
			h.ServeHTTP(w, r)
			return
		}
		target, err := p.forwardTo(r)
		if err != nil {
			// The client's next try, on a new connection, may reach the leader through a Service
			// in front of both planners.
			w.Header().Set("Connection", "close")
			retryLater(w, err)
			return
		}
		p.forward(w, r, target)
	})
}

// forwardTo returns where a follower forwards write r: the leader's address, if it is a peer's.
func (p *Planner) forwardTo(r *http.Request) (*url.URL, error) {
	v := p.lease.Leader()
	switch {
	case !v.Known:
		return nil, errors.New("no planner leads at the moment (a planner is taking over); send the write again shortly")
	case r.Header.Get(forwardedHeader) != "":
		return nil, errors.New("this planner does not lead (the lead moved while the write was forwarded); send it again")
	case p.peers.none():
		return nil, errors.New("this planner does not lead, and forwards no writes (SLUICE_PLANNER_PEERS is empty); send the write again, to the leader")
	case v.Address == "":
		return nil, errors.New("this planner does not lead, and the leader advertises no address (SLUICE_PLANNER_ADVERTISE); send the write again, to the leader")
	}
	target, err := url.Parse(v.Address)
	if err != nil || !p.peers.allows(target) {
		p.log.Warn("a write not forwarded: the leader's address on the lease topic is not among SLUICE_PLANNER_PEERS", "address", v.Address)
		return nil, errors.New("this planner does not lead, and the leader's address is not among SLUICE_PLANNER_PEERS, where alone it forwards writes; send the write again, to the leader")
	}
	return target, nil
}

// forward sends the request, its token with it, to the leader at target, a peer's address, and
// relays the answer; a leader that does not answer is a 503 with Retry-After.
func (p *Planner) forward(w http.ResponseWriter, r *http.Request, target *url.URL) {
	proxy := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.Host = target.Host
			pr.Out.Header.Set(forwardedHeader, "1")
		},
		ErrorHandler: func(w http.ResponseWriter, _ *http.Request, err error) {
			retryLater(w, fmt.Errorf("the leader at %s did not answer (it may be stopping; another planner takes over): %v", target.Redacted(), err))
		},
	}
	proxy.ServeHTTP(w, r)
}

// leader serves who leads, as this planner sees it.
func (p *Planner) leader(w http.ResponseWriter, _ *http.Request) {
	if p.lease == nil {
		writeJSON(w, http.StatusOK, leaderView{Leading: true, Known: true})
		return
	}
	writeJSON(w, http.StatusOK, p.lease.Leader())
}
