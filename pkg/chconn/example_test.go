package chconn_test

import (
	"fmt"

	"github.com/sluicedata/sluice/pkg/chconn"
)

// Debian's ClickHouse 18.16 has none of the newer features; code checks Features before using one.
func ExampleFeaturesOf() {
	old := chconn.FeaturesOf(chconn.Version{Major: 18, Minor: 16, Patch: 1})
	current := chconn.FeaturesOf(chconn.Version{Major: 25, Minor: 8})
	fmt.Println(old.InsertDeduplicationToken, current.InsertDeduplicationToken)
	// Output: false true
}
