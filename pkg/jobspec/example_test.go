package jobspec_test

import (
	"errors"
	"fmt"

	"github.com/sluicedata/sluice/pkg/jobspec"
)

func ExampleParse() {
	spec, err := jobspec.Parse([]byte(`
name: users
source:
  url: http://127.0.0.1:8081/api/users
  records_path: data
  key: id
  headers: {Authorization: "Bearer ${SOURCE_TOKEN}"}
tasks: 16
sink: {table: users}
`))
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(spec.Source.Pagination.Type, spec.Source.Pagination.PageSize, spec.Source.Timeout)

	// The extractor expands ${VAR} references from its environment (os.LookupEnv in production).
	env := map[string]string{"SOURCE_TOKEN": "t0ken"}
	headers, err := jobspec.ExpandHeaders(spec.Source.Headers, func(name string) (string, bool) {
		v, ok := env[name]
		return v, ok
	})
	fmt.Println(headers["Authorization"], err)

	// A bad spec is rejected with every problem and its path.
	_, err = jobspec.Parse([]byte(`
name: Users
source:
  url: http://127.0.0.1:8081/api/users
  pagination: {pgae_size: 500}
tasks: "16"
sink: {table: users}
`))
	var invalid *jobspec.Error
	fmt.Println(errors.As(err, &invalid), len(invalid.Problems))
	fmt.Println(err)
	// Output:
	// offset 100 30s
	// Bearer t0ken <nil>
	// true 4
	// name: must be 1 to 63 lower-case letters, digits, '_' or '-', starting with a letter or digit
	// source.key: required
	// source.pagination.pgae_size: unknown field
	// tasks: must be an integer
}
