package chconn

import (
	"fmt"
	"strconv"
	"strings"
)

// Version is a ClickHouse server version.
type Version struct {
	Major, Minor, Patch uint64
}

func (v Version) String() string { return fmt.Sprintf("%d.%d.%d", v.Major, v.Minor, v.Patch) }

// AtLeast reports whether v is major.minor or later.
func (v Version) AtLeast(major, minor uint64) bool {
	return v.Major > major || (v.Major == major && v.Minor >= minor)
}

// Features are the ClickHouse capabilities sluice uses when the server has them. Debian's 18.16 has
// none of them; each field says from which release on it exists.
type Features struct {
	// LowCardinality columns, production-ready from 19.0.
	LowCardinality bool
	// DateTime64 columns (sub-second timestamps), from 20.1.
	DateTime64 bool
	// NonReplicatedDeduplication: the MergeTree setting non_replicated_deduplication_window, which
	// makes a plain MergeTree drop a repeated insert block, from 20.10.
	NonReplicatedDeduplication bool
	// AsyncInsert: the async_insert setting, from 21.11. Later releases turned it on by default for
	// some paths, so inserters set it explicitly where it exists.
	AsyncInsert bool
	// InsertDeduplicationToken: the insert_deduplication_token setting, from 22.2.
	InsertDeduplicationToken bool
	// Bool columns, from 21.12 (UInt8 holds booleans before).
	Bool bool
}

// FeaturesOf returns what a server of version v supports.
func FeaturesOf(v Version) Features {
	return Features{
		LowCardinality:             v.AtLeast(19, 0),
		DateTime64:                 v.AtLeast(20, 1),
		NonReplicatedDeduplication: v.AtLeast(20, 10),
		AsyncInsert:                v.AtLeast(21, 11),
		InsertDeduplicationToken:   v.AtLeast(22, 2),
		Bool:                       v.AtLeast(21, 12),
	}
}

// ParseVersion reads a version such as 18.16, 24.8.4 or 25.3.1.2 (the parts past the third are
// ignored).
func ParseVersion(s string) (Version, error) {
	var v Version
	parts := strings.Split(strings.TrimSpace(s), ".")
	nums := []*uint64{&v.Major, &v.Minor, &v.Patch}
	if len(parts) < 2 {
		return Version{}, fmt.Errorf("version %q: want major.minor, such as 24.8", s)
	}
	for i, p := range parts[:min(len(parts), 3)] {
		n, err := strconv.ParseUint(p, 10, 64)
		if err != nil {
			return Version{}, fmt.Errorf("version %q: want major.minor, such as 24.8", s)
		}
		*nums[i] = n
	}
	return v, nil
}
