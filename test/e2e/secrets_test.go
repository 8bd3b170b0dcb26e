package e2e

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// TestSecretsNeverLeak sets secrets every way a user can (flags, the
// environment, stdin, apply, import, an update) and asserts that the clear
// text appears in no mmctl output in any format, nowhere in the control
// plane's log, and in no row of the database.
func TestSecretsNeverLeak(t *testing.T) {
	t.Parallel()
	cp := startControlPlane(t)
	secret := func(how string) string { return "s3cr3t-VALUE-" + how + "-" + randomHex(t, 8) }
	var (
		viaSecretEnv    = secret("secret-env")
		viaEnvName      = secret("env-name")
		viaSecretHeader = secret("secret-header")
		viaBearerStdin  = secret("bearer-stdin")
		viaBearerFile   = secret("bearer-file")
		viaApply        = secret("apply")
		viaApplyHeader  = secret("apply-header")
		viaImport       = secret("import")
		viaUpdate       = secret("update")
	)
	secrets := []string{viaSecretEnv, viaEnvName, viaSecretHeader, viaBearerStdin, viaBearerFile, viaApply, viaApplyHeader, viaImport, viaUpdate}
	var outputs []result
	// A credential in an upstream URL's userinfo is never printed either
	// (it is stored as part of the URL, not sealed: see the README).
	viaURLUser := secret("url-userinfo")
	urlWithUser := "https://bot:" + viaURLUser + "@mcp.example.com/mcp"
	outputs = append(outputs, cp.ok(t, "create", "server", "s-url", "--url", urlWithUser))

	// Flags, mmctl's own environment, stdin and a file.
	outputs = append(outputs,
		cp.ok(t, "create", "server", "s-env", "--stdio", "npx -y some-server", "--secret-env", "API_TOKEN="+viaSecretEnv, "--env", "PLAIN=visible"),
		cp.okIn(t, viaBearerStdin+"\n", "create", "server", "s-stdin", "--url", "https://mcp.example.com/mcp", "--bearer-token-stdin",
			"--secret-header", "X-Api-Key="+viaSecretHeader),
	)
	r := runMmctl(t, []string{"METAMCP_ADDR=" + cp.addr, "METAMCP_TOKEN=" + cp.token, "SERVICE_TOKEN=" + viaEnvName}, "",
		"create", "server", "s-envname", "--command", "uvx", "--arg", "svc", "--secret-env", "SERVICE_TOKEN")
	if r.code != 0 {
		t.Fatalf("create with --secret-env NAME:\n%s", r)
	}
	outputs = append(outputs, r)
	tokenFile := t.TempDir() + "/token"
	if err := writeFile(tokenFile, viaBearerFile+"\n"); err != nil {
		t.Fatal(err)
	}
	outputs = append(outputs, cp.ok(t, "create", "server", "s-file", "--url", "http://127.0.0.1:9/sse", "--transport", "sse",
		"--bearer-token-file", tokenFile))

	// apply, then an update of the same secret through apply.
	applied := fmt.Sprintf(`kind: Server
name: s-apply
stdio:
  command: node
  args: [server.js]
  env:
    DB_PASSWORD: {secret: true, value: %q}
---
kind: Server
name: s-apply-http
streamableHttp:
  url: https://mcp.example.com/mcp
  headers:
    Authorization: {secret: true, value: "Bearer %s"}
---
kind: Namespace
name: secrets
members: [{server: s-env}, {server: s-stdin}, {server: s-envname}, {server: s-file}, {server: s-apply}, {server: s-apply-http}]
---
kind: Endpoint
name: secrets
namespace: secrets
`, viaApply, viaApplyHeader)
	outputs = append(outputs, cp.okIn(t, applied, "apply", "-f", "-"))
	r = cp.okIn(t, strings.Replace(applied, viaApply, viaUpdate, 1), "apply", "-f", "-")
	if !strings.Contains(r.stdout, "server/s-apply configured") {
		t.Errorf("a new secret value is not an update:\n%s", r)
	}
	outputs = append(outputs, r)

	// import of a client config holding a token.
	imported := fmt.Sprintf(`{"mcpServers": {"s-import": {"command": "npx", "args": ["-y", "x"], "env": {"SLACK_BOT_TOKEN": %q}}}}`, viaImport)
	outputs = append(outputs, cp.okIn(t, imported, "import", "-"))

	// The secrets are stored: describe says <set>.
	for server, want := range map[string]string{
		"s-env": "API_TOKEN=<set>", "s-envname": "SERVICE_TOKEN=<set>", "s-stdin": "X-Api-Key=<set>", "s-file": "Bearer token:",
		"s-apply": "DB_PASSWORD=<set>", "s-apply-http": "Authorization=<set>", "s-import": "SLACK_BOT_TOKEN=<set>",
	} {
		if r := cp.ok(t, "describe", "server", server); !strings.Contains(r.stdout, want) {
			t.Errorf("describe server %s lacks %q:\n%s", server, want, r.stdout)
		}
	}
	if r := cp.ok(t, "describe", "server", "s-env"); !strings.Contains(r.stdout, "PLAIN=visible") {
		t.Errorf("a plain value is not shown:\n%s", r.stdout)
	}

	// Every read, in every format.
	for _, args := range [][]string{{"export"}, {"export", "-o", "json"}, {"revision"}} {
		outputs = append(outputs, cp.ok(t, args...))
	}
	for _, kind := range []string{"servers", "namespaces", "endpoints"} {
		for _, o := range []string{"table", "json", "yaml"} {
			outputs = append(outputs, cp.ok(t, "get", kind, "-o", o))
		}
	}
	for _, name := range []string{"s-env", "s-envname", "s-stdin", "s-file", "s-apply", "s-apply-http", "s-import", "s-url"} {
		for _, o := range []string{"table", "json", "yaml"} {
			outputs = append(outputs, cp.ok(t, "get", "server", name, "-o", o))
			outputs = append(outputs, cp.ok(t, "describe", "server", name, "-o", o))
		}
	}
	if r := cp.ok(t, "describe", "server", "s-url"); !strings.Contains(r.stdout, "https://REDACTED@mcp.example.com/mcp") {
		t.Errorf("describe does not show the URL with its userinfo hidden:\n%s", r.stdout)
	}
	// What export prints applies back as a no-op: the stored userinfo stays.
	exported := cp.ok(t, "export").stdout
	// (The first apply marks what mmctl create made as managed by apply.)
	cp.okIn(t, exported, "apply", "-f", "-")
	if r := cp.okIn(t, cp.ok(t, "export").stdout, "apply", "-f", "-"); !strings.Contains(r.stdout, "server/s-url unchanged") {
		t.Errorf("applying the export changed the server with a hidden userinfo:\n%s", r)
	}
	// The hidden userinfo is never sent to another host.
	moved := strings.Replace(exported, "https://REDACTED@mcp.example.com/mcp", "https://REDACTED@evil.example.com/mcp", 1)
	if moved == exported {
		t.Fatalf("the export does not hold the hidden URL:\n%s", exported)
	}
	if r := cp.mmctlIn(t, moved, "apply", "-f", "-"); r.code == 0 || !strings.Contains(r.stderr, "keeps the stored one only for the same scheme and host") {
		t.Errorf("apply of a hidden userinfo for another host:\n%s", r)
	}
	for _, out := range outputs {
		for _, s := range append(secrets, viaURLUser) {
			if strings.Contains(out.stdout, s) || strings.Contains(out.stderr, s) {
				t.Errorf("a secret (%s) appears in the output of:\n%s", s, out)
			}
		}
	}

	// The control plane's complete log (debug level), once it has stopped.
	cp.stop(t)
	logs := cp.logs.String()
	if !strings.Contains(logs, "control plane listening") || len(lines(logs)) < 10 {
		t.Fatalf("the control plane log looks incomplete:\n%s", logs)
	}
	for _, s := range append(secrets, viaURLUser) {
		for _, form := range encodings(s) {
			if strings.Contains(logs, form) {
				t.Errorf("the control plane log contains a secret (%s):\n%s", s, logs)
			}
		}
	}

	// Every row of every table of the database, as text and as raw bytes.
	dump := dumpDatabase(t, cp.dsn)
	if !bytes.Contains(dump, []byte("s-apply-http")) || !bytes.Contains(dump, []byte("s-import")) {
		t.Fatalf("the database dump does not hold the servers: the check would prove nothing (%d bytes)", len(dump))
	}
	for _, s := range secrets {
		for _, form := range encodings(s) {
			if bytes.Contains(dump, []byte(form)) {
				t.Errorf("the database holds a secret (%s) in clear text (as %q)", s, form)
			}
		}
	}
}

// encodings are the forms in which a leaked secret would show: as is, in hex
// (how Postgres prints bytea) and in base64 (how JSON carries bytes).
func encodings(s string) []string {
	return []string{s, hex.EncodeToString([]byte(s)), base64.StdEncoding.EncodeToString([]byte(s)),
		strings.TrimRight(base64.StdEncoding.EncodeToString([]byte(s)), "=")}
}

// dumpDatabase returns every row of every user table of the database: each
// row as text (`SELECT t::text`), followed by the raw bytes of each bytea
// column.
func dumpDatabase(t *testing.T, dsn string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connect to the test database: %v", err)
	}
	defer conn.Close(context.Background())

	type table struct{ schema, name string }
	var tables []table
	rows, err := conn.Query(ctx, `SELECT table_schema, table_name FROM information_schema.tables
		WHERE table_type = 'BASE TABLE' AND table_schema NOT IN ('pg_catalog', 'information_schema')`)
	if err != nil {
		t.Fatalf("list tables: %v", err)
	}
	for rows.Next() {
		var tb table
		if err := rows.Scan(&tb.schema, &tb.name); err != nil {
			t.Fatal(err)
		}
		tables = append(tables, tb)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if len(tables) == 0 {
		t.Fatal("the database has no tables")
	}

	var dump bytes.Buffer
	for _, tb := range tables {
		ident := pgx.Identifier{tb.schema, tb.name}.Sanitize()
		texts, err := conn.Query(ctx, "SELECT t::text FROM "+ident+" t")
		if err != nil {
			t.Fatalf("dump %s: %v", ident, err)
		}
		for texts.Next() {
			var s string
			if err := texts.Scan(&s); err != nil {
				t.Fatal(err)
			}
			dump.WriteString(s + "\n")
		}
		if err := texts.Err(); err != nil {
			t.Fatalf("dump %s: %v", ident, err)
		}

		var byteaCols []string
		cols, err := conn.Query(ctx, `SELECT column_name FROM information_schema.columns
			WHERE table_schema = $1 AND table_name = $2 AND data_type = 'bytea'`, tb.schema, tb.name)
		if err != nil {
			t.Fatal(err)
		}
		for cols.Next() {
			var c string
			if err := cols.Scan(&c); err != nil {
				t.Fatal(err)
			}
			byteaCols = append(byteaCols, c)
		}
		if err := cols.Err(); err != nil {
			t.Fatal(err)
		}
		for _, c := range byteaCols {
			raw, err := conn.Query(ctx, "SELECT "+pgx.Identifier{c}.Sanitize()+" FROM "+ident)
			if err != nil {
				t.Fatalf("dump %s.%s: %v", ident, c, err)
			}
			for raw.Next() {
				var b []byte
				if err := raw.Scan(&b); err != nil {
					t.Fatal(err)
				}
				dump.Write(b)
				dump.WriteByte('\n')
			}
			if err := raw.Err(); err != nil {
				t.Fatal(err)
			}
		}
	}
	return dump.Bytes()
}
