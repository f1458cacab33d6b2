package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// cert makes a certificate signed by parent (self-signed when nil) and returns it with its key.
func cert(t *testing.T, name string, parent *x509.Certificate, parentKey *ecdsa.PrivateKey, ca bool) (*x509.Certificate, *ecdsa.PrivateKey, []byte, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		DNSNames: []string{name}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		KeyUsage:    x509.KeyUsageDigitalSignature,
	}
	if ca {
		tmpl.IsCA, tmpl.BasicConstraintsValid, tmpl.KeyUsage = true, true, x509.KeyUsageCertSign
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	keyDER, _ := x509.MarshalPKCS8PrivateKey(key)
	return c, key, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
}

// TestTLSFiles verifies a server with the CA file and the server name, and shows the client
// certificate to a server that requires one.
func TestTLSFiles(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	ca, caKey, caPEM, _ := cert(t, "sluice test CA", nil, nil, true)
	_, _, serverPEM, serverKey := cert(t, "ch.internal", ca, caKey, false)
	_, _, clientPEM, clientKey := cert(t, "sluice-loader", ca, caKey, false)
	serverCert, err := tls.X509KeyPair(serverPEM, serverKey)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	var seen string
	ts := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen = r.TLS.PeerCertificates[0].Subject.CommonName
	}))
	ts.TLS = &tls.Config{Certificates: []tls.Certificate{serverCert}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool}
	ts.StartTLS()
	defer ts.Close()

	get := func(f TLSFiles) error {
		cfg, err := f.Config()
		if err != nil {
			return err
		}
		resp, err := (&http.Client{Transport: &http.Transport{TLSClientConfig: cfg}}).Get(ts.URL)
		if err == nil {
			resp.Body.Close()
		}
		return err
	}
	files := TLSFiles{CAFile: write("ca.pem", caPEM), CertFile: write("client.pem", clientPEM), KeyFile: write("client.key", clientKey), ServerName: "ch.internal"}
	if err := get(files); err != nil || seen != "sluice-loader" {
		t.Fatalf("with the CA, the client certificate and the server name: %v (client seen as %q)", err, seen)
	}
	noCert := files
	noCert.CertFile, noCert.KeyFile = "", ""
	if err := get(noCert); err == nil {
		t.Fatal("a server that requires a client certificate took a client without one")
	}
	wrongName := files
	wrongName.ServerName = "other.internal"
	if err := get(wrongName); err == nil || !strings.Contains(err.Error(), "other.internal") {
		t.Fatalf("a server name the certificate does not hold: %v", err)
	}
	noCA := files
	noCA.CAFile = ""
	if err := get(noCA); err == nil {
		t.Fatal("a server signed by an unknown CA was trusted")
	}

	var p Problems
	TLSFiles{CertFile: files.CertFile}.Validate(&p, "CLICKHOUSE_TLS_", "CLICKHOUSE_TLS", true)
	TLSFiles{CAFile: write("bad.pem", []byte("not a certificate"))}.Validate(&p, "KAFKA_TLS_", "KAFKA_TLS", true)
	err = p.Err()
	if err == nil || !strings.Contains(err.Error(), "SLUICE_CLICKHOUSE_TLS_CERT_FILE: and CLICKHOUSE_TLS_KEY_FILE go together") ||
		!strings.Contains(err.Error(), "holds no PEM certificate") {
		t.Fatalf("problems: %v", err)
	}
}
