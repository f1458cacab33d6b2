package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sluicedata/sluice/pkg/jobspec"
	"github.com/sluicedata/sluice/pkg/source"
	sluicev1 "github.com/sluicedata/sluice/proto/sluice/v1"
)

// Keys of the per-name state on the compacted jobs topic, beside the job ids (which hold no '/').
const (
	markPrefix     = "mark/"
	schedulePrefix = "schedule/"
)

// errRunning is a run of an incremental or scheduled job submitted while another run of it is
// running: two runs would race for the job's mark.
var errRunning = errors.New("a run of this job is still running")

// errScheduleGone is a scheduled run whose schedule was deleted or replaced while it was planned.
var errScheduleGone = errors.New("the schedule was deleted or replaced while its run was planned")

// errLookback is a lookback of another kind than the mark it would go back from.
var errLookback = errors.New("incremental.lookback does not fit the mark")

// errMarkMoved is a run whose job's mark moved while it was planned from the mark before.
var errMarkMoved = errors.New("the job's mark changed while its run was planned; submit again")

// names is the planner's durable state per job name: incremental jobs' marks and the schedules.
type names struct {
	mu        sync.Mutex
	marks     map[string]*sluicev1.Mark
	schedules map[string]*sluicev1.Schedule
	// tried is when a schedule's run was last tried and failed to plan, so that a source that
	// cannot be planned is asked again after a pause rather than at every tick; starting are the
	// names whose scheduled run is being planned.
	tried    map[string]time.Time
	starting map[string]bool
	// planning are those goroutines, which Maintain waits for before it returns.
	planning sync.WaitGroup
	// advancing makes the comparison of a run's cursor with its mark and the mark's write one step.
	advancing sync.Mutex
	// at is the offset of the record each key's value came from: the leader keeps what it wrote,
	// and a record of the key that it reads back, or an older one, does not replace it.
	at map[string]int64
	// checks counts the times the schedules were checked for runs that are due; started the
	// scheduled runs started, failed those that could not be planned. Nil in tests that do not
	// count.
	checks, started, failed prometheus.Counter
}

// count registers the schedules' metrics on reg.
func (n *names) count(reg prometheus.Registerer) {
	f := promauto.With(reg)
	n.checks = f.NewCounter(prometheus.CounterOpts{Name: "planner_schedule_checks_total",
		Help: "Times the planner checked its schedules for runs that are due."})
	runs := f.NewCounterVec(prometheus.CounterOpts{Name: "planner_scheduled_runs_total",
		Help: "Scheduled runs, by outcome: started, or failed to plan (tried again a minute later)."}, []string{"outcome"})
	n.started, n.failed = runs.WithLabelValues("started"), runs.WithLabelValues("failed")
}

func inc(c prometheus.Counter) {
	if c != nil {
		c.Inc()
	}
}

func newNames() *names {
	return &names{marks: map[string]*sluicev1.Mark{}, schedules: map[string]*sluicev1.Schedule{},
		tried: map[string]time.Time{}, starting: map[string]bool{}}
}

// restore folds in one record of the jobs topic, reporting whether it was per-name state.
func (n *names) restore(r *kgo.Record) (bool, error) {
	key := string(r.Key)
	mark, isMark := strings.CutPrefix(key, markPrefix)
	sched, isSchedule := strings.CutPrefix(key, schedulePrefix)
	if !isMark && !isSchedule {
		return false, nil
	}
	var st sluicev1.State
	if err := proto.Unmarshal(r.Value, &st); err != nil {
		return true, err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if at, ok := n.at[key]; ok && r.Offset <= at {
		return true, nil
	}
	if n.at == nil {
		n.at = map[string]int64{}
	}
	n.at[key] = r.Offset
	// A record read again (the leader reads back what it wrote) keeps the value it had: a run
	// being planned tells a changed mark or schedule by identity.
	switch {
	case isMark && st.GetMark() != nil:
		if !proto.Equal(n.marks[mark], st.GetMark()) {
			n.marks[mark] = st.GetMark()
		}
	case isMark:
		delete(n.marks, mark)
	case st.GetSchedule() != nil:
		if !proto.Equal(n.schedules[sched], st.GetSchedule()) {
			n.schedules[sched] = st.GetSchedule()
		}
	default:
		delete(n.schedules, sched)
	}
	return true, nil
}

// scheduleList returns the schedules, taken under the lock.
func (n *names) scheduleList() []*sluicev1.Schedule {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]*sluicev1.Schedule, 0, len(n.schedules))
	for _, s := range n.schedules {
		out = append(out, s)
	}
	return out
}

func (n *names) mark(name string) *sluicev1.Mark {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.marks[name]
}

// put writes per-name state to the jobs topic (nil: deletes it) and then keeps it.
func (p *Planner) put(ctx context.Context, key string, st *sluicev1.State) error {
	rec := &kgo.Record{Topic: p.topics.jobs, Key: []byte(key)}
	if st != nil {
		v, err := proto.Marshal(st)
		if err != nil {
			return err
		}
		rec.Value = v
	}
	if err := p.produce(ctx, rec); err != nil {
		return fmt.Errorf("store %s: %w", key, err)
	}
	// rec holds its offset now: the same record read back from the topic changes nothing.
	if st == nil {
		rec.Value = []byte{}
	}
	_, err := p.names.restore(rec)
	return err
}

// advanceMarks moves each incremental job's mark to the largest cursor of its runs that
// succeeded, every record of them loaded or dead-lettered. A mark never goes back (PUT
// /v1/marks/{name} moves it by hand), and a run that failed leaves it where it was.
func (p *Planner) advanceMarks(ctx context.Context) error {
	p.names.advancing.Lock()
	defer p.names.advancing.Unlock()
	return p.advance(ctx)
}

// advance is advanceMarks; the caller holds names.advancing.
func (p *Planner) advance(ctx context.Context) error {
	var done []string
	defer func() { p.jobs.MarksChecked(done) }()
	for _, j := range p.jobs.Advancing() {
		cur := p.names.mark(j.Name)
		// The extractors left out the values their rule rejects; this is the same rule, for a run
		// whose extractors did not apply it (tasks planned or extracted before they did).
		reason := p.cursorRule(source.RunKind(cur.GetValue(), j.Since, "")).Check(j.MaxCursor, p.now())
		switch {
		case cur.GetSetBy() != "" && j.CreatedAt.Before(cur.GetAt().AsTime()):
			// Set by hand after the run began: it replaces what the run read.
		case reason != "":
			p.jobs.RefuseCursor(j.ID, reason)
			p.log.Warn("a run's largest cursor cannot become its job's mark; the mark stays", "name", j.Name, "job", j.ID,
				"cursor", j.MaxCursor, "reason", reason, "mark", cur.GetValue())
		case cur.GetValue() == "" || source.CompareCursors(j.MaxCursor, cur.Value) > 0:
			m := &sluicev1.Mark{Name: j.Name, Value: j.MaxCursor, JobId: j.ID, At: timestamppb.New(p.now())}
			if err := p.put(ctx, markPrefix+j.Name, &sluicev1.State{Kind: &sluicev1.State_Mark{Mark: m}}); err != nil {
				return err
			}
			p.log.Info("mark advanced", "name", j.Name, "mark", j.MaxCursor, "job", j.ID)
		}
		done = append(done, j.ID)
	}
	return nil
}

// cursorRule is what a cursor of kind must be to count towards a mark; the extractors apply it to
// every record's, the planner to a run's largest and to a mark set by hand.
func (p *Planner) cursorRule(kind string) source.CursorRule {
	return source.CursorRule{Kind: kind, MaxSkew: p.cfg.MarkMaxSkew}
}

// overlaps is errRunning when spec is an incremental or scheduled job one of whose runs is running:
// such runs come one after another, each from the mark the runs before it left.
func (p *Planner) overlaps(spec *jobspec.Spec) error {
	oneAtATime := spec.Incremental != (jobspec.Incremental{}) || spec.Schedule != (jobspec.Schedule{})
	if oneAtATime && p.jobs.Running(spec.Name) {
		return fmt.Errorf("%w: %s (runs of an incremental or scheduled job never overlap)", errRunning, spec.Name)
	}
	return nil
}

// incremental sets where the next run of an incremental job starts, and the rule its cursors must
// keep, in in; it returns the mark it went from, which must still be the job's when the run is
// planned.
func (p *Planner) incremental(spec *jobspec.Spec, in *sluicev1.Incremental) (*sluicev1.Mark, error) {
	m := p.names.mark(spec.Name)
	since, err := source.Since(m.GetValue(), spec.Incremental.InitialValue, spec.Incremental.Lookback)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errLookback, err)
	}
	in.Since = since
	in.Kind = source.RunKind(m.GetValue(), spec.Incremental.InitialValue, spec.Incremental.Lookback)
	if p.cfg.MarkMaxSkew > 0 {
		in.MaxSkew = durationpb.New(p.cfg.MarkMaxSkew)
	}
	return m, nil
}

// setSchedule keeps the spec's schedule, or deletes the name's when the spec has none. It holds
// submitMu, so that a scheduled run being planned sees the change before it goes out.
func (p *Planner) setSchedule(ctx context.Context, spec *jobspec.Spec) error {
	p.submitMu.Lock()
	defer p.submitMu.Unlock()
	if spec.Schedule == (jobspec.Schedule{}) {
		_, err := p.unschedule(ctx, spec.Name)
		return err
	}
	s := &sluicev1.Schedule{Name: spec.Name, Spec: spec.JSON(), CreatedAt: timestamppb.New(p.now())}
	p.log.Info("schedule kept", "name", spec.Name, "every", spec.Schedule.Every)
	return p.put(ctx, schedulePrefix+spec.Name, &sluicev1.State{Kind: &sluicev1.State_Schedule{Schedule: s}})
}

// deleteSchedule removes a name's schedule, reporting whether it had one.
func (p *Planner) deleteSchedule(ctx context.Context, name string) (bool, error) {
	p.submitMu.Lock()
	defer p.submitMu.Unlock()
	return p.unschedule(ctx, name)
}

// unschedule removes a name's schedule when it has one; the caller holds submitMu.
func (p *Planner) unschedule(ctx context.Context, name string) (bool, error) {
	p.names.mu.Lock()
	_, had := p.names.schedules[name]
	p.names.mu.Unlock()
	if !had {
		return false, nil
	}
	p.log.Info("schedule removed", "name", name)
	return true, p.put(ctx, schedulePrefix+name, nil)
}

// ScheduleView is a schedule as the API shows it.
type ScheduleView struct {
	Name    string     `json:"name"`
	Every   string     `json:"every"`
	LastRun string     `json:"last_run,omitempty"`
	NextAt  *time.Time `json:"next_at,omitempty"`
	Mark    string     `json:"mark,omitempty"`
}

// schedules returns the schedules with what is due when.
func (p *Planner) schedules() []ScheduleView {
	list := p.names.scheduleList()
	out := make([]ScheduleView, 0, len(list))
	for _, s := range list {
		spec, err := jobspec.Parse(s.Spec)
		if err != nil {
			continue
		}
		v := ScheduleView{Name: s.Name, Every: spec.Schedule.Every}
		if m := p.names.mark(s.Name); m != nil {
			v.Mark = m.Value
		}
		if due, last, ok := p.due(spec); ok {
			v.NextAt = &due
			v.LastRun = last
		}
		out = append(out, v)
	}
	return out
}

// due is when a scheduled job's next run starts, and its last run: every interval after the last
// run started, and not before it ended; false while a run is running.
func (p *Planner) due(spec *jobspec.Spec) (time.Time, string, bool) {
	every, _ := time.ParseDuration(spec.Schedule.Every)
	last, ok := p.jobs.Latest(spec.Name)
	switch {
	case !ok:
		return p.now(), "", true
	case last.State == stateRunning:
		return time.Time{}, last.ID, false
	}
	return last.CreatedAt.Add(every), last.ID, true
}

// runSchedules starts the runs that are due, one per job at a time, each planned in a goroutine
// of its own so that a slow source holds up no other job's upkeep.
func (p *Planner) runSchedules(ctx context.Context) {
	now := p.now()
	for _, s := range p.names.scheduleList() {
		spec, err := jobspec.Parse(s.Spec)
		if err != nil {
			p.log.Error("skip a schedule whose spec does not parse", "name", s.Name, "error", err)
			continue
		}
		due, _, ok := p.due(spec)
		p.names.mu.Lock()
		tried, starting := p.names.tried[s.Name], p.names.starting[s.Name]
		if ok && !starting && !now.Before(due) && now.Sub(tried) >= time.Minute {
			p.names.starting[s.Name] = true
		} else {
			ok = false
		}
		p.names.mu.Unlock()
		if !ok {
			continue
		}
		// One key per schedule and due time: a run that was planned but not acknowledged is not
		// planned twice, and a schedule replaced since starts afresh.
		key := fmt.Sprintf("%s%s@%d@%d", schedulePrefix, s.Name, s.GetCreatedAt().AsTime().UnixNano(), due.Unix())
		still := func() bool {
			p.names.mu.Lock()
			defer p.names.mu.Unlock()
			return p.names.schedules[s.Name] == s
		}
		p.names.planning.Go(func() {
			j, _, err := p.plan(ctx, spec, key, still)
			p.names.mu.Lock()
			delete(p.names.starting, s.Name)
			if err != nil {
				p.names.tried[s.Name] = now
			}
			p.names.mu.Unlock()
			switch {
			case errors.Is(err, errRunning), errors.Is(err, errScheduleGone), ctx.Err() != nil:
			case err != nil:
				inc(p.names.failed)
				p.log.Warn("a scheduled run could not start; trying again in a minute", "name", s.Name, "error", err)
			default:
				inc(p.names.started)
				p.log.Info("scheduled run started", "name", s.Name, "job", j.ID)
			}
		})
	}
	inc(p.names.checks)
}
