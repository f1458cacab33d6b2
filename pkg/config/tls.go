package config

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
)

// TLSFiles are the files and the name a TLS client verifies its server with and shows itself by:
// SLUICE_…_TLS_CA_FILE, _CERT_FILE, _KEY_FILE and _SERVER_NAME. Without a CA file the system's roots
// verify the server; the server is always verified.
type TLSFiles struct {
	// CAFile holds the PEM certificates of the authorities that sign the servers' certificates.
	CAFile string `env:"CA_FILE"`
	// CertFile and KeyFile are the client's certificate and key (PEM), for servers that ask for one.
	CertFile string `env:"CERT_FILE"`
	KeyFile  string `env:"KEY_FILE"`
	// ServerName is the name the server's certificate must hold; empty: the host dialled.
	ServerName string `env:"SERVER_NAME"`
}

// IsZero reports whether no TLS setting is given.
func (f TLSFiles) IsZero() bool { return f == TLSFiles{} }

// Validate reports the problems of the TLS settings, named with prefix ("KAFKA_TLS_"), when enabled
// says TLS is on; settings given while it is off are a problem too, since they would be ignored.
func (f TLSFiles) Validate(p *Problems, prefix, enabledVar string, enabled bool) {
	if !enabled {
		if !f.IsZero() {
			p.Addf(enabledVar, "is off, but %s… settings are given: set %s%s=true", prefix, Prefix, enabledVar)
		}
		return
	}
	if (f.CertFile == "") != (f.KeyFile == "") {
		p.Addf(prefix+"CERT_FILE", "and %sKEY_FILE go together: give both or neither", prefix)
	}
	if _, err := f.Config(); err != nil {
		p.Addf(prefix+"CA_FILE", "%v", err)
	}
}

// Config returns the TLS client configuration: TLS 1.2 or later, the server verified against the CA
// file (or the system's roots), the client certificate when given. Files are read when it is called.
func (f TLSFiles) Config() (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: f.ServerName}
	if f.CAFile != "" {
		pem, err := os.ReadFile(f.CAFile)
		if err != nil {
			return nil, fmt.Errorf("read the CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("the CA file %s holds no PEM certificate", f.CAFile)
		}
		cfg.RootCAs = pool
	}
	if f.CertFile != "" && f.KeyFile != "" {
		cert, err := tls.LoadX509KeyPair(f.CertFile, f.KeyFile)
		if err != nil {
			// The error of LoadX509KeyPair never holds the key.
			return nil, fmt.Errorf("load the client certificate and key: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// ReadSecret returns value, or the first line of file when value is empty and file is set; it
// names the variable of the file in its errors, never the content.
func ReadSecret(value Secret, file, fileVar string) (Secret, error) {
	if value != "" || file == "" {
		return value, nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("%s%s: %w", Prefix, fileVar, err)
	}
	line, _, _ := strings.Cut(string(b), "\n")
	line = strings.TrimSuffix(line, "\r")
	if line == "" {
		return "", fmt.Errorf("%s%s: %s is empty", Prefix, fileVar, file)
	}
	return Secret(line), nil
}

// errBoth is a secret given both as a value and as a file.
var errBoth = errors.New("set the value or the file, not both")

// CheckSecretSource reports a secret given both as a value and as a file.
func CheckSecretSource(p *Problems, value Secret, file, fileVar string) {
	if value != "" && file != "" {
		p.Addf(fileVar, "%v", errBoth)
	}
}
