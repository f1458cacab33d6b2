package chsink

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

// TestCheckClaim decides claims on a table from the owners recorded: a job writes a table alone
// unless it and every job that writes it share it, and no claim takes a shared table from a job
// that writes it.
func TestCheckClaim(t *testing.T) {
	at := func(s int) time.Time { return time.Unix(1700000000+int64(s), 0) }
	crm := Owner{Job: "crm", Since: at(0)}
	crmShared := Owner{Job: "crm", Shared: true, Since: at(0)}
	billingShared := Owner{Job: "billing", Shared: true, Since: at(5)}
	for _, c := range []struct {
		name   string
		owners []Owner
		claim  Claim
		want   string // "" when allowed
	}{
		{"first claim", nil, Claim{Job: "crm"}, ""},
		{"first claim, shared", nil, Claim{Job: "crm", Shared: true}, ""},
		{"the owner again", []Owner{crm}, Claim{Job: "crm"}, ""},
		{"the owner shares it now", []Owner{crm}, Claim{Job: "crm", Shared: true}, ""},
		{"another job", []Owner{crm}, Claim{Job: "billing"}, "written by job crm, which does not share it"},
		{"another job, shared, the owner not", []Owner{crm}, Claim{Job: "billing", Shared: true}, "written by job crm, which does not share it"},
		{"another job, not shared, the owner shares", []Owner{crmShared}, Claim{Job: "billing"}, "shared by job crm; job billing may write it too with shared: true"},
		{"both share", []Owner{crmShared}, Claim{Job: "billing", Shared: true}, ""},
		{"a sharer again", []Owner{crmShared, billingShared}, Claim{Job: "billing", Shared: true}, ""},
		{"a sharer takes it alone", []Owner{crmShared, billingShared}, Claim{Job: "crm"}, "shared with job billing: job crm must keep shared: true"},
		{"the second sharer takes it alone", []Owner{crmShared, billingShared}, Claim{Job: "billing"}, "shared by job crm"},
		// Two jobs claimed it at once: the first claim (then the name) wins, everywhere.
		{"a lost race", []Owner{crm, {Job: "billing", Since: at(0)}}, Claim{Job: "crm"}, "written by job billing"},
		{"a won race", []Owner{crm, {Job: "billing", Since: at(0)}}, Claim{Job: "billing"}, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := CheckClaim("people", c.owners, c.claim)
			switch {
			case c.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case c.want != "" && (!errors.Is(err, ErrOwned) || !strings.Contains(err.Error(), c.want)):
				t.Fatalf("%v, want ErrOwned saying %q", err, c.want)
			}
		})
	}
}

// TestClaimTable claims tables on the real ClickHouse: the owners are recorded in _sluice_owners,
// a second job is refused unless both share the table, and a raw table created before sluice kept
// job names cannot be shared.
func TestClaimTable(t *testing.T) {
	conn := openConn(t)
	ctx := context.Background()
	// As the planner does: checked at submit, claimed once the job is planned.
	claim := func(table, job string, shared bool) error {
		t.Helper()
		c := Claim{Job: job, Shared: shared}
		if err := CheckOwner(ctx, conn, table, nil, c); err != nil {
			return err
		}
		return ClaimTable(ctx, conn, table, c)
	}
	if owners, err := Owners(ctx, conn, "people"); err != nil || len(owners) != 0 {
		t.Fatalf("owners before any claim: %v, %v", owners, err)
	}
	steps := []struct {
		job    string
		shared bool
		ok     bool
	}{
		{"crm", false, true}, {"crm", false, true}, {"billing", false, false}, {"billing", true, false},
		{"crm", true, true}, {"billing", true, true}, {"crm", false, false}, {"billing", true, true},
	}
	for i, s := range steps {
		if err := claim("people", s.job, s.shared); (err == nil) != s.ok || err != nil && !errors.Is(err, ErrOwned) {
			t.Fatalf("step %d, %s shared=%v: %v, want allowed %v", i, s.job, s.shared, err, s.ok)
		}
	}
	owners, err := Owners(ctx, conn, "people")
	if err != nil || len(owners) != 2 || len(writers(owners)) != 2 {
		t.Fatalf("owners %+v, %v: want crm and billing, both writing", owners, err)
	}
	if got := query(t, conn, "SELECT toString(count()) FROM "+OwnersTable); got[0] != "3" {
		t.Fatalf("%s claims recorded, want 3: a claim is written only when it changes", got[0])
	}
	// Another table is claimed apart.
	if err := claim("orders", "billing", false); err != nil {
		t.Fatal(err)
	}

	// A raw table as sluice created it before: ordered by key alone.
	if err := conn.Exec(ctx, rawByKey.CreateSQL(conn.Database, "before")); err != nil {
		t.Fatal(err)
	}
	if err := claim("before", "crm", true); !errors.Is(err, ErrIncompatibleTable) || !strings.Contains(err.Error(), "no column job_name") {
		t.Fatalf("shared claim on a table ordered by key alone: %v", err)
	}
	if err := claim("before", "crm", false); err != nil {
		t.Fatalf("a table of before, claimed by one job: %v", err)
	}
	if err := claim("before", "billing", false); !errors.Is(err, ErrOwned) {
		t.Fatalf("a second job on a table of before: %v", err)
	}
	if ValidTable(OwnersTable) {
		t.Fatalf("%s is a valid sink table", OwnersTable)
	}
}

// TestClaimRace has two jobs claim one table at once: as two planners would, each checks, writes
// its claim and reads the claims again; exactly one of them is accepted.
func TestClaimRace(t *testing.T) {
	conn := openConn(t)
	ctx := context.Background()
	// Both checked before either wrote: their claims are both in the table.
	if err := ClaimTable(ctx, conn, "warmup", Claim{Job: "x"}); err != nil { // creates the owners table
		t.Fatal(err)
	}
	for _, job := range []string{"crm", "billing"} {
		if err := conn.Exec(ctx, "INSERT INTO "+OwnersTable+" (sink_table, job, shared, claimed_at, claimed_ns) SELECT 'people', ?, 0, toDateTime(1700000000), 1", job); err != nil {
			t.Fatal(err)
		}
	}
	var won []string
	for _, job := range []string{"crm", "billing"} {
		err := ClaimTable(ctx, conn, "people", Claim{Job: job})
		switch {
		case err == nil:
			won = append(won, job)
		case !errors.Is(err, ErrOwned):
			t.Fatal(err)
		}
	}
	if len(won) != 1 || won[0] != "billing" {
		t.Fatalf("accepted %v, want billing alone (the first claim, then the name)", won)
	}
}
