// Package ca is the mesh's own certificate authority: `griddle ca init`
// makes its key and certificate, `griddle ca issue` signs short-lived
// certificates that carry a workload's identity (meshtls.Identity) as a
// URI SAN. A certificate rewritten in place is picked up by the processes
// that use it (meshtls.Source), so renewing is running issue again before
// the old one expires. An operator who brings a CA of their own does not
// need this package.
package ca

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/griddle-mesh/griddle/internal/meshtls"
)

// ErrConfig is wrapped by every error about the CA's files or a request.
var ErrConfig = errors.New("ca: invalid request")

// File names in a CA directory and in an issued set.
const (
	CertFile   = "ca.pem"     // the CA's certificate: every process's --tls-ca
	KeyFile    = "ca-key.pem" // the CA's private key: stays where the CA runs
	LeafCert   = "cert.pem"   // an issued certificate: --tls-cert
	LeafKey    = "key.pem"    // its key: --tls-key
	LeafBundle = "ca.pem"     // the CA's certificate beside it: --tls-ca
)

// MaxTTL bounds the lifetime of an issued certificate.
const MaxTTL = 90 * 24 * time.Hour

// DefaultTTL is the lifetime of an issued certificate unless asked.
const DefaultTTL = 24 * time.Hour

// CA is a loaded authority.
type CA struct {
	cert    *x509.Certificate
	certPEM []byte
	key     *ecdsa.PrivateKey
}

// Init makes a new CA in dir (created if missing) valid for validity,
// and refuses to overwrite one that is there.
func Init(dir string, validity time.Duration) (*CA, error) {
	if validity <= 0 {
		return nil, fmt.Errorf("%w: --validity: %v, want more than 0", ErrConfig, validity)
	}
	if _, err := os.Stat(filepath.Join(dir, KeyFile)); err == nil {
		return nil, fmt.Errorf("%w: --dir: %s already holds a CA", ErrConfig, dir)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "griddle mesh CA"},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(validity),
		IsCA:                  true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		URIs:                  []*url.URL{{Scheme: "spiffe", Host: meshtls.TrustDomain}},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if err := writeAtomic(filepath.Join(dir, KeyFile), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return nil, err
	}
	if err := writeAtomic(filepath.Join(dir, CertFile), certPEM, 0o644); err != nil {
		return nil, err
	}
	return Load(dir)
}

// Load reads the CA in dir.
func Load(dir string) (*CA, error) {
	certPEM, err := os.ReadFile(filepath.Join(dir, CertFile))
	if err != nil {
		return nil, fmt.Errorf("%w: --dir: %w", ErrConfig, err)
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, KeyFile))
	if err != nil {
		return nil, fmt.Errorf("%w: --dir: %w", ErrConfig, err)
	}
	cb, _ := pem.Decode(certPEM)
	kb, _ := pem.Decode(keyPEM)
	if cb == nil || kb == nil {
		return nil, fmt.Errorf("%w: --dir: %s or %s is not PEM", ErrConfig, CertFile, KeyFile)
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: --dir: %s: %w", ErrConfig, CertFile, err)
	}
	key, err := x509.ParseECPrivateKey(kb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: --dir: %s: %w", ErrConfig, KeyFile, err)
	}
	if !cert.IsCA || !key.PublicKey.Equal(cert.PublicKey) {
		return nil, fmt.Errorf("%w: --dir: %s is not the CA certificate of %s", ErrConfig, CertFile, KeyFile)
	}
	return &CA{cert: cert, certPEM: certPEM, key: key}, nil
}

// Request is one certificate to issue.
type Request struct {
	Identity meshtls.Identity
	// TTL is how long it is valid (0: DefaultTTL; at most MaxTTL, and not
	// past the CA's own expiry).
	TTL time.Duration
	// Hosts are DNS names or IP addresses to add as SANs, for peers that
	// check addresses rather than identities (optional).
	Hosts []string
}

// Validate reports a request that cannot be issued, naming the flag.
func (r Request) Validate() error {
	if err := r.Identity.Validate(); err != nil {
		return fmt.Errorf("--service, --version: %w", err)
	}
	if r.TTL < 0 || r.TTL > MaxTTL {
		return fmt.Errorf("%w: --ttl: %v, want more than 0 and at most %v", ErrConfig, r.TTL, MaxTTL)
	}
	for i, h := range r.Hosts {
		if h == "" {
			return fmt.Errorf("%w: --host[%d]: empty", ErrConfig, i)
		}
	}
	return nil
}

// Issued is a signed certificate and its key, PEM-encoded.
type Issued struct {
	Cert, Key, CA []byte
	Leaf          *x509.Certificate
}

// Issue signs a certificate for r with a fresh key. It serves as a
// server and as a client (every mesh link is mutual).
func (c *CA) Issue(r Request) (*Issued, error) {
	if err := r.Validate(); err != nil {
		return nil, err
	}
	ttl := r.TTL
	if ttl == 0 {
		ttl = DefaultTTL
	}
	now := time.Now()
	notAfter := now.Add(ttl)
	if notAfter.After(c.cert.NotAfter) {
		return nil, fmt.Errorf("%w: --ttl: %v runs past the CA's expiry (%s)", ErrConfig, ttl, c.cert.NotAfter.Format(time.RFC3339))
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: r.Identity.String()},
		NotBefore:    now.Add(-time.Minute), // clocks a little behind
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs:         []*url.URL{r.Identity.URI()},
	}
	for _, h := range r.Hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, &key.PublicKey, c.key)
	if err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	return &Issued{
		Cert: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		Key:  pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}),
		CA:   c.certPEM,
		Leaf: leaf,
	}, nil
}

// Write puts the certificate, its key and the CA's certificate into dir
// (LeafCert, LeafKey, LeafBundle) and returns their paths. Each file is
// replaced by a rename, so a process reading them sees the old or the new
// file, never half of one; it may read a new key beside the old
// certificate for a moment, which meshtls.Source refuses and reads again.
func (is *Issued) Write(dir string) (meshtls.Files, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return meshtls.Files{}, fmt.Errorf("ca: %w", err)
	}
	f := meshtls.Files{Cert: filepath.Join(dir, LeafCert), Key: filepath.Join(dir, LeafKey), CA: filepath.Join(dir, LeafBundle)}
	for _, w := range []struct {
		path string
		b    []byte
		mode os.FileMode
	}{{f.CA, is.CA, 0o644}, {f.Key, is.Key, 0o600}, {f.Cert, is.Cert, 0o644}} {
		if err := writeAtomic(w.path, w.b, w.mode); err != nil {
			return meshtls.Files{}, err
		}
	}
	return f, nil
}

func writeAtomic(path string, b []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("ca: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return fmt.Errorf("ca: %w", err)
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return fmt.Errorf("ca: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("ca: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("ca: %w", err)
	}
	return nil
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return n
}
