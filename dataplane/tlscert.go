package dataplane

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// certCheckEvery is how often a handshake looks whether the certificate
// files changed: a renewed certificate is served within it.
const certCheckEvery = time.Second

// certReloader serves the client port's TLS certificate, read again from
// its files when they change (a certificate renewed by cert-manager or
// certbot is served without a restart). A renewal that cannot be read (the
// key not yet written beside the certificate, say) keeps the previous
// certificate in service, and is tried again at the next check.
type certReloader struct {
	certFile, keyFile string
	log               *slog.Logger

	mu      sync.Mutex
	cert    *tls.Certificate
	stamp   [2]fileStamp // of certFile and keyFile when cert was read
	checked time.Time
	failed  [2]fileStamp // the stamps of the last renewal that failed to load
}

// fileStamp tells whether a file changed.
type fileStamp struct {
	mod  time.Time
	size int64
}

// newCertReloader reads the certificate and key, which must be valid.
func newCertReloader(certFile, keyFile string, log *slog.Logger) (*certReloader, error) {
	r := &certReloader{certFile: certFile, keyFile: keyFile, log: log}
	stamp, err := r.stamps()
	if err != nil {
		return nil, err
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("TLS certificate %s and key %s: %w", certFile, keyFile, err)
	}
	r.cert, r.stamp, r.checked = &cert, stamp, time.Now()
	return r, nil
}

func (r *certReloader) stamps() ([2]fileStamp, error) {
	var out [2]fileStamp
	for i, name := range []string{r.certFile, r.keyFile} {
		fi, err := os.Stat(name)
		if err != nil {
			return out, fmt.Errorf("TLS certificate: %w", err)
		}
		out[i] = fileStamp{mod: fi.ModTime(), size: fi.Size()}
	}
	return out, nil
}

// get is tls.Config.GetCertificate.
func (r *certReloader) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if now := time.Now(); now.Sub(r.checked) >= certCheckEvery {
		r.checked = now
		r.reloadLocked()
	}
	return r.cert, nil
}

// reloadLocked reads the files again if they changed since the
// certificate in service was read.
func (r *certReloader) reloadLocked() {
	stamp, err := r.stamps()
	if err != nil {
		r.log.Warn("TLS certificate files unreadable; serving the one loaded before", "err", err)
		return
	}
	if stamp == r.stamp || stamp == r.failed {
		return
	}
	cert, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		r.failed = stamp
		r.log.Warn("TLS certificate changed but does not load; serving the one loaded before", "cert", r.certFile, "key", r.keyFile, "err", err)
		return
	}
	r.cert, r.stamp = &cert, stamp
	r.log.Info("TLS certificate reloaded", "cert", r.certFile)
}
