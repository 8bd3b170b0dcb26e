// Package e2e tests MetaMCP the way a user runs it: it builds the metamcp and
// mmctl binaries, starts a control plane on a fresh Postgres database and
// drives it with mmctl as separate processes, asserting on what a person sees
// (stdout, stderr, exit codes) and on what must never be seen (secrets in
// output, logs or the database).
//
// Run: go test -count=1 ./test/e2e/... (needs Postgres at 127.0.0.1:5432 with
// trust auth, or METAMCP_TEST_POSTGRES_URL).
package e2e
