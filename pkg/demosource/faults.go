package demosource

import (
	"sync"
	"time"
)

// golden is 2^64 divided by the golden ratio, the increment of splitmix64.
const golden = 0x9e3779b97f4a7c15

// mix is splitmix64's finalizer: a fast hash whose output bits all depend on every input bit.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// Salts keep the draws for one request independent of each other.
const (
	salt429 uint64 = iota + 1
	salt5xx
	saltStatus
	saltSlow
	saltTruncated
)

// pageKey identifies a page whichever way it was asked for: page p of size l is offset (p-1)*l.
type pageKey struct {
	offset, limit int64
}

// draw returns a number in [0, 1) that depends only on the seed, the page, the attempt and salt.
func draw(seed uint64, key pageKey, attempt uint64, salt uint64) float64 {
	h := mix(seed + golden)
	h = mix(h ^ uint64(key.offset))
	h = mix(h ^ uint64(key.limit))
	h = mix(h ^ attempt ^ salt<<56)
	return float64(h>>11) * 0x1p-53
}

// faultKind is what the source does with one request.
type faultKind int

const (
	faultNone faultKind = iota
	faultEarly
	faultFailRange
	fault429
	fault5xx
)

// fault is the decision for one request. slow and truncated apply to a page that is served.
type fault struct {
	kind       faultKind
	status     int
	retryAfter time.Duration // sent as Retry-After when positive
	slow       bool
	truncated  bool
}

// pageState is what the source remembers of a page key between requests.
type pageState struct {
	servedWhole bool      // the page was served whole at least once
	attempts    uint64    // requests that drew faults, early requests excluded
	burst       int       // server errors still owed from the last 5xx draw
	notBefore   time.Time // the page must not be asked for again before this
}

// faults decides, deterministically per page and attempt, which fault a request gets.
type faults struct {
	cfg    Config
	ranges []indexRange

	mu    sync.Mutex
	pages map[pageKey]*pageState
}

// decide returns the fault for a request for key at now; end is the end of the records the page
// holds, so that pages past the last record never hit a fail range.
func (f *faults) decide(key pageKey, end int64, now time.Time) fault {
	f.mu.Lock()
	defer f.mu.Unlock()
	st := f.pages[key]
	if st == nil {
		st = &pageState{}
		f.pages[key] = st
	}
	if now.Before(st.notBefore) {
		return fault{kind: faultEarly, status: 429, retryAfter: st.notBefore.Sub(now)}
	}
	attempt := st.attempts
	st.attempts++
	if f.inFailRange(key.offset, end) {
		return fault{kind: faultFailRange, status: 500}
	}
	if draw(f.cfg.Seed, key, attempt, salt429) < f.cfg.Rate429 {
		st.notBefore = now.Add(f.cfg.RetryAfter)
		return fault{kind: fault429, status: 429, retryAfter: f.cfg.RetryAfter}
	}
	if st.burst == 0 && draw(f.cfg.Seed, key, attempt, salt5xx) < f.cfg.Rate5xx {
		st.burst = f.cfg.Burst5xx
	}
	if st.burst > 0 {
		st.burst--
		status := [3]int{500, 502, 503}[int(draw(f.cfg.Seed, key, attempt, saltStatus)*3)]
		if status != 503 {
			return fault{kind: fault5xx, status: status}
		}
		st.notBefore = now.Add(f.cfg.RetryAfter)
		return fault{kind: fault5xx, status: status, retryAfter: f.cfg.RetryAfter}
	}
	return fault{
		slow:      draw(f.cfg.Seed, key, attempt, saltSlow) < f.cfg.RateSlow,
		truncated: draw(f.cfg.Seed, key, attempt, saltTruncated) < f.cfg.RateTruncated,
	}
}

// inFailRange reports whether records [start, end) overlap a fail range.
func (f *faults) inFailRange(start, end int64) bool {
	for _, r := range f.ranges {
		if start <= r.last && end > r.first && end > start {
			return true
		}
	}
	return false
}

// retryAfterSeconds is d in whole seconds for a Retry-After header: rounded up, at least 1.
func retryAfterSeconds(d time.Duration) int64 {
	return max(1, int64((d+time.Second-1)/time.Second))
}

// served records that the page of key was served whole, and reports whether it was before.
func (f *faults) served(key pageKey) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	st := f.pages[key]
	if st == nil {
		st = &pageState{}
		f.pages[key] = st
	}
	again := st.servedWhole
	st.servedWhole = true
	return again
}
