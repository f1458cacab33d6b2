package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/sluicedata/sluice/pkg/chsink"
	"github.com/sluicedata/sluice/pkg/jobspec"
)

// maxSpecBytes bounds a submitted job spec, maxKeyBytes an idempotency key.
const (
	maxSpecBytes = 1 << 20
	maxKeyBytes  = 200
)

// apiError is the body of every error answer; Problems lists a rejected spec's problems.
type apiError struct {
	Error    string            `json:"error"`
	Problems []jobspec.Problem `json:"problems,omitempty"`
}

// routes adds the jobs API to mux-like h.
func (p *Planner) routes(handle func(pattern string, h http.Handler)) {
	handle("POST /v1/jobs", http.HandlerFunc(p.submit))
	handle("GET /v1/jobs", http.HandlerFunc(p.list))
	handle("GET /v1/jobs/{id}", http.HandlerFunc(p.get))
	handle("GET /v1/schedules", http.HandlerFunc(p.listSchedules))
	handle("DELETE /v1/schedules/{name}", http.HandlerFunc(p.removeSchedule))
}

func (p *Planner) listSchedules(w http.ResponseWriter, _ *http.Request) {
	if !p.caughtUp.Load() {
		writeJSON(w, http.StatusServiceUnavailable, apiError{Error: errNotCaughtUp.Error()})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"schedules": p.schedules()})
}

// removeSchedule stops a job's schedule; a run that is running goes on to its end.
func (p *Planner) removeSchedule(w http.ResponseWriter, r *http.Request) {
	if !p.caughtUp.Load() {
		writeJSON(w, http.StatusServiceUnavailable, apiError{Error: errNotCaughtUp.Error()})
		return
	}
	had, err := p.deleteSchedule(r.Context(), r.PathValue("name"))
	switch {
	case err != nil:
		writeJSON(w, http.StatusServiceUnavailable, apiError{Error: err.Error()})
	case !had:
		writeJSON(w, http.StatusNotFound, apiError{Error: "no schedule " + r.PathValue("name")})
	default:
		w.WriteHeader(http.StatusNoContent)
	}
}

// submit takes a job spec in YAML or JSON and answers 201 with the planned job, 200 with the job
// an earlier submission with the same Idempotency-Key made, 400 with every problem of an invalid
// spec, 409 when the key was used for another spec, or 502 when the source cannot tell its extent.
func (p *Planner) submit(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxSpecBytes))
	if err != nil {
		writeJSON(w, http.StatusRequestEntityTooLarge, apiError{Error: "job spec is larger than 1 MiB"})
		return
	}
	spec, err := jobspec.Parse(body)
	if err != nil {
		var perr *jobspec.Error
		if errors.As(err, &perr) {
			writeJSON(w, http.StatusBadRequest, apiError{Error: "invalid job spec", Problems: perr.Problems})
			return
		}
		writeJSON(w, http.StatusBadRequest, apiError{Error: err.Error()})
		return
	}
	key := r.Header.Get("Idempotency-Key")
	if len(key) > maxKeyBytes || strings.ContainsFunc(key, func(c rune) bool { return c < 0x21 || c > 0x7e }) {
		writeJSON(w, http.StatusBadRequest, apiError{Error: fmt.Sprintf("Idempotency-Key must be at most %d printable ASCII characters without spaces", maxKeyBytes)})
		return
	}
	job, existing, err := p.Submit(r.Context(), spec, key)
	// A spec with a schedule keeps it once its run is planned (or one runs already); a spec without
	// one, once planned, ends the name's schedule.
	if err == nil || errors.Is(err, errRunning) && spec.Schedule != (jobspec.Schedule{}) {
		if serr := p.setSchedule(r.Context(), spec); serr != nil {
			writeJSON(w, http.StatusServiceUnavailable, apiError{Error: "the job is planned but its schedule could not be kept: " + serr.Error()})
			return
		}
	}
	switch {
	case errors.Is(err, errRunning) && spec.Schedule != (jobspec.Schedule{}):
		writeJSON(w, http.StatusConflict, apiError{Error: err.Error() + "; its schedule is kept, and the next run starts after this one"})
	case errors.Is(err, errRunning):
		writeJSON(w, http.StatusConflict, apiError{Error: err.Error()})
	case errors.Is(err, errLookback):
		writeJSON(w, http.StatusBadRequest, apiError{Error: "invalid job spec", Problems: []jobspec.Problem{{Path: "incremental.lookback", Message: err.Error()}}})
	case errors.Is(err, errDiscover):
		writeJSON(w, http.StatusBadGateway, apiError{Error: err.Error()})
	case errors.Is(err, errKeyReused):
		writeJSON(w, http.StatusConflict, apiError{Error: err.Error()})
	case errors.Is(err, chsink.ErrIncompatibleTable), errors.Is(err, chsink.ErrNoTable):
		writeJSON(w, http.StatusBadRequest, apiError{Error: "invalid job spec", Problems: []jobspec.Problem{{Path: "sink.table", Message: err.Error()}}})
	case err != nil:
		writeJSON(w, http.StatusServiceUnavailable, apiError{Error: err.Error()})
	case existing:
		writeJSON(w, http.StatusOK, job)
	default:
		writeJSON(w, http.StatusCreated, job)
	}
}

func (p *Planner) list(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"jobs": p.jobs.List(p.now())})
}

func (p *Planner) get(w http.ResponseWriter, r *http.Request) {
	job, ok := p.jobs.Get(r.PathValue("id"), p.now())
	if !ok {
		writeJSON(w, http.StatusNotFound, apiError{Error: "no job " + r.PathValue("id")})
		return
	}
	writeJSON(w, http.StatusOK, job)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
