package main

import (
	"fmt"

	"github.com/spf13/pflag"

	"github.com/metamcp/metamcp/dataplane/upstream"
)

// addUpstreamFlags registers the --upstream-* flags of `metamcp dataplane`.
func addUpstreamFlags(fl *pflag.FlagSet, o *upstream.HTTPOptions) {
	fl.IntVar(&o.MaxIdleConnsPerHost, "upstream-idle-conns", upstream.DefaultMaxIdleConnsPerHost, "keep-alive connections kept idle per upstream host, for the next calls")
	fl.DurationVar(&o.IdleConnTimeout, "upstream-idle-timeout", upstream.DefaultIdleConnTimeout, "close a connection to an upstream idle for this long (one the upstream closes sooner is noticed and replaced)")
	fl.DurationVar(&o.ResponseHeaderTimeout, "upstream-response-header-timeout", 0, "longest wait for an upstream's response head once a request is sent; 0: only the server's own call, list or initialize timeout bounds it (an upstream answering with JSON sends its head when the tool has finished, so keep this above every call timeout)")
}

// checkUpstreamFlags refuses values addUpstreamFlags's flags cannot take.
func checkUpstreamFlags(o upstream.HTTPOptions) error {
	switch {
	case o.MaxIdleConnsPerHost < 1:
		return fmt.Errorf("--upstream-idle-conns %d: want 1 or more", o.MaxIdleConnsPerHost)
	case o.IdleConnTimeout <= 0:
		return fmt.Errorf("--upstream-idle-timeout %v: want more than 0", o.IdleConnTimeout)
	case o.ResponseHeaderTimeout < 0:
		return fmt.Errorf("--upstream-response-header-timeout %v: want 0 (none) or more", o.ResponseHeaderTimeout)
	}
	return nil
}
