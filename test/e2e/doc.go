// Package e2e tests MetaMCP the way a user runs it: it builds the metamcp and
// mmctl binaries, starts a control plane on a fresh Postgres database and
// drives it with mmctl as separate processes, asserting on what a person sees
// (stdout, stderr, exit codes) and on what must never be seen (secrets in
// output, logs or the database).
//
// Run: go test -count=1 ./test/e2e/... It needs Postgres at 127.0.0.1:5432
// with trust auth (or METAMCP_TEST_POSTGRES_URL), Redis at 127.0.0.1:6379,
// nginx, Node with the MCP conformance suite, mcp-remote and the TypeScript
// SDK: scripts/ensure-services.sh installs and starts them (make test runs
// it). A test whose dependency is missing fails; none is skipped for it.
//
// Processes are started through internal/testharness (output captured and
// logged when a test fails, stopped with their process group at its end,
// readiness from a line they print or their /readyz), and waits are its
// Eventually (here eventually and eventuallyWithin) or a process's own
// signal, never a sleep that orders events.
package e2e
