package pemfile

import (
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgeinfer/edgeinfer/internal/mosquitto"
)

func TestCertPoolVerifiesWhatItsCAIssuedAndNamesAFileWithoutCertificates(t *testing.T) {
	dir := t.TempDir()
	ca, other := mosquitto.NewCA(t, dir, "ca"), mosquitto.NewCA(t, dir, "other")
	certFile, keyFile := ca.Issue(t, dir, "server", true)
	b, err := os.ReadFile(certFile)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(b)
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		file string
		ok   bool
	}{{ca.File, true}, {other.File, false}} {
		pool, err := CertPool(c.file)
		if err != nil {
			t.Fatal(err)
		}
		_, err = cert.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
		if (err == nil) != c.ok {
			t.Errorf("pool of %s: verify gave %v, want ok=%v", c.file, err, c.ok)
		}
	}
	if _, err := CertPool(keyFile); err == nil || !strings.Contains(err.Error(), keyFile+": no PEM certificate") {
		t.Fatalf("a key file: got %v", err)
	}
	if _, err := CertPool(filepath.Join(dir, "missing.crt")); err == nil || !strings.Contains(err.Error(), "missing.crt") {
		t.Fatalf("a missing file: got %v", err)
	}
}
