package config_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/sethvargo/go-envconfig"

	"github.com/sluicedata/sluice/pkg/config"
)

type testConfig struct {
	Addr    string        `env:"ADDR, default=:8080"`
	Timeout time.Duration `env:"TIMEOUT, default=5s"`
	Token   config.Secret `env:"TOKEN"`
	Nested  struct {
		Size int `env:"SIZE, default=10"`
	} `env:", prefix=NESTED_"`
}

func (c *testConfig) Validate() error {
	var p config.Problems
	if c.Timeout <= 0 {
		p.Addf("TIMEOUT", "must be positive")
	}
	if c.Nested.Size > 100 {
		p.Addf("NESTED_SIZE", "at most 100, got %d", c.Nested.Size)
	}
	return p.Err()
}

func TestLoad(t *testing.T) {
	tests := []struct {
		name    string
		env     map[string]string
		wantErr []string
		check   func(testConfig) bool
	}{
		{
			name:  "defaults",
			env:   map[string]string{},
			check: func(c testConfig) bool { return c.Addr == ":8080" && c.Timeout == 5*time.Second && c.Nested.Size == 10 },
		},
		{
			name:  "prefixed and nested variables",
			env:   map[string]string{"SLUICE_ADDR": ":9", "SLUICE_NESTED_SIZE": "7", "SLUICE_TOKEN": "t0k"},
			check: func(c testConfig) bool { return c.Addr == ":9" && c.Nested.Size == 7 && c.Token.Reveal() == "t0k" },
		},
		{
			name:    "unprefixed variables are ignored",
			env:     map[string]string{"ADDR": ":1", "SLUICE_TIMEOUT": "-1s", "SLUICE_NESTED_SIZE": "1000"},
			wantErr: []string{"SLUICE_TIMEOUT: must be positive", "SLUICE_NESTED_SIZE: at most 100, got 1000"},
		},
		{
			name:    "decode errors name the variable",
			env:     map[string]string{"SLUICE_TIMEOUT": "soon"},
			wantErr: []string{`SLUICE_TIMEOUT: time: invalid duration "soon"`},
		},
		{
			name:    "decode errors in nested structs name the prefixed variable",
			env:     map[string]string{"SLUICE_NESTED_SIZE": "ten"},
			wantErr: []string{"SLUICE_NESTED_SIZE: "},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var cfg testConfig
			err := config.Load(context.Background(), envconfig.MapLookuper(tt.env), &cfg)
			gotErr := ""
			if err != nil {
				gotErr = err.Error()
			}
			if (err != nil) != (len(tt.wantErr) > 0) {
				t.Fatalf("Load error = %v, want errors %v", err, tt.wantErr)
			}
			for _, want := range tt.wantErr {
				if !strings.Contains(gotErr, want) {
					t.Errorf("error %q lacks %q", gotErr, want)
				}
			}
			if tt.check != nil && !tt.check(cfg) {
				t.Errorf("loaded %+v", cfg)
			}
		})
	}
}

func TestSecretNeverPrints(t *testing.T) {
	s := config.Secret("hunter2")
	var logs bytes.Buffer
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("configured", "password", s)
	js, err := json.Marshal(struct{ P config.Secret }{s})
	if err != nil {
		t.Fatal(err)
	}
	outputs := map[string]string{
		"%v":     fmt.Sprintf("%v", s),
		"%s":     fmt.Sprintf("%s", s), //lint:ignore S1025 the test is of what %s prints
		"%#v":    fmt.Sprintf("%#v", s),
		"%+v":    fmt.Sprintf("%+v", struct{ P config.Secret }{s}),
		"error":  fmt.Errorf("connect with %v", s).Error(),
		"slog":   logs.String(),
		"json":   string(js),
		"joined": errors.Join(fmt.Errorf("%s", s)).Error(),
	}
	for name, out := range outputs {
		t.Run(name, func(t *testing.T) {
			if strings.Contains(out, "hunter2") || !strings.Contains(out, "[redacted]") {
				t.Fatalf("%s printed %q", name, out)
			}
		})
	}
	if s.Reveal() != "hunter2" {
		t.Fatal("Reveal lost the value")
	}
}
