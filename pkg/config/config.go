package config

import (
	"context"
	"errors"
	"fmt"
	"net"
	"reflect"
	"strconv"
	"strings"

	"github.com/sethvargo/go-envconfig"
)

// Prefix starts every variable sluice reads.
const Prefix = "SLUICE_"

// Validator is a configuration that can check itself after loading.
type Validator interface {
	Validate() error
}

// Load fills cfg from the variables that lookup finds under Prefix, applying the defaults in its
// struct tags, then validates it. Decoding errors and validation problems both name the variable.
// Production code passes envconfig.OsLookuper(); tests pass envconfig.MapLookuper.
func Load(ctx context.Context, lookup envconfig.Lookuper, cfg Validator) error {
	err := envconfig.ProcessWith(ctx, &envconfig.Config{
		Target:   cfg,
		Lookuper: envconfig.PrefixLookuper(Prefix, lookup),
	})
	if err != nil {
		return fmt.Errorf("read configuration: %w", nameVariable(reflect.TypeOf(cfg), err))
	}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("invalid configuration:\n%w", err)
	}
	return nil
}

// Problems collects validation problems, each naming the variable it concerns, so that Validate can
// report all of them at once.
type Problems struct {
	errs []error
}

// Addf records a problem with the variable name (without the SLUICE_ prefix, which it adds).
func (p *Problems) Addf(variable, format string, args ...any) {
	p.errs = append(p.errs, fmt.Errorf("%s%s: %s", Prefix, variable, fmt.Sprintf(format, args...)))
}

// Add records the problems of a nested configuration as they are.
func (p *Problems) Add(err error) {
	if err != nil {
		p.errs = append(p.errs, err)
	}
}

// AddAddresses records a problem for each entry of addrs that is not host:port with a valid port,
// and one when there is none.
func (p *Problems) AddAddresses(variable string, addrs []string) {
	if len(addrs) == 0 {
		p.Addf(variable, "at least one host:port is required")
	}
	for _, a := range addrs {
		host, port, err := net.SplitHostPort(a)
		if err != nil || host == "" {
			p.Addf(variable, "%q is not host:port", a)
			continue
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			p.Addf(variable, "%q has no valid port", a)
		}
	}
}

// Err returns every recorded problem joined, one per line, or nil.
func (p *Problems) Err() error {
	return errors.Join(p.errs...)
}

// nameVariable rewrites go-envconfig's "Field: Nested: error" into "SLUICE_NESTED_FIELD: error", so
// that a user reads the variable to fix rather than a Go field name.
func nameVariable(t reflect.Type, err error) error {
	rest := err.Error()
	prefix := Prefix
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	for t.Kind() == reflect.Struct {
		fieldName, after, ok := strings.Cut(rest, ": ")
		if !ok {
			return err
		}
		f, ok := t.FieldByName(fieldName)
		if !ok {
			return err
		}
		name, opts, _ := strings.Cut(f.Tag.Get("env"), ",")
		if name != "" {
			return fmt.Errorf("%s%s: %s", prefix, strings.TrimSpace(name), after)
		}
		for _, o := range strings.Split(opts, ",") {
			if p, ok := strings.CutPrefix(strings.TrimSpace(o), "prefix="); ok {
				prefix += p
			}
		}
		t, rest = f.Type, after
	}
	return err
}
