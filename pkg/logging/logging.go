package logging

import (
	"fmt"
	"io"
	"log/slog"
	"strings"
)

// Config is the logging part of every service's configuration.
type Config struct {
	// Level is debug, info, warn or error.
	Level string `env:"LEVEL, default=info"`
}

// Validate reports a level that New would reject.
func (c Config) Validate() error {
	if _, err := parseLevel(c.Level); err != nil {
		return fmt.Errorf("SLUICE_LOG_LEVEL: %w", err)
	}
	return nil
}

// New returns a JSON logger writing to w at the configured level, with the service name on every line.
func New(w io.Writer, cfg Config, service string) (*slog.Logger, error) {
	level, err := parseLevel(cfg.Level)
	if err != nil {
		return nil, err
	}
	h := slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level})
	return slog.New(h).With(slog.String("service", service)), nil
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(strings.TrimSpace(s))); err != nil {
		return 0, fmt.Errorf("unknown log level %q (use debug, info, warn or error)", s)
	}
	return l, nil
}
