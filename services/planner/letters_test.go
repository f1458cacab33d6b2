package main

import (
	"net/url"
	"testing"
	"time"

	"github.com/sluicedata/sluice/pkg/dlq"
)

// TestLettersKeepsTheNewest keeps the newest letters, answers a filter newest first, and counts every
// letter by job, stage and class, those it let go of too.
func TestLettersKeepsTheNewest(t *testing.T) {
	l := newLetters(3)
	at := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	for i := range 10 {
		s := dlq.Summary{Offset: int64(i), JobID: "a", Stage: "load", Class: "missing_key", FailedAt: at.Add(time.Duration(i) * time.Minute)}
		if i%2 == 1 {
			s.JobID, s.Stage, s.Class = "b", "extract", "http_5xx"
		}
		l.add(s)
	}
	all, _, more, counts := l.Query(letterFilter{}, 0, 100)
	if len(all) != 3 || all[0].Offset != 9 || all[2].Offset != 7 || more {
		t.Fatalf("letters %+v, want the newest 3, newest first", all)
	}
	if len(counts) != 2 || counts[0].Letters != 5 || counts[1].Letters != 5 {
		t.Fatalf("counts %+v, want 5 of each job", counts)
	}
	f, problem := parseLetterFilter(url.Values{"job": {"b"}, "since": {at.Add(8 * time.Minute).Format(time.RFC3339)}})
	if problem != "" {
		t.Fatal(problem)
	}
	got, _, _, counts := l.Query(f, 0, 100)
	if len(got) != 1 || got[0].Offset != 9 || len(counts) != 1 || counts[0].JobID != "b" {
		t.Fatalf("job b since minute 8: %+v, counts %+v", got, counts)
	}
	for _, bad := range []url.Values{{"stage": {"transform"}}, {"since": {"yesterday"}}} {
		if _, problem := parseLetterFilter(bad); problem == "" {
			t.Fatalf("%v accepted", bad)
		}
	}
}
