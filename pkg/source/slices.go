package source

import (
	"fmt"
	"strconv"
	"time"

	"github.com/sluicedata/sluice/pkg/jobspec"
	sluicev1 "github.com/sluicedata/sluice/proto/sluice/v1"
)

// windows returns the query parameters of each slice of sl, in order: [start, end) in steps, the
// last one cut at end. Validation bounds their count; a spec stored before a bound was checked
// (a schedule's) is refused here past jobspec.MaxTasks windows, before it makes more.
func windows(sl *sluicev1.Slices) ([]map[string]string, error) {
	var out []map[string]string
	tooMany := fmt.Errorf("the slices make more than %d windows: take a longer step", jobspec.MaxTasks)
	add := func(from, to string) bool {
		out = append(out, map[string]string{sl.ParamFrom: from, sl.ParamTo: to})
		return len(out) <= jobspec.MaxTasks
	}
	switch sl.GetType() {
	case sluicev1.Slices_TYPE_TIME:
		start, err1 := time.Parse(time.RFC3339, sl.Start)
		end, err2 := time.Parse(time.RFC3339, sl.End)
		step, err3 := time.ParseDuration(sl.Step)
		if err1 != nil || err2 != nil || err3 != nil || step <= 0 {
			return nil, fmt.Errorf("time slices from %q to %q by %q do not parse", sl.Start, sl.End, sl.Step)
		}
		for from := start; from.Before(end); from = from.Add(step) {
			if !add(formatTime(from, sl.Format), formatTime(minTime(from.Add(step), end), sl.Format)) {
				return nil, tooMany
			}
		}
	case sluicev1.Slices_TYPE_KEY_RANGE:
		start, err1 := strconv.ParseInt(sl.Start, 10, 64)
		end, err2 := strconv.ParseInt(sl.End, 10, 64)
		step, err3 := strconv.ParseInt(sl.Step, 10, 64)
		if err1 != nil || err2 != nil || err3 != nil || step <= 0 {
			return nil, fmt.Errorf("key slices from %q to %q by %q do not parse", sl.Start, sl.End, sl.Step)
		}
		for from := start; from < end; {
			to := end
			if uint64(end-from) > uint64(step) { // as uint64: a span past 2^63 overflows int64
				to = from + step
			}
			if !add(strconv.FormatInt(from, 10), strconv.FormatInt(to, 10)) {
				return nil, tooMany
			}
			from = to
		}
	default:
		return nil, fmt.Errorf("unknown kind of slices %v", sl.GetType())
	}
	return out, nil
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// formatTime writes t the way the slices' format says.
func formatTime(t time.Time, format string) string {
	switch format {
	case "unix":
		return strconv.FormatInt(t.Unix(), 10)
	case "unix_ms":
		return strconv.FormatInt(t.UnixMilli(), 10)
	case "", "rfc3339":
		return t.UTC().Format(time.RFC3339)
	default:
		return t.UTC().Format(jobspec.TimeFormats[format])
	}
}
