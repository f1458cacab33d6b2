package deploy

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluicedata/sluice/pkg/demosource"
	"github.com/sluicedata/sluice/pkg/stacktest"
)

// typedRecords are the records of the typed tests' source: awkward values in every column, the
// timestamp in each of its three forms in turn, a field (plan) that appears half way through, and
// one record (bad) whose amount is no number.
func typedRecords(n, bad int) []string {
	forms := []func(i int) string{
		func(i int) string { return strconv.Quote(time.Unix(1709296245+int64(i), 0).UTC().Format(time.RFC3339)) },
		func(i int) string { return strconv.FormatInt(1709296245+int64(i), 10) },
		func(i int) string { return strconv.FormatInt((1709296245+int64(i))*1000+123, 10) },
	}
	out := make([]string, n)
	for i := range out {
		amount := fmt.Sprintf(`"%d.%02d"`, i, i%100)
		if i == bad {
			amount = `"twelve"`
		}
		rec := fmt.Sprintf(`{"id": %d, "name": "n\u2028%d 😀 שלום\u0000", "amount": %s, "big": %d, "at": %s`,
			i, i, amount, int64(1)<<53+int64(i), forms[i%3](i))
		if i >= n/2 {
			rec += fmt.Sprintf(`, "plan": "p%d"`, i%3)
		}
		out[i] = rec + "}"
	}
	return out
}

// typedSource serves records on /items with offset pagination, as {"data": [...], "total": n}.
func typedSource(t *testing.T, records []string) string {
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		off, _ := strconv.Atoi(r.URL.Query().Get("offset"))
		limit, _ := strconv.Atoi(r.URL.Query().Get("limit"))
		end := min(off+limit, len(records))
		off = min(off, end)
		fmt.Fprintf(w, `{"total": %d, "data": [%s]}`, len(records), strings.Join(records[off:end], ","))
	}))
	t.Cleanup(ts.Close)
	return ts.URL
}

func typedSpec(name, url, sink string) string {
	return fmt.Sprintf(`name: %s
source:
  url: %s/items
  records_path: data
  key: id
  pagination: {type: offset, page_size: 50, total_path: total}
tasks: 2
sink:
%s`, name, url, sink)
}

const typedColumns = `  columns:
    - {name: id, type: Int64}
    - {name: name, type: String}
    - {name: amount, type: "Decimal(18, 2)"}
    - {name: big, type: Int64}
    - {name: at, type: DateTime}
`

// TestPipelineTyped runs typed jobs through the real services on one source whose records gain a
// field half way through: a created table under each contract (evolve adds the column and fills it,
// freeze dead-letters the records with the new field, discard drops and counts it), a table made
// beforehand read with from_table, and two jobs with the same keys in one created table. Every
// value lands exactly; the record whose amount is no number is dead-lettered naming the column,
// and its neighbours load.
func TestPipelineTyped(t *testing.T) {
	stacktest.Require(t)
	const n, bad = 400, 57
	records := typedRecords(n, bad)
	url := typedSource(t, records)
	p := newPipeline(t, demosource.DefaultConfig())
	ctx := context.Background()
	if err := p.conn.Exec(ctx, "CREATE TABLE made (id Int64, name String, amount Decimal(18, 2), at DateTime, "+
		"plan Nullable(String), _source String, _version UInt64) ENGINE = ReplacingMergeTree(_version) ORDER BY id"); err != nil {
		t.Fatal(err)
	}
	planner := start(t, "planner", p.env).ready(t)
	start(t, "extractor", p.env).ready(t)
	loader := start(t, "loader", p.env).ready(t)

	jobs := []struct {
		name, sink    string
		loaded, dead  uint64
		classes       map[string]int
		table, select_ string
	}{
		{name: "evolve", sink: "  table: t_evolve\n  create: true\n  on_new_field: evolve\n" + typedColumns,
			loaded: n - 1, dead: 1, classes: map[string]int{"bad_value": 1}},
		{name: "freeze", sink: "  table: t_freeze\n  create: true\n  on_new_field: freeze\n" + typedColumns,
			loaded: n/2 - 1, dead: n/2 + 1, classes: map[string]int{"bad_value": 1, "unknown_field": n / 2}},
		{name: "discard", sink: "  table: t_discard\n  create: true\n" + typedColumns,
			loaded: n - 1, dead: 1, classes: map[string]int{"bad_value": 1}},
		{name: "fromtable", sink: "  table: made\n  columns: from_table\n",
			loaded: n - 1, dead: 1, classes: map[string]int{"bad_value": 1}},
		{name: "crm", sink: "  table: people\n  create: true\n" + typedColumns, loaded: n - 1, dead: 1, classes: map[string]int{"bad_value": 1}},
		{name: "billing", sink: "  table: people\n  create: true\n" + typedColumns, loaded: n - 1, dead: 1, classes: map[string]int{"bad_value": 1}},
	}
	ids := map[string]string{}
	var wg sync.WaitGroup
	var mu sync.Mutex
	for _, j := range jobs {
		wg.Go(func() {
			id := submit(t, planner, typedSpec(j.name, url, j.sink)).ID
			mu.Lock()
			ids[id] = j.name
			mu.Unlock()
			got := await(t, planner, id, 2*time.Minute)
			if got.State != "succeeded" || got.Records.Loaded != j.loaded || got.Records.DeadLettered != j.dead {
				t.Errorf("%s ended %s (%s) with %d loaded and %d dead-lettered, want %d and %d",
					j.name, got.State, got.Reason, got.Records.Loaded, got.Records.DeadLettered, j.loaded, j.dead)
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}

	// Dead letters: by job and class, each naming its column or field, with the record's bytes.
	classes := map[string]map[string]int{}
	for _, dl := range p.deadLetters(t) {
		name := ids[dl.JobId]
		if classes[name] == nil {
			classes[name] = map[string]int{}
		}
		classes[name][dl.ErrorClass]++
		i, _ := strconv.Atoi(string(dl.OriginalKey))
		switch dl.ErrorClass {
		case "bad_value":
			if i != bad || !strings.Contains(dl.ErrorMessage, "column amount") || !strings.Contains(dl.ErrorMessage, "twelve") {
				t.Errorf("%s: bad_value letter for record %d: %s", name, i, dl.ErrorMessage)
			}
		case "unknown_field":
			if i < n/2 || !strings.Contains(dl.ErrorMessage, `field "plan"`) {
				t.Errorf("%s: unknown_field letter for record %d: %s", name, i, dl.ErrorMessage)
			}
		}
		if string(dl.Payload) != records[i] {
			t.Errorf("%s: letter for record %d holds %q, want the record", name, i, dl.Payload)
		}
	}
	for _, j := range jobs {
		if fmt.Sprint(classes[j.name]) != fmt.Sprint(j.classes) {
			t.Errorf("%s: dead letters by class %v, want %v", j.name, classes[j.name], j.classes)
		}
	}

	// Rows: every value exactly as the source wrote it.
	want := func(i int, plan bool) string {
		var rec struct {
			Name   string
			Amount string
			Big    int64
		}
		_ = json.Unmarshal([]byte(records[i]), &rec)
		s := fmt.Sprintf("%d|%s|%s|%d|%s", i, rec.Name, decimalText(rec.Amount), rec.Big,
			time.Unix(1709296245+int64(i), 0).UTC().Format(time.DateTime))
		switch {
		case plan && i >= n/2:
			s += fmt.Sprintf("|p%d", i%3)
		case plan:
			s += "|NULL"
		}
		return s
	}
	check := func(table, extra, where string, plan bool, wantRows int) {
		t.Helper()
		got := query(t, p, fmt.Sprintf("SELECT concat(toString(id), '|', name, '|', toString(amount), '|', toString(%s), '|', toString(at, 'UTC')%s) FROM %s FINAL %s ORDER BY id",
			map[bool]string{true: "big", false: "0"}[table != "made"], extra, table, where))
		if len(got) != wantRows {
			t.Fatalf("%s: %d rows, want %d", table, len(got), wantRows)
		}
		k := 0
		for i := range n {
			if i == bad || (table == "t_freeze" && i >= n/2) {
				continue
			}
			parts := strings.Split(got[k], "|")
			parts[2] = decimalText(parts[2]) // 18.16 writes a Decimal's trailing zeros; later releases do not
			got[k] = strings.Join(parts, "|")
			w := want(i, plan)
			if table == "made" {
				parts := strings.Split(w, "|")
				parts[3] = "0"
				w = strings.Join(parts, "|")
			}
			if got[k] != w {
				t.Fatalf("%s row %d:\n got %q\nwant %q", table, k, got[k], w)
			}
			k++
		}
	}
	plan := ", '|', ifNull(plan, 'NULL')"
	check("t_evolve", plan, "", true, n-1)
	check("t_freeze", "", "", false, n/2-1)
	check("t_discard", "", "", false, n-1)
	check("made", plan, "", true, n-1)
	check("people", "", "WHERE _source = 'crm'", false, n-1)
	check("people", "", "WHERE _source = 'billing'", false, n-1)
	if cols := query(t, p, "SELECT name FROM system.columns WHERE database = currentDatabase() AND table = 't_discard' AND name = 'plan'"); len(cols) != 0 {
		t.Fatal("discard added a column")
	}
	if got := metric(t, loader, "loader_fields_discarded_total"); got < n/2 {
		t.Fatalf("loader_fields_discarded_total = %v, want at least the %d plan fields of t_discard", got, n/2)
	}
}

// decimalText is a decimal number without trailing zeros after its point.
func decimalText(s string) string {
	if strings.Contains(s, ".") {
		s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	}
	return s
}

// query returns the single String column of sql's rows.
func query(t *testing.T, p *deployment, sql string) []string {
	t.Helper()
	rows, err := p.conn.Query(context.Background(), sql)
	if err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	return out
}
