package configfile

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"sort"
	"strings"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/pkg/snapshot"
)

// serverMapKeys are the top-level keys under which clients keep their
// servers: Claude Desktop, Claude Code, Cursor, Windsurf (mcpServers),
// VS Code's mcp.json (servers) and Zed (context_servers).
var serverMapKeys = []string{"mcpServers", "servers", "context_servers"}

// knownServerKeys are the per-server keys ParseMCPServers understands.
var knownServerKeys = map[string]bool{
	"command": true, "args": true, "env": true, "cwd": true,
	"url": true, "serverUrl": true, "httpUrl": true, "headers": true,
	"type": true, "transport": true, "disabled": true, "description": true,
}

// ParseMCPServers reads the `mcpServers` JSON of Claude Desktop, Claude
// Code, Cursor and Windsurf, VS Code's `servers` (also nested in settings
// under "mcp"), or Zed's `context_servers`, and returns one Server per entry,
// in file order. Comments and trailing commas (JSONC) are accepted.
//
// An entry with `command` is a stdio server; one with `url` is SSE when its
// type says so (or, with no type, when the URL path ends in /sse) and
// Streamable HTTP otherwise. Environment variables and headers become
// secrets. Names are made valid resource names. The notes say what was
// changed, skipped or ignored and deserve to be shown to the user.
func ParseMCPServers(data []byte) (servers []*metamcpv1.Server, notes []string, err error) {
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf"))
	clean := stripJSONC(data)
	var top map[string]json.RawMessage
	if err := json.Unmarshal(clean, &top); err != nil {
		return nil, nil, jsonError(clean, err)
	}
	if mcp, ok := top["mcp"]; ok && top["servers"] == nil {
		// VS Code user settings: {"mcp": {"servers": {...}}}.
		var nested map[string]json.RawMessage
		if json.Unmarshal(mcp, &nested) == nil && nested["servers"] != nil {
			top["servers"] = nested["servers"]
		}
	}

	found := false
	byName := map[string]string{} // resource name -> original name
	for _, key := range serverMapKeys {
		raw, ok := top[key]
		if !ok || bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
			continue
		}
		found = true
		entries, err := orderedObject(raw)
		if err != nil {
			return nil, nil, fmt.Errorf("%q must be an object mapping server names to their settings", key)
		}
		for _, e := range entries {
			s, skip, err := parseMCPServer(e.key, e.value, &notes)
			if err != nil {
				return nil, nil, err
			}
			if skip {
				continue
			}
			if other, dup := byName[s.GetName()]; dup {
				return nil, nil, fmt.Errorf("servers %q and %q both become %q: rename one of them", other, e.key, s.GetName())
			}
			byName[s.GetName()] = e.key
			servers = append(servers, s)
		}
	}
	if !found {
		return nil, nil, errors.New(`no "mcpServers" object found: expected {"mcpServers": {"name": {"command": ..., "args": [...]}}} (or VS Code's "servers")`)
	}
	return servers, notes, nil
}

// parseMCPServer turns one entry into a Server; skip says it is disabled.
func parseMCPServer(key string, raw json.RawMessage, notes *[]string) (s *metamcpv1.Server, skip bool, err error) {
	fail := func(format string, args ...any) (*metamcpv1.Server, bool, error) {
		return nil, false, fmt.Errorf("server %q: %s", key, fmt.Sprintf(format, args...))
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil || fields == nil {
		return fail("want an object with \"command\" or \"url\"")
	}
	if d, ok := fields["disabled"]; ok {
		var disabled bool
		if err := json.Unmarshal(d, &disabled); err != nil {
			return fail("\"disabled\" must be true or false")
		}
		if disabled {
			*notes = append(*notes, fmt.Sprintf("skipped server %q: it is disabled", key))
			return nil, true, nil
		}
	}

	name := snapshot.NormalizeName(key)
	if name == "" {
		return fail("cannot make a server name of it: rename it with letters or digits")
	}
	if name != key {
		*notes = append(*notes, fmt.Sprintf("server %q is named %q (names are lowercase DNS labels)", key, name))
	}
	s = &metamcpv1.Server{Name: name}
	if err := str(fields, "description", &s.Description); err != nil {
		return fail("%v", err)
	}

	var unknown []string
	for k := range fields {
		if !knownServerKeys[k] {
			unknown = append(unknown, k)
		}
	}
	sort.Strings(unknown)
	for _, k := range unknown {
		*notes = append(*notes, fmt.Sprintf("server %q: ignored %q (MetaMCP does not use it)", key, k))
	}

	var typ string
	for _, k := range []string{"type", "transport"} {
		if err := str(fields, k, &typ); err != nil {
			return fail("%v", err)
		}
		if typ != "" {
			break
		}
	}
	norm := strings.ToLower(strings.NewReplacer("-", "", "_", "").Replace(typ))
	switch norm {
	case "", "stdio", "sse", "http", "streamablehttp":
	default:
		return fail("unknown type %q: use \"stdio\", \"sse\" or \"http\"", typ)
	}

	var command string
	cmdObj := struct {
		Path string            `json:"path"`
		Args []string          `json:"args"`
		Env  map[string]string `json:"env"`
	}{}
	if c, ok := fields["command"]; ok && bytes.HasPrefix(bytes.TrimSpace(c), []byte("{")) {
		// Zed's older form: "command": {"path": ..., "args": [...], "env": {...}}.
		if err := json.Unmarshal(c, &cmdObj); err != nil {
			return fail("\"command\" must be a string")
		}
		command = cmdObj.Path
	} else if err := str(fields, "command", &command); err != nil {
		return fail("%v", err)
	}

	var rawURL string
	for _, k := range []string{"url", "serverUrl", "httpUrl"} {
		if err := str(fields, k, &rawURL); err != nil {
			return fail("%v", err)
		}
		if rawURL != "" {
			if k == "httpUrl" && norm == "" {
				norm = "http" // Gemini CLI: httpUrl is Streamable HTTP
			}
			break
		}
	}

	switch {
	case command != "":
		if rawURL != "" || (norm != "" && norm != "stdio") {
			*notes = append(*notes, fmt.Sprintf("server %q has a command, so it runs as a stdio server; its URL or type is ignored", key))
		}
		st := &metamcpv1.StdioTransport{Command: command, Args: cmdObj.Args}
		if err := strList(fields, "args", &st.Args); err != nil {
			return fail("%v", err)
		}
		if err := str(fields, "cwd", &st.Cwd); err != nil {
			return fail("%v", err)
		}
		env, err := secretMap(key, fields, "env", notes)
		if err != nil {
			return fail("%v", err)
		}
		for k, v := range cmdObj.Env {
			if env == nil {
				env = map[string]*metamcpv1.Value{}
			}
			env[k] = &metamcpv1.Value{Value: v, Secret: true}
		}
		st.Env = env
		s.Transport = &metamcpv1.Server_Stdio{Stdio: st}
		if _, ok := fields["headers"]; ok {
			*notes = append(*notes, fmt.Sprintf("server %q: ignored \"headers\" (a stdio server takes none)", key))
		}
	case rawURL != "":
		if norm == "stdio" {
			return fail("type is \"stdio\" but there is no \"command\"")
		}
		ht := &metamcpv1.HTTPTransport{Url: rawURL}
		headers, err := secretMap(key, fields, "headers", notes)
		if err != nil {
			return fail("%v", err)
		}
		ht.Headers = headers
		sse := norm == "sse"
		if norm == "" {
			if u, err := url.Parse(rawURL); err == nil && strings.HasSuffix(strings.TrimRight(u.Path, "/"), "/sse") {
				sse = true
			}
		}
		if sse {
			s.Transport = &metamcpv1.Server_Sse{Sse: ht}
		} else {
			s.Transport = &metamcpv1.Server_StreamableHttp{StreamableHttp: ht}
		}
		for _, k := range []string{"args", "env", "cwd"} {
			if _, ok := fields[k]; ok {
				*notes = append(*notes, fmt.Sprintf("server %q: ignored %q (only stdio servers take it)", key, k))
			}
		}
	default:
		return fail("has neither \"command\" nor \"url\": cannot tell how to reach it")
	}
	return s, false, nil
}

// str reads an optional string field.
func str(fields map[string]json.RawMessage, key string, dst *string) error {
	raw, ok := fields[key]
	if !ok || string(bytes.TrimSpace(raw)) == "null" {
		return nil
	}
	if err := json.Unmarshal(raw, dst); err != nil {
		return fmt.Errorf("%q must be a string", key)
	}
	return nil
}

// strList reads an optional list of strings.
func strList(fields map[string]json.RawMessage, key string, dst *[]string) error {
	raw, ok := fields[key]
	if !ok || string(bytes.TrimSpace(raw)) == "null" {
		return nil
	}
	var items []json.RawMessage
	if err := json.Unmarshal(raw, &items); err != nil {
		return fmt.Errorf("%q must be a list of strings", key)
	}
	out := make([]string, 0, len(items))
	for i, it := range items {
		v, err := scalarText(it)
		if err != nil {
			return fmt.Errorf("%s[%d] must be a string", key, i)
		}
		out = append(out, v)
	}
	*dst = out
	return nil
}

// secretMap reads an optional map of environment variables or headers, each
// value a secret. Numbers and booleans are taken as their text.
func secretMap(server string, fields map[string]json.RawMessage, key string, notes *[]string) (map[string]*metamcpv1.Value, error) {
	raw, ok := fields[key]
	if !ok || string(bytes.TrimSpace(raw)) == "null" {
		return nil, nil
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("%q must be an object of names to strings", key)
	}
	out := make(map[string]*metamcpv1.Value, len(m))
	for _, k := range sortedKeys(m) {
		v, err := scalarText(m[k])
		if err != nil {
			return nil, fmt.Errorf("%s %q must be a string", key, k)
		}
		if strings.Contains(v, "${") {
			*notes = append(*notes, fmt.Sprintf("server %q: %s %q refers to a variable (%s), which MetaMCP does not expand: set the real value", server, key, k, "${...}"))
		}
		out[k] = &metamcpv1.Value{Value: v, Secret: true}
	}
	return out, nil
}

// scalarText is a JSON string's value, or the text of a number or boolean.
func scalarText(raw json.RawMessage) (string, error) {
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return s, nil
	}
	t := string(bytes.TrimSpace(raw))
	var x any
	if err := json.Unmarshal(raw, &x); err == nil {
		switch x.(type) {
		case float64, bool:
			return t, nil
		}
	}
	return "", errors.New("not a string")
}

type entry struct {
	key   string
	value json.RawMessage
}

// orderedObject returns the members of a JSON object in file order.
func orderedObject(raw json.RawMessage) ([]entry, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, errors.New("not an object")
	}
	var out []entry
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, err
		}
		key, _ := tok.(string)
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, err
		}
		out = append(out, entry{key: key, value: v})
	}
	return out, nil
}

// jsonError describes a JSON decoding error with its line and column.
func jsonError(data []byte, err error) error {
	var (
		syn *json.SyntaxError
		typ *json.UnmarshalTypeError
	)
	switch {
	case errors.As(err, &syn):
		// Offset counts the offending byte itself.
		line, col := lineCol(data, max(syn.Offset-1, 0))
		return fmt.Errorf("invalid JSON at line %d, column %d: %w", line, col, syn)
	case errors.As(err, &typ):
		return fmt.Errorf("the file must hold a JSON object like {\"mcpServers\": {...}}, not %s", typ.Value)
	}
	return fmt.Errorf("invalid JSON: %w", err)
}

// lineCol turns a byte offset into a 1-based line and column.
func lineCol(data []byte, offset int64) (line, col int) {
	if offset > int64(len(data)) {
		offset = int64(len(data))
	}
	before := data[:offset]
	line = bytes.Count(before, []byte("\n")) + 1
	col = int(offset) - bytes.LastIndexByte(before, '\n')
	return line, col
}

// stripJSONC blanks out // and /* */ comments and trailing commas, keeping
// every other byte (and every newline) where it was, so offsets still point
// at the right line and column.
func stripJSONC(data []byte) []byte {
	out := bytes.Clone(data)
	var str stringScanner
	for i := 0; i < len(out); i++ {
		c := out[i]
		switch {
		case str.inString(c):
		case c == '/' && i+1 < len(out) && out[i+1] == '/':
			for ; i < len(out) && out[i] != '\n'; i++ {
				out[i] = ' '
			}
		case c == '/' && i+1 < len(out) && out[i+1] == '*':
			stop := len(out) // an unterminated comment runs to the end
			if end := bytes.Index(out[i+2:], []byte("*/")); end >= 0 {
				stop = i + 2 + end + 2
			}
			for j := i; j < stop; j++ {
				if out[j] != '\n' {
					out[j] = ' '
				}
			}
			i = stop - 1
		}
	}
	// Trailing commas, now that comments are blank.
	str = stringScanner{}
	for i := 0; i < len(out); i++ {
		if str.inString(out[i]) || out[i] != ',' {
			continue
		}
		j := i + 1
		for j < len(out) && (out[j] == ' ' || out[j] == '\t' || out[j] == '\n' || out[j] == '\r') {
			j++
		}
		if j < len(out) && (out[j] == '}' || out[j] == ']') {
			out[i] = ' '
		}
	}
	return out
}

// stringScanner follows JSON text byte by byte and tells which bytes belong
// to a string literal (its quotes included).
type stringScanner struct {
	in, escaped bool
}

// inString consumes c and reports whether it is part of a string literal.
func (s *stringScanner) inString(c byte) bool {
	switch {
	case s.in:
		switch {
		case s.escaped:
			s.escaped = false
		case c == '\\':
			s.escaped = true
		case c == '"':
			s.in = false
		}
		return true
	case c == '"':
		s.in = true
		return true
	}
	return false
}
