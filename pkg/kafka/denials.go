package kafka

import (
	"context"
	"sync"
	"time"
)

// denialWindow is how long a refusal keeps readiness failing after the brokers last said it: a
// member retries its fetches every second or so while it lasts.
const denialWindow = 30 * time.Second

// Denials remembers the brokers' last refusal of this client (an ACL missing, credentials refused), so
// that readiness fails with what to fix instead of a member that only retries and logs.
type Denials struct {
	cfg Config
	now func() time.Time

	mu   sync.Mutex
	last error
	at   time.Time
}

// NewDenials watches the refusals of a client configured by cfg.
func NewDenials(cfg Config) *Denials { return &Denials{cfg: cfg, now: time.Now} }

// Observe takes an error of a fetch, a group or a produce; it reports whether it was a refusal.
func (d *Denials) Observe(err error) bool {
	refused := d.cfg.Refusal(err)
	if refused == nil {
		return false
	}
	d.mu.Lock()
	d.last, d.at = refused, d.now()
	d.mu.Unlock()
	return true
}

// Ready fails while the brokers refused this client in the last 30 seconds.
func (d *Denials) Ready(context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.last != nil && d.now().Sub(d.at) < denialWindow {
		return d.last
	}
	return nil
}
