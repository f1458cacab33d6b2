package demosource_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"

	"github.com/sluicedata/sluice/pkg/demosource"
)

// Record is the same for the same index and size; a small size leaves the pad empty.
func ExampleRecord() {
	fmt.Println(string(demosource.Record(7, 0)))
	fmt.Println(string(demosource.Record(7, 120)))
	fmt.Println(len(demosource.Record(123456, 300)))
	// Output:
	// {"id":7,"name":"user-7","email":"user-7@example.com","created_at":"2020-01-01T00:00:07Z","pad":""}
	// {"id":7,"name":"user-7","email":"user-7@example.com","created_at":"2020-01-01T00:00:07Z","pad":"HgQajopwzNMhKItFidxakg"}
	// 300
}

// A source of five records, asked for its second page of two.
func ExampleNew() {
	cfg := demosource.DefaultConfig()
	cfg.Records, cfg.RecordSize = 5, 1
	srv, err := demosource.New(cfg, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	ts := httptest.NewServer(srv.Handler())
	defer ts.Close()

	resp, err := http.Get(ts.URL + "/api/users?page=2&limit=2")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	fmt.Println(resp.Status)
	fmt.Println(string(body))
	fmt.Printf("%+v\n", srv.Stats())
	// Output:
	// 200 OK
	// {"data":[{"id":2,"name":"user-2","email":"user-2@example.com","created_at":"2020-01-01T00:00:02Z","pad":""},{"id":3,"name":"user-3","email":"user-3@example.com","created_at":"2020-01-01T00:00:03Z","pad":""}],"total":5,"offset":2,"limit":2}
	// {Requests:1 ByStatus:map[200:1] EarlyRequests:0 PagesServed:1 RecordsServed:2 PagesServedAgain:0 Truncated:0 Slow:0 TokensIssued:0 Unauthorized:0}
}
