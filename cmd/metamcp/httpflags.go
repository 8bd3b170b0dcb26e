package main

import (
	"errors"
	"fmt"
	"time"

	"github.com/spf13/pflag"

	"github.com/metamcp/metamcp/dataplane"
)

// httpFlags are the flags of the client port's HTTP server, shared by
// `metamcp dataplane` and `metamcp dev`.
type httpFlags struct {
	readHeaderTimeout time.Duration
	bodyTimeout       time.Duration
	idleTimeout       time.Duration
	writeTimeout      time.Duration
	maxHeaderKiB      int
	maxConns          int
	bodyBudgetMiB     int
	tlsCert, tlsKey   string
	h2c               bool
}

func (f *httpFlags) register(fl *pflag.FlagSet) {
	fl.DurationVar(&f.readHeaderTimeout, "http-read-header-timeout", dataplane.DefaultReadHeaderTimeout, "longest a client may take to send a request head, and to send its first request on a new connection (connections opened and left unused are closed after it)")
	fl.DurationVar(&f.bodyTimeout, "http-body-timeout", dataplane.DefaultBodyTimeout, "longest a client may take to send a request body, from the end of its head; past it the request is cut")
	fl.DurationVar(&f.idleTimeout, "http-idle-timeout", dataplane.DefaultIdleTimeout, "close a keep-alive client connection without a request for this long (keep it above your load balancer's idle timeout)")
	fl.DurationVar(&f.writeTimeout, "http-write-timeout", dataplane.DefaultWriteTimeout, "longest the writing of an answer may take, from its first byte, when it is not an event stream (streams have no deadline); a client that stops reading is cut after it")
	fl.IntVar(&f.maxHeaderKiB, "http-max-header", dataplane.DefaultMaxHeaderBytes>>10, "KiB a request head may take (431 beyond)")
	fl.IntVar(&f.maxConns, "http-max-conns", dataplane.DefaultMaxConns, "client connections served at once; further ones wait in the listen backlog until one closes (keep it below the process's file limit, which upstreams, Redis and the spool share)")
	fl.IntVar(&f.bodyBudgetMiB, "http-body-budget", dataplane.DefaultBodyBudget>>20, "MiB of request bodies held in memory at once across all requests; a request beyond it is answered 503 with a JSON-RPC error at once (a body of unknown length counts as 4 MiB)")
	fl.StringVar(&f.tlsCert, "tls-cert", "", "certificate file (PEM, with its chain) to serve the client port over TLS and HTTP/2; read again when it changes, without a restart (needs --tls-key)")
	fl.StringVar(&f.tlsKey, "tls-key", "", "private key file (PEM) of --tls-cert")
	fl.BoolVar(&f.h2c, "h2c", false, "also serve HTTP/2 without TLS (prior knowledge), for load balancers that speak it to their backends; HTTP/1.1 is served as well")
}

// options checks the flags and returns the server's options.
func (f *httpFlags) options() (dataplane.HTTPOptions, error) {
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"--http-read-header-timeout", f.readHeaderTimeout},
		{"--http-body-timeout", f.bodyTimeout},
		{"--http-idle-timeout", f.idleTimeout},
		{"--http-write-timeout", f.writeTimeout},
	} {
		if d.v <= 0 {
			return dataplane.HTTPOptions{}, usageError{fmt.Errorf("%s %v: want a duration above 0", d.name, d.v)}
		}
	}
	for _, n := range []struct {
		name string
		v    int
	}{
		{"--http-max-header", f.maxHeaderKiB},
		{"--http-max-conns", f.maxConns},
		{"--http-body-budget", f.bodyBudgetMiB},
	} {
		if n.v <= 0 {
			return dataplane.HTTPOptions{}, usageError{fmt.Errorf("%s %d: want 1 or more", n.name, n.v)}
		}
	}
	if (f.tlsCert == "") != (f.tlsKey == "") {
		return dataplane.HTTPOptions{}, usageError{errors.New("--tls-cert and --tls-key go together: set both or neither")}
	}
	if f.h2c && f.tlsCert != "" {
		return dataplane.HTTPOptions{}, usageError{errors.New("--h2c is for a port without TLS: with --tls-cert, HTTP/2 is offered through TLS already")}
	}
	return dataplane.HTTPOptions{
		ReadHeaderTimeout: f.readHeaderTimeout,
		BodyTimeout:       f.bodyTimeout,
		IdleTimeout:       f.idleTimeout,
		WriteTimeout:      f.writeTimeout,
		MaxHeaderBytes:    f.maxHeaderKiB << 10,
		MaxConns:          f.maxConns,
		BodyBudget:        int64(f.bodyBudgetMiB) << 20,
		TLSCert:           f.tlsCert,
		TLSKey:            f.tlsKey,
		H2C:               f.h2c,
	}, nil
}
