package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sluicedata/sluice/pkg/jobspec"
	"github.com/sluicedata/sluice/pkg/source"
	sluicev1 "github.com/sluicedata/sluice/proto/sluice/v1"
)

// maxMarkBytes bounds the body of PUT /v1/marks/{name}.
const maxMarkBytes = 4 << 10

// errBadMark is a mark set by hand that no run could go on from.
var errBadMark = errors.New("invalid mark")

// MarkView is a job's mark as the API shows it.
type MarkView struct {
	Name string `json:"name"`
	// Value is null once the mark was reset: the next run starts from the job's initial value.
	Value *string `json:"value"`
	// Kind is time or number, as the value is written.
	Kind  string    `json:"kind,omitempty"`
	SetAt time.Time `json:"set_at"`
	// JobID is the run that set it; SetBy who set it by hand.
	JobID string `json:"job_id,omitempty"`
	SetBy string `json:"set_by,omitempty"`
}

func markView(m *sluicev1.Mark) MarkView {
	v := MarkView{Name: m.Name, SetAt: m.GetAt().AsTime(), JobID: m.JobId, SetBy: m.SetBy}
	if m.Value != "" {
		v.Value, v.Kind = &m.Value, source.CursorKind(m.Value)
	}
	return v
}

// SetMark sets the job name's mark to value by hand, "" resetting it (the next run starts from the
// job's initial value), and answers once it is on the jobs topic. It is refused while a run of the
// job runs, and for a value that is no cursor of the mark's kind or lies past the clock plus
// SLUICE_PLANNER_MARK_MAX_SKEW. Runs that began before do not move the mark after.
func (p *Planner) SetMark(ctx context.Context, name, value, by string) (*sluicev1.Mark, error) {
	if !p.caughtUp.Load() {
		return nil, errNotCaughtUp
	}
	// No run starts while the mark is set (submitMu), and the runs that ended before are weighed
	// against the mark before (advancing): neither may move the new one.
	p.submitMu.Lock()
	defer p.submitMu.Unlock()
	if p.jobs.Running(name) {
		return nil, fmt.Errorf("%w: %s (its mark is set between runs)", errRunning, name)
	}
	p.names.advancing.Lock()
	defer p.names.advancing.Unlock()
	if err := p.advance(ctx); err != nil {
		return nil, err
	}
	cur := p.names.mark(name)
	if value != "" {
		if err := p.checkMark(value, cur.GetValue()); err != nil {
			return nil, err
		}
	}
	m := &sluicev1.Mark{Name: name, Value: value, At: timestamppb.New(p.now()), SetBy: by}
	if err := p.put(ctx, markPrefix+name, &sluicev1.State{Kind: &sluicev1.State_Mark{Mark: m}}); err != nil {
		return nil, err
	}
	p.log.Info("mark set", "name", name, "mark", value, "was", cur.GetValue(), "by", by)
	return m, nil
}

// checkMark says why value cannot be set as the mark that is now cur: the rule the runs' cursors
// keep, of cur's kind when there is one.
func (p *Planner) checkMark(value, cur string) error {
	kind := source.CursorKind(cur)
	switch p.cursorRule(kind).Check(value, p.now()) {
	case source.RejectUnparseable:
		if kind != "" && source.CursorKind(value) != "" {
			return fmt.Errorf("%w: %q is not a %s like the mark %q; reset the mark first to change its kind", errBadMark, value, kind, cur)
		}
		return fmt.Errorf("%w: %q is neither a time (RFC 3339, zone-less, or a date) nor a number", errBadMark, value)
	case source.RejectFuture:
		return fmt.Errorf("%w: %q lies more than %s past the planner's clock (SLUICE_PLANNER_MARK_MAX_SKEW)", errBadMark, value, p.cfg.MarkMaxSkew)
	}
	return nil
}

// getMark serves a job's mark, with the runs that succeeded until now weighed in (the planner
// does so every few seconds otherwise): 404 when it has none.
func (p *Planner) getMark(w http.ResponseWriter, r *http.Request) {
	if !p.caughtUp.Load() {
		retryLater(w, errNotCaughtUp)
		return
	}
	// A follower serves the mark as the jobs topic has it: the leader advances them.
	if p.leads() {
		if err := p.advanceMarks(r.Context()); err != nil {
			writeJSON(w, http.StatusServiceUnavailable, apiError{Error: err.Error()})
			return
		}
	}
	m := p.names.mark(r.PathValue("name"))
	if m == nil {
		writeJSON(w, http.StatusNotFound, apiError{Error: "no mark for job " + r.PathValue("name")})
		return
	}
	writeJSON(w, http.StatusOK, markView(m))
}

// putMark sets or resets a job's mark from {"value": "…"} or {"value": null}: 200 with the mark once
// it is on the jobs topic, 400 for a value no run could go on from, 409 while a run of the job runs,
// 503 when it could not be stored.
func (p *Planner) putMark(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if !jobspec.ValidName(name) {
		writeJSON(w, http.StatusBadRequest, apiError{Error: fmt.Sprintf("%q is no job name: 1 to 63 lower-case letters, digits, '_' or '-'", name)})
		return
	}
	value, err := decodeMark(http.MaxBytesReader(w, r.Body, maxMarkBytes))
	if err != nil {
		writeJSON(w, http.StatusBadRequest, apiError{Error: err.Error()})
		return
	}
	by := who(r.Context())
	if by == "" {
		by = "anonymous" // SLUICE_PLANNER_AUTH=none; a mark set by hand still says so
	}
	m, err := p.SetMark(r.Context(), name, value, by)
	switch {
	case errors.Is(err, errBadMark):
		writeJSON(w, http.StatusBadRequest, apiError{Error: err.Error()})
	case errors.Is(err, errRunning):
		writeJSON(w, http.StatusConflict, apiError{Error: err.Error()})
	case errors.Is(err, errNotCaughtUp), errors.Is(err, errNotLeader):
		retryLater(w, err)
	case err != nil:
		writeJSON(w, http.StatusServiceUnavailable, apiError{Error: err.Error()})
	default:
		writeJSON(w, http.StatusOK, markView(m))
	}
}

// decodeMark reads the body of a PUT: the value as a string or a number, "" for null. A body
// without a value is refused rather than taken as a reset.
func decodeMark(body io.Reader) (string, error) {
	var req struct {
		Value json.RawMessage `json:"value"`
	}
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return "", fmt.Errorf("the body must be {\"value\": \"…\"}, or {\"value\": null} to reset the mark: %w", err)
	}
	raw := bytes.TrimSpace(req.Value)
	var s string
	switch {
	case len(raw) == 0:
		return "", errors.New(`"value" is required: a cursor value, or null to reset the mark`)
	case string(raw) == "null":
		return "", nil
	case raw[0] == '"':
		if err := json.Unmarshal(raw, &s); err != nil || s == "" {
			return "", errors.New(`"value" must be a cursor value, or null to reset the mark`)
		}
		return s, nil
	case raw[0] == '-' || raw[0] >= '0' && raw[0] <= '9':
		return string(raw), nil
	}
	return "", errors.New(`"value" must be a string, a number or null`)
}
