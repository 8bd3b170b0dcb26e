// Package bench holds the data plane's end-to-end benchmarks (issue 4): the
// latency a proxied tools/call adds over a direct call to the same upstream,
// calls per second through one data plane versus direct at 1, 8 and 32
// clients, the data plane's CPU time per proxied call and the bytes it
// allocates per proxied call, each for session-based (2025-11-25) and
// stateless (2026-07-28) clients, the latter declaring no capability or, as
// go-sdk clients do by default, roots (which puts each call on a bridge).
//
// Everything runs on this machine over loopback: the upstream is the
// mcpfixture over Streamable HTTP (tool echo), the data plane is a
// `metamcp dataplane` process fed by a control plane running inside the test
// binary on SQLite (or, for allocations, the gateway and the upstream pool
// inside the test binary), and the load generator is a cheap raw JSON-RPC
// client on net/http with keep-alive.
//
// Run them with `make bench` or
//
//	go test -run '^$' -bench . -benchtime 1x ./test/bench/
//
// Each point makes a fixed number of calls (-calls, 2000 by default) per b.N,
// and each CPU-time point ten times as many (-cpucalls, 20000);
// -dpflags passes flags to the data plane (-dpflags=--http-max-conns=100),
// -dpenv adds to its environment
// (-dpenv 'GOGC=400'). BenchmarkReference puts two proxies that
// only forward bytes (our relay fixture, and nginx, which it needs) in the
// data plane's place, for the scale of what any proxy costs on the machine.
// TestSmoke runs the whole harness for a few calls without measuring time.
package bench
