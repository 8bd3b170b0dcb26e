package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
)

// warningHeader is the response metadata key in which the control plane sends
// warnings about a write that succeeded.
const warningHeader = "x-metamcp-warning"

// admin returns the AdminService client, connecting on first use. The
// connection itself is lazy: an unreachable control plane shows up as the
// first call's Unavailable error.
func (a *app) admin() (metamcpv1.AdminServiceClient, error) {
	if a.client != nil {
		return a.client, nil
	}
	creds := insecure.NewCredentials()
	if a.tls || a.tlsCA != "" {
		cfg := &tls.Config{MinVersion: tls.VersionTLS12}
		if a.tlsCA != "" {
			pem, err := os.ReadFile(a.tlsCA)
			if err != nil {
				return nil, fmt.Errorf("read --tls-ca: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("--tls-ca %s holds no PEM certificate", a.tlsCA)
			}
			cfg.RootCAs = pool
		}
		creds = credentials.NewTLS(cfg)
	}
	conn, err := grpc.NewClient(a.addr,
		grpc.WithTransportCredentials(creds),
		grpc.WithUnaryInterceptor(a.intercept),
		grpc.WithStreamInterceptor(a.interceptStream),
		grpc.WithUserAgent("mmctl"),
	)
	if err != nil {
		return nil, fmt.Errorf("invalid control plane address %q: %w (set --addr or METAMCP_ADDR to HOST:PORT)", a.addr, err)
	}
	a.conn = conn
	a.client = metamcpv1.NewAdminServiceClient(conn)
	return a.client, nil
}

// intercept adds the admin token to every call and prints the warnings the
// control plane sends back in response metadata.
func (a *app) intercept(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	if a.token != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+a.token)
	}
	var header metadata.MD
	opts = append(opts, grpc.Header(&header))
	err := invoker(ctx, method, req, reply, cc, opts...)
	for _, w := range header.Get(warningHeader) {
		a.warn(cliKinds(unescapeHeader(w)))
	}
	return err
}

// interceptStream adds the admin token to every stream (mmctl logs -f).
func (a *app) interceptStream(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	if a.token != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+a.token)
	}
	return streamer(ctx, desc, cc, method, opts...)
}

// rpcContext bounds one command's calls by --timeout.
func (a *app) rpcContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, a.timeout)
}

// unescapeHeader undoes the control plane's escaping of characters a metadata
// value cannot carry (\uXXXX for anything but printable ASCII).
func unescapeHeader(s string) string {
	if !strings.Contains(s, `\u`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+6 <= len(s) && s[i+1] == 'u' {
			if r, err := strconv.ParseUint(s[i+2:i+6], 16, 32); err == nil {
				b.WriteRune(rune(r))
				i += 5
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// addrFromURL takes --addr given as a URL (http://host:port, https://...,
// grpc://...) as the host:port it names; https and grpcs turn TLS on.
// Anything a gRPC address cannot hold (a path, a missing port) is refused
// with the fix.
func (a *app) addrFromURL() error {
	scheme, _, ok := strings.Cut(a.addr, "://")
	if !ok {
		return nil
	}
	u, err := url.Parse(a.addr)
	fix := func(why string) error {
		return usageErrorf("invalid --addr %q: %s; give HOST:PORT, e.g. --addr %s", a.addr, why, defaultAddr)
	}
	switch {
	case err != nil:
		return fix(err.Error())
	case u.Path != "" && u.Path != "/", u.RawQuery != "":
		return fix("the control plane's gRPC address has no path")
	case u.Port() == "":
		return fix("the port is missing")
	}
	switch strings.ToLower(scheme) {
	case "http", "grpc":
	case "https", "grpcs":
		a.tls = true
	default:
		return fix(fmt.Sprintf("unknown scheme %q", scheme))
	}
	a.addr = u.Host
	return nil
}
