package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/sluicedata/sluice/pkg/jobspec"
	"github.com/sluicedata/sluice/pkg/kafka"
	"github.com/sluicedata/sluice/pkg/source"
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

// routes adds the jobs API to mux-like h, each route behind the role it needs, and the status page
// (open: it holds no data, and asks the API with the token the user gives it).
func (p *Planner) routes(handle func(pattern string, h http.Handler)) {
	p.uiRoutes(handle)
	// Writes go to the leader: a follower forwards them (leaderOnly).
	handle("POST /v1/jobs", p.auth.require(roleSubmit, p.leaderOnly(p.limitSubmits(http.HandlerFunc(p.submit)))))
	handle("GET /v1/jobs", p.auth.require(roleRead, http.HandlerFunc(p.list)))
	handle("GET /v1/jobs/{id}", p.auth.require(roleRead, http.HandlerFunc(p.get)))
	handle("POST /v1/jobs/{id}/cancel", p.auth.require(roleSubmit, p.leaderOnly(http.HandlerFunc(p.cancel))))
	handle("GET /v1/leader", p.auth.require(roleRead, http.HandlerFunc(p.leader)))
	handle("GET /v1/jobs/{id}/tasks", p.auth.require(roleRead, http.HandlerFunc(p.tasks)))
	handle("GET /v1/schedules", p.auth.require(roleRead, http.HandlerFunc(p.listSchedules)))
	handle("GET /v1/lag", p.auth.require(roleRead, http.HandlerFunc(p.lag)))
	handle("GET /v1/lag/history", p.auth.require(roleRead, http.HandlerFunc(p.lagHistory)))
	handle("GET /v1/deadletters", p.auth.require(roleRead, http.HandlerFunc(p.deadLetters)))
	handle("DELETE /v1/schedules/{name}", p.auth.require(roleAdmin, p.leaderOnly(http.HandlerFunc(p.removeSchedule))))
	handle("GET /v1/marks/{name}", p.auth.require(roleRead, http.HandlerFunc(p.getMark)))
	handle("PUT /v1/marks/{name}", p.auth.require(roleAdmin, p.leaderOnly(http.HandlerFunc(p.putMark))))
}

// limitSubmits answers 429 to a submit while SLUICE_PLANNER_MAX_CONCURRENT_SUBMITS others run:
// each may read a source's first page and ask ClickHouse about a table.
func (p *Planner) limitSubmits(h http.Handler) http.Handler {
	if p.submits == nil {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case p.submits <- struct{}{}:
			defer func() { <-p.submits }()
			h.ServeHTTP(w, r)
		default:
			w.Header().Set("Retry-After", "1")
			writeJSON(w, http.StatusTooManyRequests, apiError{Error: fmt.Sprintf("%d submits are in progress (SLUICE_PLANNER_MAX_CONCURRENT_SUBMITS); try again", cap(p.submits))})
		}
	})
}

func (p *Planner) listSchedules(w http.ResponseWriter, _ *http.Request) {
	if !p.caughtUp.Load() {
		retryLater(w, errNotCaughtUp)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"schedules": p.schedules()})
}

// removeSchedule stops a job's schedule; a run that is running goes on to its end.
func (p *Planner) removeSchedule(w http.ResponseWriter, r *http.Request) {
	if !p.caughtUp.Load() {
		retryLater(w, errNotCaughtUp)
		return
	}
	had, err := p.deleteSchedule(r.Context(), r.PathValue("name"))
	switch {
	case errors.Is(err, errNotLeader):
		retryLater(w, err)
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
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		writeJSON(w, http.StatusRequestEntityTooLarge, apiError{Error: "job spec is larger than 1 MiB"})
		return
	case err != nil:
		// A body that did not arrive within SLUICE_HTTP_READ_TIMEOUT, or a client that went away.
		writeJSON(w, http.StatusRequestTimeout, apiError{Error: "the job spec did not arrive in time"})
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
	if probs := spec.CredentialProblems(); len(probs) > 0 {
		writeJSON(w, http.StatusBadRequest, apiError{Error: "invalid job spec", Problems: probs})
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
	case errors.Is(err, errRunning), errors.Is(err, errMarkMoved):
		writeJSON(w, http.StatusConflict, apiError{Error: err.Error()})
	case errors.Is(err, errLookback):
		writeJSON(w, http.StatusBadRequest, apiError{Error: "invalid job spec", Problems: []jobspec.Problem{{Path: "incremental.lookback", Message: err.Error()}}})
	case refusedSource(err) != nil:
		var ee *source.EgressError
		if errors.As(err, &ee) {
			// The answer names the range; the address a name resolved to stays in this log.
			p.log.Warn("refused a job's source", "name", spec.Name, "host", ee.Host, "address", ee.Addr.String(), "range", ee.Range, "by", who(r.Context()))
		}
		writeJSON(w, http.StatusBadRequest, apiError{Error: "invalid job spec", Problems: []jobspec.Problem{{Path: "source", Message: refusedSource(err).Error()}}})
	case errors.Is(err, errDiscover):
		var se *source.Error
		if errors.As(err, &se) && se.Diagnostic != "" {
			// What the answer leaves out (a database's DETAIL, a message quoting rows), for the operator.
			p.log.Warn("a job's source failed at submit", "name", spec.Name, "class", se.Class, "diagnostic", se.Diagnostic, "by", who(r.Context()))
		}
		writeJSON(w, http.StatusBadGateway, apiError{Error: err.Error()})
	case errors.Is(err, errKeyReused):
		writeJSON(w, http.StatusConflict, apiError{Error: err.Error()})
	case refusedTable(err):
		writeJSON(w, http.StatusBadRequest, apiError{Error: "invalid job spec", Problems: []jobspec.Problem{{Path: "sink.table", Message: err.Error()}}})
	case errors.Is(err, errNotCaughtUp), errors.Is(err, errNotLeader):
		retryLater(w, err)
	case err != nil:
		writeJSON(w, http.StatusServiceUnavailable, apiError{Error: err.Error()})
	case existing:
		writeJSON(w, http.StatusOK, job)
	default:
		p.log.Info("job submitted", "job", job.ID, "name", spec.Name, "by", who(r.Context()))
		writeJSON(w, http.StatusCreated, job)
	}
}

// refusedSource is the error of a source that this deployment refuses to reach: an address the
// egress policy refuses, a secret not bound to the host, a redirect to another host or to http.
func refusedSource(err error) error {
	var se *source.Error
	if errors.As(err, &se) && (se.Class == "egress" || se.Class == "config" || se.Class == "redirect") {
		return se
	}
	return nil
}

// lag serves the last measure of every watched group: per partition, records and seconds.
func (p *Planner) lag(w http.ResponseWriter, _ *http.Request) {
	groups := []kafka.GroupLag{}
	if p.groups != nil {
		groups = p.groups.Lags()
	}
	writeJSON(w, http.StatusOK, map[string]any{"groups": groups})
}

// lagHistory serves every watched group's lag over the last half hour, one point per measure.
func (p *Planner) lagHistory(w http.ResponseWriter, _ *http.Request) {
	groups := []kafka.LagHistory{}
	if p.groups != nil {
		groups = p.groups.History()
	}
	writeJSON(w, http.StatusOK, map[string]any{"groups": groups})
}

// jobList is a page of the jobs, newest first.
type jobList struct {
	Jobs       []Job  `json:"jobs"`
	NextCursor string `json:"next_cursor,omitempty"`
}

// list serves a page of the jobs the planner knows, newest first.
func (p *Planner) list(w http.ResponseWriter, r *http.Request) {
	pq, err := parsePage(r.URL.Query(), listJobs)
	var after *jobKey
	if err == nil && pq.after != "" {
		var k jobKey
		k, err = parseJobKey(pq.after)
		after = &k
	}
	if err != nil {
		writeJSON(w, http.StatusBadRequest, apiError{Error: err.Error()})
		return
	}
	jobs, more := p.jobs.Page(after, pq.limit, p.now())
	answer := jobList{Jobs: jobs}
	if more {
		answer.NextCursor = cursor(listJobs, jobs[len(jobs)-1].key().String())
	}
	writeJSON(w, http.StatusOK, answer)
}

// taskList is a page of a job's tasks. All is false for a finished job, which lists its
// dead-lettered tasks only (the others were extracted); Total counts the tasks of every page.
type taskList struct {
	Tasks      []TaskView `json:"tasks"`
	All        bool       `json:"all"`
	Total      int        `json:"total"`
	NextCursor string     `json:"next_cursor,omitempty"`
}

// tasks serves a page of a job's tasks: each with its state, runs and records.
func (p *Planner) tasks(w http.ResponseWriter, r *http.Request) {
	pq, err := parsePage(r.URL.Query(), listTasks)
	var after *taskKey
	if err == nil && pq.after != "" {
		var k taskKey
		k, err = parseTaskKey(pq.after)
		after = &k
	}
	if err != nil {
		writeJSON(w, http.StatusBadRequest, apiError{Error: err.Error()})
		return
	}
	tasks, all, ok := p.jobs.Tasks(r.PathValue("id"))
	if !ok {
		writeJSON(w, http.StatusNotFound, apiError{Error: "no job " + r.PathValue("id")})
		return
	}
	page, more := cut(tasks, pq.limit, func(v TaskView) bool { return after == nil || after.compare(v.order) < 0 })
	answer := taskList{Tasks: page, All: all, Total: len(tasks)}
	if answer.Tasks == nil {
		answer.Tasks = []TaskView{}
	}
	if more {
		answer.NextCursor = cursor(listTasks, page[len(page)-1].order.String())
	}
	writeJSON(w, http.StatusOK, answer)
}

// cancel ends a running job as cancelled: 200 with the job (a cancelled job again too), 404 for no
// such job, 409 when it had ended otherwise, 503 when its state could not be stored, and 503 with
// Retry-After when the planner is behind the events or its lead ended before the cancel was
// recorded (sent again, it reaches the leader).
func (p *Planner) cancel(w http.ResponseWriter, r *http.Request) {
	job, err := p.Cancel(r.Context(), r.PathValue("id"), who(r.Context()))
	switch {
	case errors.Is(err, errNoJob):
		writeJSON(w, http.StatusNotFound, apiError{Error: err.Error()})
	case errors.Is(err, errEnded):
		writeJSON(w, http.StatusConflict, apiError{Error: err.Error()})
	case errors.Is(err, errNotCaughtUp), errors.Is(err, errBehind), errors.Is(err, errNotLeader):
		retryLater(w, err)
	case err != nil:
		p.log.Warn("job cancelled but not stored", "job", job.ID, "by", who(r.Context()), "error", err)
		writeJSON(w, http.StatusServiceUnavailable, apiError{Error: err.Error()})
	default:
		p.log.Info("job cancelled", "job", job.ID, "name", job.Name, "by", who(r.Context()))
		writeJSON(w, http.StatusOK, job)
	}
}

// retryLater answers 503 for a request the planner did nothing with, and that the client may send
// again in a second (sluicectl does).
func retryLater(w http.ResponseWriter, err error) {
	w.Header().Set("Retry-After", "1")
	writeJSON(w, http.StatusServiceUnavailable, apiError{Error: err.Error()})
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
