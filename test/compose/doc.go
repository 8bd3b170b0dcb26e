// Package compose holds the test that checks docker-compose.yml and
// deploy/Dockerfile against the real binaries: no Docker engine runs in CI,
// so the compose file is rendered with `docker-compose config` and every
// command, flag, environment variable and port it uses is checked against the
// --help of the metamcp and mmctl binaries built from this tree.
package compose
