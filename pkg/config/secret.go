package config

import "log/slog"

// redacted is what a Secret shows instead of its value.
const redacted = "[redacted]"

// Secret is a configuration value such as a password or token. It formats, logs and marshals as
// "[redacted]"; only Reveal returns the value, for the one call that needs it.
type Secret string

// Reveal returns the secret value.
func (s Secret) Reveal() string { return string(s) }

// String keeps the value out of fmt output.
func (s Secret) String() string { return s.mask() }

// GoString keeps the value out of %#v output.
func (s Secret) GoString() string { return s.mask() }

// LogValue keeps the value out of slog records.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.mask()) }

// MarshalText keeps the value out of JSON and other encodings.
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.mask()), nil }

func (s Secret) mask() string {
	if s == "" {
		return ""
	}
	return redacted
}
