package main

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluicedata/sluice/pkg/chsink"
)

// memTables keeps claims as ClickHouse's table of owners would, and decides them with chsink's rule.
type memTables struct {
	mu     sync.Mutex
	owners map[string][]chsink.Owner
	// claims counts the claims accepted.
	claims int
}

func (m *memTables) Check(_ context.Context, table string, _ *chsink.Sink, c chsink.Claim) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return chsink.CheckClaim(table, m.owners[table], c)
}

func (m *memTables) Claim(_ context.Context, table string, c chsink.Claim) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := chsink.CheckClaim(table, m.owners[table], c); err != nil {
		return err
	}
	m.claims++
	if i := slices.IndexFunc(m.owners[table], func(o chsink.Owner) bool { return o.Job == c.Job }); i >= 0 {
		m.owners[table][i].Shared = c.Shared
		return nil
	}
	m.owners[table] = append(m.owners[table], chsink.Owner{Job: c.Job, Shared: c.Shared, Since: time.Now()})
	return nil
}

// TestSubmitRefusesAnotherJobsTable submits jobs of two names into one table: the second is refused
// with a 400 on sink.table naming the owner, and publishes nothing, until both share the table.
func TestSubmitRefusesAnotherJobsTable(t *testing.T) {
	r := newPlannerRig(t)
	p := r.start(t)
	tables := &memTables{owners: map[string][]chsink.Owner{}}
	p.tables = tables
	post := func(name string, shared bool) (int, string) {
		t.Helper()
		spec := strings.Replace(string(r.spec(t, "people").JSON()), `"name":"users"`, `"name":"`+name+`"`, 1)
		if shared {
			spec = strings.Replace(spec, `"table":"people"`, `"table":"people","shared":true`, 1)
		}
		rec := httptest.NewRecorder()
		p.submit(rec, httptest.NewRequest(http.MethodPost, "/v1/jobs", strings.NewReader(spec)))
		return rec.Code, rec.Body.String()
	}
	if code, body := post("crm", false); code != http.StatusCreated {
		t.Fatalf("first job: %d %s", code, body)
	}
	code, body := post("billing", false)
	var answer apiError
	_ = json.Unmarshal([]byte(body), &answer)
	if code != http.StatusBadRequest || len(answer.Problems) != 1 || answer.Problems[0].Path != "sink.table" ||
		!strings.Contains(answer.Problems[0].Message, "written by job crm, which does not share it") {
		t.Fatalf("second job: %d %s", code, body)
	}
	if code, body := post("billing", true); code != http.StatusBadRequest {
		t.Fatalf("second job, shared, the first not: %d %s", code, body)
	}
	if tasks := r.count(t, "tasks"); len(tasks) != 4 {
		t.Fatalf("%d tasks published, want the first job's 4", len(tasks))
	}
	for _, name := range []string{"crm", "billing", "crm"} {
		if code, body := post(name, true); code != http.StatusCreated {
			t.Fatalf("%s, shared: %d %s", name, code, body)
		}
	}
	if tables.claims != 4 { // one per job planned; the refused ones claimed nothing
		t.Fatalf("%d claims, want 4", tables.claims)
	}
}
