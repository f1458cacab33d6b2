package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httputil"
	"net/url"
	"time"
)

// Lead takes over whenever this planner gains the lease: it waits until the events written before
// are folded in (those its predecessor wrote until it stopped included), then starts to write, and
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

// takeOver catches up with the events and activates term t.
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
	// The events on the topic now, read after the lease was gained: everything the planner before
	// wrote while it led.
	if err := p.readWritten(ctx); err != nil {
		return err
	}
	if err := p.lease.Activate(ctx, t); err != nil {
		return err
	}
	p.publishUnended(ctx)
	return nil
}

// forwardedHeader marks a write one planner forwarded to the leader: it is not forwarded again.
const forwardedHeader = "Sluice-Forwarded"

// leaderOnly serves a write on the leader. A follower forwards it to the leader's advertised
// address, or answers 503 with Retry-After when it knows of none (no planner leads at the moment,
// or the leader did not advertise where it serves).
func (p *Planner) leaderOnly(h http.Handler) http.Handler {
	if p.lease == nil {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p.lease.Leading() {
			h.ServeHTTP(w, r)
			return
		}
		v := p.lease.Leader()
		switch {
		case !v.Known:
			retryLater(w, errors.New("no planner leads at the moment (a planner is taking over); send the write again shortly"))
		case r.Header.Get(forwardedHeader) != "":
			retryLater(w, errors.New("this planner does not lead (the lead moved while the write was forwarded); send it again"))
		case v.Address == "":
			retryLater(w, errors.New("this planner does not lead, and the leader advertises no address (SLUICE_PLANNER_ADVERTISE): send writes to the leader"))
		default:
			p.forward(w, r, v.Address)
		}
	})
}

// forward sends the request, its token with it, to the leader at addr and relays the answer; a
// leader that does not answer is a 503 with Retry-After.
func (p *Planner) forward(w http.ResponseWriter, r *http.Request, addr string) {
	target, err := url.Parse(addr)
	if err != nil || (target.Scheme != "http" && target.Scheme != "https") || target.Host == "" {
		retryLater(w, fmt.Errorf("the leader advertises %q, which is no http(s) address", addr))
		return
	}
	proxy := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.Host = target.Host
			pr.Out.Header.Set(forwardedHeader, "1")
		},
		ErrorHandler: func(w http.ResponseWriter, _ *http.Request, err error) {
			retryLater(w, fmt.Errorf("the leader at %s did not answer (it may be stopping; another planner takes over): %v", addr, err))
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
