package main

import (
	"slices"
	"testing"

	sluicev1 "github.com/sluicedata/sluice/proto/sluice/v1"
)

func TestPageRequests(t *testing.T) {
	src := &sluicev1.HttpSource{Pagination: &sluicev1.Pagination{PageSize: 500}}
	tests := []struct {
		name  string
		task  *sluicev1.Task
		want  []pageRequest
		limit int
	}{
		{"bounded offsets", &sluicev1.Task{Slice: &sluicev1.Task_Offsets{Offsets: &sluicev1.OffsetRange{Start: 1000, End: 2200}}},
			[]pageRequest{{1000, 500, false}, {1500, 500, false}, {2000, 200, false}}, 10},
		{"open-ended offsets", &sluicev1.Task{Slice: &sluicev1.Task_Offsets{Offsets: &sluicev1.OffsetRange{}}},
			[]pageRequest{{0, 500, true}, {500, 500, true}, {1000, 500, true}}, 3},
		{"pages", &sluicev1.Task{Slice: &sluicev1.Task_Pages{Pages: &sluicev1.PageRange{First: 3, Last: 4}}},
			[]pageRequest{{3, 500, false}, {4, 500, false}}, 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []pageRequest
			for pg := range pageRequests(tt.task, src) {
				got = append(got, pg)
				if len(got) == tt.limit {
					break
				}
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("pages %v, want %v", got, tt.want)
			}
		})
	}
}
