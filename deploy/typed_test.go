package deploy

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/sluicedata/sluice/pkg/demosource"
	"github.com/sluicedata/sluice/pkg/kafka"
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
// beforehand read with from_table, and two jobs with the same keys sharing one created table. Every
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
		name, sink     string
		loaded, dead   uint64
		classes        map[string]int
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
		{name: "crm", sink: "  table: people\n  create: true\n  shared: true\n" + typedColumns, loaded: n - 1, dead: 1, classes: map[string]int{"bad_value": 1}},
		{name: "billing", sink: "  table: people\n  create: true\n  shared: true\n" + typedColumns, loaded: n - 1, dead: 1, classes: map[string]int{"bad_value": 1}},
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

// TestLoaderKilledTypedBlocks SIGKILLs the loader 10 times while it lands a typed table from a
// pre-filled raw topic, each time after a random number of new inserts. Merges are stopped, so
// every part of the table is one insert: its rows of one raw partition are one block (an insert
// into a table that keeps no insert hashes, as on 18.16, holds one block of each of several
// partitions), and two blocks of a partition either cover the same offsets (a planned block formed
// again after a kill) or none in common. Every block that a kill left planned in the commit
// metadata is, in the end, in a part with exactly its offsets; nothing is lost, and nothing is
// twice after FINAL.
func TestLoaderKilledTypedBlocks(t *testing.T) {
	stacktest.Require(t)
	const n = 40_000
	src := demosource.DefaultConfig()
	src.Records = n
	p := newPipeline(t, src)
	ctx := context.Background()
	if err := p.conn.Exec(ctx, "CREATE TABLE kb (id Int64, name String, _key String, _partition Int32, _offset Int64, _source String, _version UInt64) "+
		"ENGINE = ReplacingMergeTree(_version) ORDER BY (_key, _source) SETTINGS parts_to_delay_insert = 100000, parts_to_throw_insert = 100000"); err != nil {
		t.Fatal(err)
	}
	if err := p.conn.Exec(ctx, "SYSTEM STOP MERGES kb"); err != nil {
		t.Fatal(err)
	}
	planner := start(t, "planner", p.env).ready(t)
	start(t, "extractor", p.env).ready(t)
	spec := fmt.Sprintf(`name: kb
source:
  url: %s/api/users
  records_path: data
  key: id
  pagination: {type: offset, page_size: 1000, total_path: total}
tasks: 6
sink: {table: kb, columns: from_table}
`, p.srcURL)
	id := submit(t, planner, spec).ID
	for j := poll(t, planner, id); j.Records.Extracted < n; j = poll(t, planner, id) {
		time.Sleep(100 * time.Millisecond)
	}

	// Small batches: many inserts, each of about 80 records per raw partition.
	// The broker's shortest session: each killed member is found gone 6 s after its last heartbeat.
	env := p.with(map[string]string{"SLUICE_LOADER_BATCH_ROWS": "500", "SLUICE_KAFKA_SESSION_TIMEOUT": "6s"})
	parts := func() int {
		return len(query(t, p, "SELECT _part FROM kb GROUP BY _part"))
	}
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	planned := map[string]bool{}
	for kill := range 10 {
		loader := start(t, fmt.Sprintf("loader-%d", kill), env)
		before, want := parts(), 1+rng.IntN(8)
		deadline := time.Now().Add(time.Minute)
		for parts() < before+want {
			if !loader.running() || time.Now().After(deadline) {
				t.Fatalf("loader %d: exited or no %d new inserts within a minute; %v pending; blocks %v", kill, want,
					metric(t, loader.addr(t), "loader_pending_rows"), committedBlocks(t, p))
			}
			time.Sleep(time.Duration(rng.IntN(20)) * time.Millisecond)
		}
		loader.stop(t, syscall.SIGKILL)
		if rows, _ := strconv.Atoi(query(t, p, "SELECT toString(uniqExact(_key)) FROM kb")[0]); rows >= n {
			t.Fatalf("kill %d came after the loader had landed every record", kill)
		}
		for _, b := range committedBlocks(t, p) {
			if strings.HasPrefix(b, "p:") {
				planned[strings.TrimPrefix(b, "p:")] = true
			}
		}
	}
	if len(planned) == 0 {
		t.Fatal("no kill found a block planned and not yet recorded inserted: none was in flight")
	}
	start(t, "loader-last", p.env).ready(t) // default batches: the rest goes fast
	if j := await(t, planner, id, 3*time.Minute); j.State != "succeeded" || j.Records.Loaded != n {
		t.Fatalf("job ended %s with %d loaded, want succeeded with %d", j.State, j.Records.Loaded, n)
	}

	// A part's rows of one raw partition are one block: a contiguous run of its offsets.
	ranges := map[int32][][2]int64{}
	for _, r := range query(t, p, "SELECT concat(toString(_partition), ' ', toString(min(_offset)), ' ', toString(max(_offset)), ' ', toString(count())) FROM kb GROUP BY _part, _partition") {
		var p0 int32
		var first, last, rows int64
		fmt.Sscan(r, &p0, &first, &last, &rows)
		if last-first+1 < rows {
			t.Fatalf("a part holds %d rows of partition %d's offsets %d-%d: a block inserted twice in one part", rows, p0, first, last)
		}
		ranges[p0] = append(ranges[p0], [2]int64{first, last})
	}
	again := 0
	for part, rs := range ranges {
		slices.SortFunc(rs, func(a, b [2]int64) int { return cmp.Or(cmp.Compare(a[0], b[0]), cmp.Compare(a[1], b[1])) })
		for i := 1; i < len(rs); i++ {
			switch {
			case rs[i] == rs[i-1]:
				again++
			case rs[i][0] <= rs[i-1][1]:
				t.Fatalf("partition %d: blocks %v and %v overlap: a block was formed differently after a kill", part, rs[i-1], rs[i])
			}
		}
	}
	for b := range planned {
		var part int32
		var first, last int64
		fields := strings.Split(b, ":") // table:schema:partition:first-last
		fmt.Sscanf(fields[2]+" "+fields[3], "%d %d-%d", &part, &first, &last)
		if !slices.Contains(ranges[part], [2]int64{first, last}) {
			t.Fatalf("block %s was planned at a kill, and no part holds exactly its offsets: %v", b, ranges[part])
		}
	}
	t.Logf("%d kills; %d blocks planned at a kill; %d blocks inserted again", 10, len(planned), again)
	rows, keys := uint64(0), uint64(0)
	if err := p.conn.QueryRow(ctx, "SELECT count(), uniqExact(_key) FROM kb FINAL").Scan(&rows, &keys); err != nil {
		t.Fatal(err)
	}
	if rows != n || keys != n {
		t.Fatalf("%d rows and %d keys after FINAL, want %d of each", rows, keys, n)
	}
}

// committedBlocks returns the loader group's blocks recorded in its commit metadata, as
// "p:table:schema:partition:first-last" (planned) or "i:…" (inserted).
func committedBlocks(t *testing.T, p *deployment) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl, err := kafka.NewClient(p.kafka, "test-offsets", stacktest.Logger(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	resp, err := kadm.NewClient(cl).FetchOffsets(ctx, p.env["SLUICE_LOADER_GROUP"])
	if err == nil {
		err = resp.Error()
	}
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	resp.Each(func(o kadm.OffsetResponse) {
		fields := strings.Fields(o.Metadata)
		if len(fields) == 0 {
			return
		}
		for _, f := range fields[1:] {
			parts := strings.SplitN(f, ":", 4)
			rng, _, _ := strings.Cut(parts[3], "@")
			out = append(out, fmt.Sprintf("%s:%s:%s:%d:%s", parts[0], parts[1], parts[2], o.Partition, rng))
		}
	})
	return out
}
