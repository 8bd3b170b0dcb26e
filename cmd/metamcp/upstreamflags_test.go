package main

import (
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/metamcp/metamcp/dataplane/upstream"
)

// TestUpstreamFlags: the --upstream-* flags reach upstream.HTTPOptions, their
// defaults pass the check, and values the Transport cannot take are refused
// naming the flag.
func TestUpstreamFlags(t *testing.T) {
	parse := func(args ...string) upstream.HTTPOptions {
		t.Helper()
		var o upstream.HTTPOptions
		fl := pflag.NewFlagSet("dataplane", pflag.ContinueOnError)
		addUpstreamFlags(fl, &o)
		if err := fl.Parse(args); err != nil {
			t.Fatal(err)
		}
		return o
	}
	def := parse()
	if def.MaxIdleConnsPerHost != upstream.DefaultMaxIdleConnsPerHost || def.IdleConnTimeout != upstream.DefaultIdleConnTimeout || def.ResponseHeaderTimeout != 0 {
		t.Errorf("defaults = %+v", def)
	}
	if err := checkUpstreamFlags(def); err != nil {
		t.Errorf("the defaults are refused: %v", err)
	}
	set := parse("--upstream-idle-conns=8", "--upstream-idle-timeout=5s", "--upstream-response-header-timeout=2m")
	if set.MaxIdleConnsPerHost != 8 || set.IdleConnTimeout != 5*time.Second || set.ResponseHeaderTimeout != 2*time.Minute {
		t.Errorf("parsed = %+v", set)
	}
	for _, tc := range []struct {
		args []string
		flag string
	}{
		{[]string{"--upstream-idle-conns=0"}, "--upstream-idle-conns"},
		{[]string{"--upstream-idle-timeout=0s"}, "--upstream-idle-timeout"},
		{[]string{"--upstream-response-header-timeout=-1s"}, "--upstream-response-header-timeout"},
	} {
		err := checkUpstreamFlags(parse(tc.args...))
		if err == nil || !strings.Contains(err.Error(), tc.flag) {
			t.Errorf("%v: err = %v, want one naming %s", tc.args, err, tc.flag)
		}
	}
}
