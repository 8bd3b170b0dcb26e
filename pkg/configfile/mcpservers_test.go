package configfile

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/pkg/snapshot"
)

func sec(v string) *metamcpv1.Value { return &metamcpv1.Value{Value: v, Secret: true} }

func stdioSrv(name, command string, args []string, env map[string]*metamcpv1.Value) *metamcpv1.Server {
	return &metamcpv1.Server{Name: name, Transport: &metamcpv1.Server_Stdio{Stdio: &metamcpv1.StdioTransport{
		Command: command, Args: args, Env: env,
	}}}
}

func httpSrv(name, url string, sse bool, headers map[string]*metamcpv1.Value) *metamcpv1.Server {
	t := &metamcpv1.HTTPTransport{Url: url, Headers: headers}
	if sse {
		return &metamcpv1.Server{Name: name, Transport: &metamcpv1.Server_Sse{Sse: t}}
	}
	return &metamcpv1.Server{Name: name, Transport: &metamcpv1.Server_StreamableHttp{StreamableHttp: t}}
}

func TestParseMCPServersFiles(t *testing.T) {
	tests := []struct {
		file      string
		want      []*metamcpv1.Server
		wantNotes []string // each must appear in one note, in this order
	}{
		{
			file: "claude_desktop_config.json",
			want: []*metamcpv1.Server{
				stdioSrv("filesystem", "npx", []string{"-y", "@modelcontextprotocol/server-filesystem", "/Users/alice/Desktop", "/Users/alice/Downloads"}, nil),
				stdioSrv("github", "npx", []string{"-y", "@modelcontextprotocol/server-github"},
					map[string]*metamcpv1.Value{"GITHUB_PERSONAL_ACCESS_TOKEN": sec("ghp_exampleexampleexample")}),
				stdioSrv("brave-search", "docker", []string{"run", "-i", "--rm", "-e", "BRAVE_API_KEY", "mcp/brave-search"},
					map[string]*metamcpv1.Value{"BRAVE_API_KEY": sec("BSA-example")}),
				stdioSrv("sentry", "npx", []string{"-y", "mcp-remote", "https://mcp.sentry.dev/mcp"}, nil),
			},
			wantNotes: []string{
				`server "Brave Search" is named "brave-search"`,
				`skipped server "postgres": it is disabled`,
			},
		},
		{
			file: "vscode_mcp.json",
			want: []*metamcpv1.Server{
				stdioSrv("perplexity", "npx", []string{"-y", "server-perplexity-ask"},
					map[string]*metamcpv1.Value{"PERPLEXITY_API_KEY": sec("${input:perplexity-key}")}),
				httpSrv("github-remote", "https://api.githubcopilot.com/mcp/", false,
					map[string]*metamcpv1.Value{"Authorization": sec("Bearer ghp_example")}),
			},
			wantNotes: []string{
				`server "Perplexity" is named "perplexity"`,
				`server "Perplexity": ignored "envFile"`,
				`server "Perplexity": env "PERPLEXITY_API_KEY" refers to a variable`,
			},
		},
		{
			file: "cursor_mcp.json",
			want: []*metamcpv1.Server{
				httpSrv("linear", "https://mcp.linear.app/sse", true, nil),
				httpSrv("notion", "https://mcp.notion.com/mcp", false,
					map[string]*metamcpv1.Value{"Authorization": sec("Bearer ntn_example"), "X-Retries": sec("3")}),
				httpSrv("events", "http://127.0.0.1:9000/events", true, nil),
				httpSrv("windsurf-style", "https://mcp.example.com/mcp", false, nil),
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join("testdata", tt.file))
			if err != nil {
				t.Fatal(err)
			}
			got, notes, err := ParseMCPServers(data)
			if err != nil {
				t.Fatalf("ParseMCPServers: %v", err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %d servers, want %d: %v", len(got), len(tt.want), got)
			}
			for i := range got {
				if !proto.Equal(got[i], tt.want[i]) {
					t.Errorf("server %d:\n got %v\nwant %v", i, got[i], tt.want[i])
				}
			}
			if len(notes) != len(tt.wantNotes) {
				t.Errorf("notes = %q, want %d", notes, len(tt.wantNotes))
			}
			for i, w := range tt.wantNotes {
				if i < len(notes) && !strings.Contains(notes[i], w) {
					t.Errorf("note %d = %q, want it to contain %q", i, notes[i], w)
				}
			}
			// What an import creates must be a valid config as it stands.
			cfg := &metamcpv1.Config{Servers: got}
			if _, err := snapshot.Validate(cfg); err != nil {
				t.Errorf("imported servers do not validate: %v", err)
			}
		})
	}
}

func TestParseMCPServers(t *testing.T) {
	tests := []struct {
		name      string
		in        string
		want      []*metamcpv1.Server
		wantNotes []string
	}{
		{"empty map", `{"mcpServers": {}}`, nil, nil},
		{"file order kept", `{"mcpServers": {"zeta": {"command": "z"}, "alpha": {"command": "a"}}}`,
			[]*metamcpv1.Server{stdioSrv("zeta", "z", nil, nil), stdioSrv("alpha", "a", nil, nil)}, nil},
		{"VS Code settings nest servers under mcp", `{"mcp": {"servers": {"a": {"command": "x"}}}}`,
			[]*metamcpv1.Server{stdioSrv("a", "x", nil, nil)}, nil},
		{"Zed context_servers with the old command object", `{"context_servers": {"z": {"command": {"path": "zed-mcp", "args": ["--stdio"], "env": {"K": "v"}}}}}`,
			[]*metamcpv1.Server{stdioSrv("z", "zed-mcp", []string{"--stdio"}, map[string]*metamcpv1.Value{"K": sec("v")})}, nil},
		{"cwd and description", `{"mcpServers": {"a": {"command": "x", "cwd": "/tmp", "description": "A"}}}`,
			[]*metamcpv1.Server{{Name: "a", Description: "A", Transport: &metamcpv1.Server_Stdio{Stdio: &metamcpv1.StdioTransport{Command: "x", Cwd: "/tmp"}}}}, nil},
		{"url ending in /sse/ is SSE", `{"mcpServers": {"a": {"url": "https://x.example.com/sse/"}}}`,
			[]*metamcpv1.Server{httpSrv("a", "https://x.example.com/sse/", true, nil)}, nil},
		{"explicit http type wins over an /sse path", `{"mcpServers": {"a": {"type": "http", "url": "https://x.example.com/sse"}}}`,
			[]*metamcpv1.Server{httpSrv("a", "https://x.example.com/sse", false, nil)}, nil},
		{"streamableHttp spelling", `{"mcpServers": {"a": {"type": "streamableHttp", "url": "https://x.example.com/sse"}}}`,
			[]*metamcpv1.Server{httpSrv("a", "https://x.example.com/sse", false, nil)}, nil},
		{"Gemini httpUrl", `{"mcpServers": {"a": {"httpUrl": "https://x.example.com/sse"}}}`,
			[]*metamcpv1.Server{httpSrv("a", "https://x.example.com/sse", false, nil)}, nil},
		{"unknown keys are notes", `{"mcpServers": {"a": {"command": "x", "alwaysAllow": ["t"], "timeout": 60}}}`,
			[]*metamcpv1.Server{stdioSrv("a", "x", nil, nil)},
			[]string{`server "a": ignored "alwaysAllow"`, `server "a": ignored "timeout"`}},
		{"command wins over url", `{"mcpServers": {"a": {"command": "x", "url": "https://x.example.com/mcp"}}}`,
			[]*metamcpv1.Server{stdioSrv("a", "x", nil, nil)}, []string{"runs as a stdio server"}},
		{"disabled false is kept", `{"mcpServers": {"a": {"command": "x", "disabled": false}}}`,
			[]*metamcpv1.Server{stdioSrv("a", "x", nil, nil)}, nil},
		{"env numbers and booleans become text", `{"mcpServers": {"a": {"command": "x", "env": {"N": 1.50, "B": true}}}}`,
			[]*metamcpv1.Server{stdioSrv("a", "x", nil, map[string]*metamcpv1.Value{"N": sec("1.50"), "B": sec("true")})}, nil},
		{"long names are cut", `{"mcpServers": {"` + strings.Repeat("Ab", 40) + `": {"command": "x"}}}`,
			[]*metamcpv1.Server{stdioSrv(strings.Repeat("ab", 31)+"a", "x", nil, nil)}, []string{"is named"}},
		{"comments, trailing commas and strings that look like comments", "{\n// c\n\"mcpServers\": {\"a\": {\"command\": \"x\", \"args\": [\"http://h/*x*/\", \"//y\",],},},\n/* end */}",
			[]*metamcpv1.Server{stdioSrv("a", "x", []string{"http://h/*x*/", "//y"}, nil)}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, notes, err := ParseMCPServers([]byte(tt.in))
			if err != nil {
				t.Fatalf("ParseMCPServers: %v", err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %d servers, want %d: %v", len(got), len(tt.want), got)
			}
			for i := range got {
				if !proto.Equal(got[i], tt.want[i]) {
					t.Errorf("server %d:\n got %v\nwant %v", i, got[i], tt.want[i])
				}
			}
			if len(notes) != len(tt.wantNotes) {
				t.Fatalf("notes = %q, want %d", notes, len(tt.wantNotes))
			}
			for i, w := range tt.wantNotes {
				if !strings.Contains(notes[i], w) {
					t.Errorf("note %d = %q, want it to contain %q", i, notes[i], w)
				}
			}
		})
	}
}

func TestParseMCPServersErrors(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want string
	}{
		{"empty input", ``, "invalid JSON"},
		{"syntax error with position", "{\n  \"mcpServers\": {\n    \"a\": {\"command\": \"x\"}\n    \"b\": {}\n  }\n}", "invalid JSON at line 4, column 5: invalid character"},
		{"bad value position", `{"a": x}`, "invalid JSON at line 1, column 7"},
		{"not an object", `["a"]`, `must hold a JSON object like {"mcpServers": {...}}`},
		{"no server map", `{"servers2": {}}`, `no "mcpServers" object found`},
		{"server map of the wrong type", `{"mcpServers": []}`, `"mcpServers" must be an object`},
		{"entry not an object", `{"mcpServers": {"a": "npx"}}`, `server "a": want an object`},
		{"neither command nor url", `{"mcpServers": {"a": {"args": ["x"]}}}`, `server "a": has neither "command" nor "url"`},
		{"unknown type", `{"mcpServers": {"a": {"type": "websocket", "url": "wss://x"}}}`, `server "a": unknown type "websocket"`},
		{"stdio type without command", `{"mcpServers": {"a": {"type": "stdio", "url": "https://x"}}}`, `type is "stdio" but there is no "command"`},
		{"command not a string", `{"mcpServers": {"a": {"command": 1}}}`, `server "a": "command" must be a string`},
		{"args not strings", `{"mcpServers": {"a": {"command": "x", "args": [{}]}}}`, `args[0] must be a string`},
		{"env not an object", `{"mcpServers": {"a": {"command": "x", "env": ["A=B"]}}}`, `"env" must be an object`},
		{"env value an object", `{"mcpServers": {"a": {"command": "x", "env": {"A": {}}}}}`, `env "A" must be a string`},
		{"disabled not a boolean", `{"mcpServers": {"a": {"command": "x", "disabled": "yes"}}}`, `"disabled" must be true or false`},
		{"name with nothing usable", `{"mcpServers": {"***": {"command": "x"}}}`, `server "***": cannot make a server name of it`},
		{"names that collide once normalised", `{"mcpServers": {"GitHub": {"command": "x"}, "github": {"command": "y"}}}`, `servers "GitHub" and "github" both become "github"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := ParseMCPServers([]byte(tt.in))
			if err == nil {
				t.Fatal("ParseMCPServers succeeded, want an error")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q\ndoes not contain %q", err, tt.want)
			}
		})
	}
}

func TestStripJSONCKeepsOffsets(t *testing.T) {
	in := "{\"a\": 1, // c\n/* x\ny */ \"b\": [1,],}"
	out := stripJSONC([]byte(in))
	if len(out) != len(in) {
		t.Fatalf("length changed: %d -> %d", len(in), len(out))
	}
	if strings.Count(string(out), "\n") != strings.Count(in, "\n") {
		t.Fatalf("newlines changed: %q", out)
	}
	if want := "{\"a\": 1,     \n    \n     \"b\": [1 ] }"; string(out) != want {
		t.Fatalf("stripJSONC = %q, want %q", out, want)
	}
}
