// Package meshtls loads the certificates with which edges and sidecars
// authenticate each other on tls+tcp:// sockets: every party presents a
// certificate signed by the mesh's CA and accepts only peers that do
// (mutual TLS, TLS 1.3).
package meshtls

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
)

// ErrConfig is wrapped by every configuration error.
var ErrConfig = errors.New("meshtls: invalid configuration")

// Files names the PEM files of one process: its certificate and key, and
// the CA that signs every certificate of the mesh. All three or none.
type Files struct {
	Cert, Key, CA string
}

// Enabled reports whether any file is set.
func (f Files) Enabled() bool { return f.Cert != "" || f.Key != "" || f.CA != "" }

// Validate reports a partial configuration, naming the missing flag.
func (f Files) Validate() error {
	if !f.Enabled() {
		return nil
	}
	for flag, v := range map[string]string{"--tls-cert": f.Cert, "--tls-key": f.Key, "--tls-ca": f.CA} {
		if v == "" {
			return fmt.Errorf("%w: %s: required with the other --tls flags", ErrConfig, flag)
		}
	}
	return nil
}

// Server is the configuration of a listener: it requires and verifies
// the peer's certificate. Nil, nil when TLS is not enabled.
func (f Files) Server() (*tls.Config, error) {
	cert, pool, err := f.load()
	if err != nil || cert == nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{*cert},
		ClientCAs:    pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
	}, nil
}

// Client is the configuration of a dialer: it presents the certificate and
// verifies the peer's against the CA (and its address). Nil, nil when TLS
// is not enabled.
func (f Files) Client() (*tls.Config, error) {
	cert, pool, err := f.load()
	if err != nil || cert == nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{*cert},
		RootCAs:      pool,
	}, nil
}

func (f Files) load() (*tls.Certificate, *x509.CertPool, error) {
	if err := f.Validate(); err != nil || !f.Enabled() {
		return nil, nil, err
	}
	cert, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: --tls-cert, --tls-key: %w", ErrConfig, err)
	}
	pem, err := os.ReadFile(f.CA)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: --tls-ca: %w", ErrConfig, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, nil, fmt.Errorf("%w: --tls-ca: %s holds no PEM certificate", ErrConfig, f.CA)
	}
	return &cert, pool, nil
}
