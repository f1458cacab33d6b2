package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sethvargo/go-envconfig"
	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"

	"github.com/sluicedata/sluice/pkg/chconn"
	"github.com/sluicedata/sluice/pkg/chsink"
	"github.com/sluicedata/sluice/pkg/delivery"
	"github.com/sluicedata/sluice/pkg/jobspec"
	"github.com/sluicedata/sluice/pkg/pipeline"
	"github.com/sluicedata/sluice/pkg/source"
	sluicev1 "github.com/sluicedata/sluice/proto/sluice/v1"
)

// inferCmd reads the first pages of a job's source and prints the typed table its records call for:
// the CREATE TABLE that create: true would run, and the sink columns to put in the spec.
func (c *cli) inferCmd() *cobra.Command {
	var pages int
	var version, database string
	cmd := &cobra.Command{
		Use:   "infer FILE",
		Short: "sample the first pages of a job's source and print the typed table they call for: its CREATE TABLE and the sink columns",
		Args:  cobra.ExactArgs(1),
	}
	cmd.Flags().IntVar(&pages, "pages", 3, "how many pages of the first slice to sample")
	cmd.Flags().StringVar(&version, "clickhouse-version", "18.16", "the server version the types are for: Bool from 21.12, DateTime64 from 20.1")
	cmd.Flags().StringVar(&database, "database", "sluice", "the database in the CREATE TABLE")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if pages < 1 {
			return &exitError{code: exitUsage, err: fmt.Errorf("--pages %d: want 1 or more", pages)}
		}
		code, err := infer(cmd.Context(), args[0], pages, version, database, c.lookup, c.stdout, c.stderr)
		if err != nil {
			return &exitError{code: code, err: err}
		}
		return nil
	}
	return cmd
}

func infer(ctx context.Context, file string, pages int, version, database string, lookup envconfig.Lookuper, stdout, stderr io.Writer) (int, error) {
	v, err := chconn.ParseVersion(version)
	if err != nil {
		return exitUsage, fmt.Errorf("--clickhouse-version: %w", err)
	}
	doc, err := os.ReadFile(file)
	if err != nil {
		return exitFailed, err
	}
	spec, err := jobspec.Parse(doc)
	if err != nil {
		return exitFailed, err
	}
	sample, err := sampleSource(ctx, spec, pages, lookup, stderr)
	if err != nil {
		return exitFailed, err
	}
	if sample.Records == 0 {
		return exitFailed, fmt.Errorf("the first %d pages of %s hold no records", pages, spec.Name)
	}
	for name := range sample.Skipped {
		fmt.Fprintf(stderr, "field %q: not a column name; left out\n", name)
	}
	features := chconn.FeaturesOf(v)
	p := &sluicev1.SinkSchema{Table: spec.Sink.Table, Create: true, Columns: sample.Columns(features.Bool, features.DateTime64)}
	chsink.Complete(p, spec.Name)
	sink, probs := chsink.NewSink(p)
	if len(probs) > 0 {
		return exitFailed, fmt.Errorf("the sampled fields make no table: %v", probs)
	}
	schema, err := sink.CreateSchema()
	if err != nil {
		return exitFailed, err
	}
	fmt.Fprintf(stdout, "-- %d records sampled from the first pages of %s\n%s;\n\n", sample.Records, spec.Name,
		schema.CreateSQL(database, spec.Sink.Table))
	var cols []jobspec.SinkColumn
	for _, c := range p.Columns {
		if !strings.HasPrefix(c.From, "$") {
			cols = append(cols, jobspec.SinkColumn{Name: c.Name, Type: c.Type})
		}
	}
	type sinkDoc struct {
		Table   string               `yaml:"table"`
		Create  bool                 `yaml:"create"`
		Columns []jobspec.SinkColumn `yaml:"columns"`
	}
	fmt.Fprintln(stdout, "# the sink for the job spec")
	enc := yaml.NewEncoder(stdout)
	enc.SetIndent(2)
	if err := enc.Encode(map[string]sinkDoc{"sink": {Table: spec.Sink.Table, Create: true, Columns: cols}}); err != nil {
		return exitFailed, err
	}
	return exitOK, enc.Close()
}

// sampleSource reads up to pages pages of the first slice of spec's source, with progress on
// stderr. Secrets resolve from sluicectl's own environment (SOURCE_… variables).
func sampleSource(ctx context.Context, spec *jobspec.Spec, pages int, lookup envconfig.Lookuper, stderr io.Writer) (*chsink.Sample, error) {
	log := slog.New(slog.DiscardHandler)
	reg := prometheus.NewRegistry()
	retry := delivery.NewRetrier(reg, log)
	pools := &source.Pools{MaxConns: 1}
	defer pools.Close()
	secrets := source.Secrets{Env: lookup.Lookup}
	// The secrets are the user's own, in sluicectl's environment: they go where the spec says unless
	// SLUICE_SECRET_HOSTS binds them, as it does for the services.
	var allowed func(name, host string) bool
	if v, ok := lookup.Lookup("SLUICE_SECRET_HOSTS"); ok && v != "" {
		hosts, err := source.ParseSecretHosts(v)
		if err != nil {
			return nil, fmt.Errorf("SLUICE_SECRET_HOSTS: %w", err)
		}
		secrets.Hosts = hosts
		allowed = secrets.Allowed // bound to the secrets with their hosts
	}
	env := source.Env{
		Fetcher: &source.Fetcher{Client: &http.Client{CheckRedirect: source.SameHostRedirects}, MaxBody: 64 << 20, MaxRecords: 100_000,
			Metrics: source.NewMetrics(reg, "sluicectl"), Retry: retry, Now: time.Now},
		Lookup: secrets.Lookup, Allowed: allowed,
		Backoff:      pipeline.Backoff{Base: 200 * time.Millisecond, Max: 5 * time.Second},
		PageDeadline: time.Minute,
		Tokens:       &source.Tokens{Client: &http.Client{CheckRedirect: source.SameHostRedirects}, Now: time.Now},
		Postgres:     pools,
	}
	proto := spec.SourceProto()
	src, err := source.New(proto, env)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(stderr, "planning %s\n", spec.Name)
	plan, err := src.Plan(ctx, 1)
	if err != nil {
		return nil, fmt.Errorf("plan %s: %w", spec.Name, err)
	}
	sample := &chsink.Sample{}
	if len(plan.Slices) == 0 {
		return sample, nil
	}
	task := plan.Slices[0]
	task.Source, task.JobId, task.TaskId = proto, spec.Name+"-infer", spec.Name+"-infer-t0000"
	r, err := src.Open(task)
	if err != nil {
		return nil, err
	}
	for page := 1; page <= pages; page++ {
		read, more, err := r.Next(ctx)
		if err != nil {
			return nil, fmt.Errorf("read page %d of %s: %w", page, spec.Name, err)
		}
		for _, rec := range read.Records {
			if err := sample.Add(rec); err != nil {
				return nil, fmt.Errorf("page %d: %w", page, err)
			}
		}
		fmt.Fprintf(stderr, "page %d: %d records (%d sampled)\n", page, len(read.Records), sample.Records)
		if !more {
			break
		}
	}
	return sample, nil
}
