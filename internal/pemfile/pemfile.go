// Package pemfile reads the PEM files that TLS settings name: the MQTT
// client's ca_file (daemon/bus) and the embedded broker's client_ca_file
// (daemon/broker).
package pemfile

import (
	"crypto/x509"
	"fmt"
	"os"
)

// CertPool reads the certificates of the PEM file at path into a pool. A
// file holding no certificate is an error naming it.
func CertPool(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s: no PEM certificate in it", path)
	}
	return pool, nil
}
