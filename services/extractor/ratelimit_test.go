package main

import (
	"math"
	"net/http"
	"testing"
	"time"
)

// TestPacer: a member's share is the group's rate over its members; a 429 halves it and holds
// requests for its Retry-After, RateLimit-Remaining 0 holds them until the reset, and the share
// comes back step by step.
func TestPacer(t *testing.T) {
	p := newPacer(30, 1)
	near := func(what string, got, want float64) {
		t.Helper()
		if math.Abs(got-want) > 1e-9 {
			t.Fatalf("%s: %v requests/s, want %v", what, got, want)
		}
	}
	near("alone", p.perSecond(), 30)
	p.setMembers(3)
	near("one of three", p.perSecond(), 10)

	now := time.Now()
	h := http.Header{"Retry-After": {"2"}}
	if !p.observe(now, http.StatusTooManyRequests, h) {
		t.Fatal("a 429 was no throttle")
	}
	near("after a 429", p.perSecond(), 5)
	if p.allow(now.Add(time.Second)) {
		t.Fatal("a request went before the Retry-After")
	}
	p.observe(now.Add(time.Second), http.StatusTooManyRequests, http.Header{})
	near("a second 429 at once: the same news", p.perSecond(), 5)
	p.observe(now.Add(recoverEvery), http.StatusTooManyRequests, http.Header{})
	near("after two", p.perSecond(), 2.5)
	now = now.Add(recoverEvery)
	if p.observe(now, http.StatusServiceUnavailable, http.Header{}) {
		t.Fatal("a 503 without Retry-After counted as a throttle")
	}
	p.mu.Lock()
	p.recover(now.Add(2*recoverEvery + time.Millisecond))
	p.mu.Unlock()
	near("two steps back up", p.perSecond(), 10*(0.25+2*recoverStep))
	p.mu.Lock()
	p.recover(now.Add(20 * recoverEvery))
	p.mu.Unlock()
	near("recovered", p.perSecond(), 10)

	later := now.Add(time.Hour)
	h = http.Header{}
	h.Set("RateLimit-Remaining", "0") // canonical, as net/http gives response headers
	h.Set("RateLimit-Reset", "3")
	p.observe(later, http.StatusOK, h)
	if p.allow(later.Add(2 * time.Second)) {
		t.Fatal("a request went before RateLimit-Reset")
	}
	if !p.allow(later.Add(3 * time.Second)) {
		t.Fatal("no request after RateLimit-Reset")
	}
}
