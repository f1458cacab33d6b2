package chsink

import (
	"context"
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/ClickHouse/clickhouse-go/v2"

	"github.com/sluicedata/sluice/pkg/delivery"
)

// TestClassify: every ClickHouse error has one class; a code none of the lists holds is transient
// with the reason Unclassified, which the loader bounds, never a plain transient one that it
// retries for good.
func TestClassify(t *testing.T) {
	ex := func(code int32) error {
		return fmt.Errorf("insert: %w", &clickhouse.Exception{Code: code, Message: "m"})
	}
	for _, c := range []struct {
		err    error
		class  delivery.Class
		reason string
	}{
		{ex(60), delivery.Schema, "schema"},
		{ex(16), delivery.Schema, "schema"},
		{ex(27), delivery.Data, "data"},
		{ex(469), delivery.Data, "data"},
		{ex(252), delivery.Transient, "too_many_parts"},
		{ex(319), delivery.Transient, "clickhouse_error"},
		{ex(242), delivery.Transient, "clickhouse_error"},
		{ex(999), delivery.Transient, "clickhouse_error"},
		{ex(395), delivery.Transient, Unclassified}, // a materialized view's throwIf
		{ex(36), delivery.Transient, Unclassified},
		{ex(43), delivery.Transient, Unclassified},
		{ex(241), delivery.Transient, Unclassified},
		{ex(49), delivery.Transient, Unclassified},
		{io.ErrUnexpectedEOF, delivery.Transient, "network"},
		{context.DeadlineExceeded, delivery.Transient, "timeout"},
		{errors.New("something else"), delivery.Transient, "other"},
	} {
		got := Classify(c.err)
		if delivery.ClassOf(got) != c.class || delivery.ReasonOf(got) != c.reason {
			t.Errorf("%v: %v/%s, want %v/%s", c.err, delivery.ClassOf(got), delivery.ReasonOf(got), c.class, c.reason)
		}
	}
}
