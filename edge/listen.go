package edge

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// connLimit caps the connections the edge holds open at once, over all of
// its listeners: past the cap a new connection is answered at once (a 503
// on the plain port, nothing on the TLS one) and closed, so a client that
// opens thousands of idle connections takes no more than its share.
type connLimit struct {
	max    int64
	open   atomic.Int64
	denied atomic.Int64
}

// limitListener hands out connections within the cap.
type limitListener struct {
	net.Listener
	lim   *connLimit
	plain bool // answer refused connections with a 503
}

var connsFull = []byte("HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nRetry-After: 1\r\nContent-Length: 0\r\n\r\n")

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.lim.open.Add(1) > l.lim.max {
			l.lim.open.Add(-1)
			l.lim.denied.Add(1)
			if l.plain {
				_ = c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
				_, _ = c.Write(connsFull)
			}
			_ = c.Close()
			continue
		}
		return &limitedConn{Conn: c, lim: l.lim}, nil
	}
}

type limitedConn struct {
	net.Conn
	lim  *connLimit
	once sync.Once
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.lim.open.Add(-1) })
	return err
}

// certReloader serves the certificate in a pair of PEM files and loads it
// again when either file changes (checked at most once a second, on the
// handshakes that follow); a pair that fails to load leaves the previous
// certificate in use and is logged.
type certReloader struct {
	certFile, keyFile string
	log               *slog.Logger

	mu      sync.Mutex
	cert    *tls.Certificate
	stamp   string // modification times and sizes of the pair loaded
	checked time.Time
}

func newCertReloader(certFile, keyFile string, log *slog.Logger) (*certReloader, error) {
	r := &certReloader{certFile: certFile, keyFile: keyFile, log: log}
	if err := r.load(); err != nil {
		return nil, err
	}
	return r, nil
}

func (r *certReloader) fileStamp() (string, error) {
	var s string
	for _, f := range []string{r.certFile, r.keyFile} {
		fi, err := os.Stat(f)
		if err != nil {
			return "", err
		}
		s += fmt.Sprintf("%d/%d;", fi.ModTime().UnixNano(), fi.Size())
	}
	return s, nil
}

// load reads the pair; called with r.mu held or before r is shared.
func (r *certReloader) load() error {
	stamp, err := r.fileStamp()
	if err != nil {
		return fmt.Errorf("edge: --https-cert, --https-key: %w", err)
	}
	c, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		return fmt.Errorf("edge: --https-cert, --https-key: %w", err)
	}
	r.cert, r.stamp = &c, stamp
	return nil
}

// GetCertificate is tls.Config.GetCertificate.
func (r *certReloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if now := time.Now(); now.Sub(r.checked) >= time.Second {
		r.checked = now
		if stamp, err := r.fileStamp(); err == nil && stamp != r.stamp {
			if err := r.load(); err != nil {
				r.stamp = stamp // retried once either file changes again
				r.log.Warn("edge: new certificate not loaded; serving the previous one", "err", err)
			} else {
				r.log.Info("edge: certificate reloaded", "cert", r.certFile)
			}
		}
	}
	if r.cert == nil {
		return nil, errors.New("edge: no certificate")
	}
	return r.cert, nil
}
