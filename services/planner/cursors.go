package main

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/sluicedata/sluice/pkg/source"
	sluicev1 "github.com/sluicedata/sluice/proto/sluice/v1"
)

// The cursor values of incremental runs that cannot count towards a job's mark: counted per job
// and in a metric.

// CursorRejected counts an incremental run's cursor values by why they could not count: not of
// the cursor's kind (or neither a time nor a number), or a time past the clock plus
// SLUICE_PLANNER_MARK_MAX_SKEW.
type CursorRejected struct {
	Unparseable uint64 `json:"unparseable"`
	Future      uint64 `json:"future"`
}

func (c *CursorRejected) add(o *sluicev1.CursorRejected) {
	c.Unparseable += o.GetUnparseable()
	c.Future += o.GetFuture()
}

func (c CursorRejected) proto() *sluicev1.CursorRejected {
	if c == (CursorRejected{}) {
		return nil
	}
	return &sluicev1.CursorRejected{Unparseable: c.Unparseable, Future: c.Future}
}

// count registers the jobs' metrics on reg.
func (js *Jobs) count(reg prometheus.Registerer) {
	js.rejected = promauto.With(reg).NewCounterVec(prometheus.CounterOpts{Name: "planner_cursor_values_rejected_total",
		Help: "Cursor values of incremental runs that could not count towards the job's mark, by reason: unparseable (not of the cursor's kind) or future (past the clock plus SLUICE_PLANNER_MARK_MAX_SKEW)."},
		[]string{"reason"})
	for _, reason := range []string{source.RejectUnparseable, source.RejectFuture} {
		js.rejected.WithLabelValues(reason)
	}
}

// Live starts counting the reports folded in from now on.
func (js *Jobs) Live() {
	js.mu.Lock()
	defer js.mu.Unlock()
	js.live = true
}

// countRejected adds to the metric; the caller holds the lock.
func (js *Jobs) countRejected(c *sluicev1.CursorRejected) {
	if js.rejected == nil || !js.live {
		return
	}
	if n := c.GetUnparseable(); n > 0 {
		js.rejected.WithLabelValues(source.RejectUnparseable).Add(float64(n))
	}
	if n := c.GetFuture(); n > 0 {
		js.rejected.WithLabelValues(source.RejectFuture).Add(float64(n))
	}
}

// RefuseCursor records that the run id's largest cursor cannot become its mark, for reason (a
// source.Reject…): it is counted among the rejected values and is the run's largest no more, and
// the job's state is stored again so that a planner that restarts does not weigh it again.
func (js *Jobs) RefuseCursor(id, reason string) {
	js.mu.Lock()
	defer js.mu.Unlock()
	j := js.jobs[id]
	if j == nil {
		return
	}
	var c sluicev1.CursorRejected
	switch reason {
	case source.RejectUnparseable:
		c.Unparseable = 1
	case source.RejectFuture:
		c.Future = 1
	}
	j.CursorRejected.add(&c)
	js.countRejected(&c)
	j.MaxCursor, j.stored = "", false
}
