// Package configfile reads and writes the config-file format users keep in
// git and feed to `mmctl apply`: a stream of YAML documents (or one JSON
// document), each one resource in flat form — the resource's protojson
// fields plus `kind` and an optional `apiVersion`:
//
//	apiVersion: metamcp/v1
//	kind: Server
//	name: github
//	stdio:
//	  command: npx
//	  args: ["-y", "@modelcontextprotocol/server-github"]
//	  env:
//	    GITHUB_TOKEN: {secret: true, value: "ghp_xxx"}
//	timeouts: {call: 60s}
//
// Field names may be camelCase or snake_case; unknown fields are errors.
// Durations take Go syntax ("90s", "5m", "1h30m"). Enum values are written
// lowercase without their type prefix ("per_client" for
// SESSION_MODE_PER_CLIENT); older spellings are read too. Fields that hold
// their default are left out when written (see package canonical).
//
// It also reads the `mcpServers` JSON that desktop MCP clients use
// (ParseMCPServers), for `mmctl import`.
package configfile

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v2"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/durationpb"
	sigsyaml "sigs.k8s.io/yaml"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/pkg/canonical"
	"github.com/metamcp/metamcp/pkg/snapshot"
)

// APIVersion is the only `apiVersion` a config file may name.
const APIVersion = "metamcp/v1"

// kinds maps each config-file kind to its field of metamcpv1.Resource.
var kinds = []struct {
	kind  string
	field protoreflect.Name
}{
	{snapshot.KindServer, "server"},
	{snapshot.KindNamespace, "namespace"},
	{snapshot.KindEndpoint, "endpoint"},
	{snapshot.KindRateLimitPolicy, "rate_limit"},
}

func kindNames() string {
	names := make([]string, len(kinds))
	for i, k := range kinds {
		names[i] = k.kind
	}
	return strings.Join(names, ", ")
}

// KindOf returns a resource's kind ("Server", "Namespace", "Endpoint",
// "RateLimitPolicy") and name; both are empty for a nil or empty resource.
func KindOf(r *metamcpv1.Resource) (kind, name string) {
	switch k := r.GetKind().(type) {
	case *metamcpv1.Resource_Server:
		return snapshot.KindServer, k.Server.GetName()
	case *metamcpv1.Resource_Namespace:
		return snapshot.KindNamespace, k.Namespace.GetName()
	case *metamcpv1.Resource_Endpoint:
		return snapshot.KindEndpoint, k.Endpoint.GetName()
	case *metamcpv1.Resource_RateLimit:
		return snapshot.KindRateLimitPolicy, k.RateLimit.GetName()
	}
	return "", ""
}

// ClearOutputOnly removes, in place, what the control plane sets and never
// takes from a file: a resource's revision, create and update times and
// managedBy (and an API key's or token's prefix, revoke time and hash), and
// of every Value its `set` flag and sealed form. m is a Resource, a resource message or any
// message containing Values.
func ClearOutputOnly(m proto.Message) {
	if m == nil {
		return
	}
	clearOutputOnly(m.ProtoReflect(), true)
}

var (
	valueName    = (&metamcpv1.Value{}).ProtoReflect().Descriptor().FullName()
	resourceName = (&metamcpv1.Resource{}).ProtoReflect().Descriptor().FullName()
)

// clearOutputOnly clears output-only fields of m; top says m is a resource
// (or the Resource wrapper), whose revision and times are output only.
func clearOutputOnly(m protoreflect.Message, top bool) {
	if !m.IsValid() {
		return
	}
	md := m.Descriptor()
	switch {
	case md.FullName() == valueName:
		m.Clear(md.Fields().ByName("set"))
		m.Clear(md.Fields().ByName("sealed"))
		return
	case top && md.FullName() != resourceName:
		for _, f := range []protoreflect.Name{"revision", "create_time", "update_time", "key_prefix", "revoke_time", "key_hash", "token_prefix", "token_hash", "managed_by"} {
			if fd := md.Fields().ByName(f); fd != nil {
				m.Clear(fd)
			}
		}
	}
	childTop := md.FullName() == resourceName
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsMap():
			if fd.MapValue().Message() != nil {
				v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
					clearOutputOnly(mv.Message(), false)
					return true
				})
			}
		case fd.IsList():
			if fd.Message() != nil {
				for i := 0; i < v.List().Len(); i++ {
					clearOutputOnly(v.List().Get(i).Message(), false)
				}
			}
		case fd.Message() != nil:
			clearOutputOnly(v.Message(), childTop)
		}
		return true
	})
}

// Parse reads a config file: YAML documents separated by `---` lines (empty
// documents are skipped), or one JSON document. Each document is one
// resource, or a list of resources. Output-only fields are accepted and
// dropped, so what Marshal and `mmctl export` write parses back. Errors name
// the document (1-based) and, when known, the resource.
func Parse(r io.Reader) ([]*metamcpv1.Resource, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf")) // UTF-8 byte order mark
	var out []*metamcpv1.Resource
	if trimmed := bytes.TrimSpace(data); len(trimmed) > 0 && (trimmed[0] == '{' || trimmed[0] == '[') && json.Valid(trimmed) {
		if err := parseDocument(1, trimmed, &out); err != nil {
			return nil, err
		}
		return out, nil
	}
	looksJSON := bytes.HasPrefix(bytes.TrimSpace(data), []byte("{")) || bytes.HasPrefix(bytes.TrimSpace(data), []byte("["))
	for _, d := range splitDocuments(data) {
		j, err := sigsyaml.YAMLToJSONStrict(d.text)
		if err != nil {
			if looksJSON {
				// Meant as JSON: its syntax error says more than YAML's.
				var x any
				if jerr := json.Unmarshal(data, &x); jerr != nil {
					return nil, fmt.Errorf("document 1: %w", jsonError(data, jerr))
				}
			}
			return nil, fmt.Errorf("document %d: %s", d.number, yamlError(err, d.line))
		}
		if err := parseDocument(d.number, j, &out); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// document is one YAML document of a stream.
type document struct {
	number int    // 1-based
	line   int    // line of the file where text starts (1-based)
	text   []byte // without the separator line
}

// splitDocuments cuts a YAML stream at its `---` lines (a `---` may carry
// content after a space, as in `--- # comment`) and `...` end markers. An
// empty stretch before a leading `---` is no document.
func splitDocuments(data []byte) []document {
	var (
		docs  []document
		cur   = document{number: 1, line: 1}
		ended bool // cur follows a `...` marker
	)
	lines := bytes.SplitAfter(data, []byte("\n"))
	for i, l := range lines {
		body := bytes.TrimRight(l, "\r\n")
		isStart := bytes.HasPrefix(body, []byte("---")) && (len(body) == 3 || body[3] == ' ' || body[3] == '\t')
		isEnd := bytes.HasPrefix(body, []byte("...")) && (len(body) == 3 || body[3] == ' ' || body[3] == '\t')
		if !isStart && !isEnd {
			cur.text = append(cur.text, l...)
			continue
		}
		blank := len(bytes.TrimSpace(stripComments(cur.text))) == 0
		switch {
		case isStart && blank && (len(docs) == 0 && cur.number == 1 || ended):
			// A leading `---`, or `---` after `...`: the same document.
		default:
			docs = append(docs, cur)
			cur = document{number: cur.number + 1}
		}
		ended = isEnd
		cur.line = i + 1
		cur.text = nil
		if isStart && len(body) > 3 {
			// Content on the `---` line itself; keep columns for messages.
			cur.text = append(append(cur.text, []byte("   ")...), l[3:]...)
		} else {
			cur.line = i + 2
		}
	}
	docs = append(docs, cur)
	out := docs[:0]
	for _, d := range docs {
		if len(bytes.TrimSpace(stripComments(d.text))) > 0 {
			out = append(out, d)
		}
	}
	return out
}

// stripComments drops whole-line comments, to tell an empty document.
func stripComments(text []byte) []byte {
	var out []byte
	for _, l := range bytes.SplitAfter(text, []byte("\n")) {
		if t := bytes.TrimSpace(l); len(t) > 0 && t[0] != '#' {
			out = append(out, l...)
		}
	}
	return out
}

var yamlLineRE = regexp.MustCompile(`\bline (\d+)\b`)

// yamlError rewrites a YAML parser error on one line, with line numbers in
// the file instead of in the document.
func yamlError(err error, firstLine int) string {
	msg := err.Error()
	msg = strings.TrimPrefix(msg, "error converting YAML to JSON: ")
	msg = strings.TrimPrefix(msg, "yaml: ")
	msg = yamlLineRE.ReplaceAllStringFunc(msg, func(m string) string {
		n, _ := strconv.Atoi(strings.TrimPrefix(m, "line "))
		return fmt.Sprintf("line %d", n+firstLine-1)
	})
	msg = strings.Join(strings.Fields(msg), " ")
	return "invalid YAML: " + msg
}

// parseDocument decodes the JSON form of one document (a resource, a list of
// resources or null) and appends to out.
func parseDocument(number int, j []byte, out *[]*metamcpv1.Resource) error {
	dec := json.NewDecoder(bytes.NewReader(j))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return fmt.Errorf("document %d: %w", number, err)
	}
	switch t := v.(type) {
	case nil:
		return nil
	case []any:
		for i, item := range t {
			r, err := parseResource(fmt.Sprintf("document %d item %d", number, i+1), item)
			if err != nil {
				return err
			}
			*out = append(*out, r)
		}
		return nil
	default:
		r, err := parseResource(fmt.Sprintf("document %d", number), v)
		if err != nil {
			return err
		}
		*out = append(*out, r)
		return nil
	}
}

// parseResource turns one decoded document into a resource; where names the
// document in errors.
func parseResource(where string, v any) (*metamcpv1.Resource, error) {
	obj, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("%s: want a resource (a mapping with kind, name, ...), got %s", where, jsonType(v))
	}
	kind, _ := obj["kind"].(string)
	name, _ := obj["name"].(string)
	label := where
	switch {
	case kind != "" && name != "":
		label = fmt.Sprintf("%s (%s %q)", where, kind, name)
	case kind != "":
		label = fmt.Sprintf("%s (%s)", where, kind)
	}
	if av, ok := obj["apiVersion"]; ok {
		if s, _ := av.(string); s != APIVersion {
			return nil, fmt.Errorf("%s: apiVersion %s is not supported: use %s (or leave it out)", label, jsonText(av), APIVersion)
		}
	}
	kv, ok := obj["kind"]
	if !ok {
		return nil, fmt.Errorf("%s: kind is required: one of %s", label, kindNames())
	}
	if _, isString := kv.(string); !isString {
		return nil, fmt.Errorf("%s: kind must be a string: one of %s", label, kindNames())
	}
	r := &metamcpv1.Resource{}
	rm := r.ProtoReflect()
	var fd protoreflect.FieldDescriptor
	for _, k := range kinds {
		if k.kind == kind {
			fd = rm.Descriptor().Fields().ByName(k.field)
		}
	}
	if fd == nil {
		hint := ""
		for _, k := range kinds {
			if strings.EqualFold(k.kind, kind) {
				hint = fmt.Sprintf(" (did you mean %s?)", k.kind)
			}
		}
		switch strings.ToLower(kind) {
		case "apikey", "token":
			hint = ": API keys and tokens are not config-file resources; create them with mmctl"
		}
		return nil, fmt.Errorf("%s: unknown kind %q%s; want one of %s", label, kind, hint, kindNames())
	}
	delete(obj, "kind")
	delete(obj, "apiVersion")

	msg := rm.NewField(fd).Message()
	var problems []string
	normalize(obj, msg.Descriptor(), "", &problems)
	if len(problems) > 0 {
		return nil, fmt.Errorf("%s: %s", label, strings.Join(problems, "; "))
	}
	j, err := json.Marshal(obj)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", label, err)
	}
	if err := (protojson.UnmarshalOptions{}).Unmarshal(j, msg.Interface()); err != nil {
		return nil, fmt.Errorf("%s: %s", label, protojsonError(err))
	}
	rm.Set(fd, protoreflect.ValueOfMessage(msg))
	ClearOutputOnly(r)
	return r, nil
}

var (
	protojsonPrefixRE = regexp.MustCompile(`^proto:[\s\x{00a0}]*(\(line \d+:\d+\):[\s\x{00a0}]*)?`)
	protojsonLineRE   = regexp.MustCompile(`[\s\x{00a0}]*\(line \d+:\d+\)`)
)

// protojsonError drops protojson's "proto: (line 1:23):" prefix and line
// numbers: they are those of an internal re-encoding, meaningless to the user.
func protojsonError(err error) string {
	msg := protojsonPrefixRE.ReplaceAllString(err.Error(), "")
	return protojsonLineRE.ReplaceAllString(msg, "")
}

func jsonType(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case []any:
		return "a list"
	case map[string]any:
		return "a mapping"
	case string:
		return "a string"
	case bool:
		return "a boolean"
	default:
		return "a number"
	}
}

func jsonText(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

var durationName = (&durationpb.Duration{}).ProtoReflect().Descriptor().FullName()

// normalize walks obj, the JSON form of a message md found at path, and
// prepares it for protojson: it reports unknown fields (with a suggestion)
// and values it can tell are wrong, turns Go durations ("5m") into protojson
// ones ("300s"), and completes enum values given without their prefix.
func normalize(obj map[string]any, md protoreflect.MessageDescriptor, path string, problems *[]string) {
	at := func(field string) string {
		if path == "" {
			return field
		}
		return path + "." + field
	}
	for _, key := range sortedKeys(obj) {
		fd := fieldByJSONKey(md, key)
		if fd == nil {
			msg := fmt.Sprintf("unknown field %q", key)
			if s := suggest(md, key); s != "" {
				msg += fmt.Sprintf(" (did you mean %q?)", s)
			}
			if path != "" {
				msg = path + ": " + msg
			}
			*problems = append(*problems, msg)
			continue
		}
		fpath := at(fd.JSONName())
		v := obj[key]
		switch {
		case v == nil:
		case fd.IsMap():
			m, ok := v.(map[string]any)
			if !ok {
				*problems = append(*problems, fmt.Sprintf("%s: want a mapping, got %s", fpath, jsonType(v)))
				continue
			}
			for _, k := range sortedKeys(m) {
				m[k] = normalizeValue(fd.MapValue(), m[k], fmt.Sprintf("%s[%q]", fpath, k), problems)
			}
		case fd.IsList():
			l, ok := v.([]any)
			if !ok {
				*problems = append(*problems, fmt.Sprintf("%s: want a list, got %s", fpath, jsonType(v)))
				continue
			}
			for i := range l {
				l[i] = normalizeValue(fd, l[i], fmt.Sprintf("%s[%d]", fpath, i), problems)
			}
		default:
			obj[key] = normalizeValue(fd, v, fpath, problems)
		}
	}
}

// normalizeValue prepares one singular value of field fd (see normalize).
func normalizeValue(fd protoreflect.FieldDescriptor, v any, path string, problems *[]string) any {
	switch {
	case fd.Kind() == protoreflect.StringKind:
		switch v.(type) {
		case json.Number:
			*problems = append(*problems, fmt.Sprintf("%s: %s is a number, and text is expected here: put it in quotes", path, jsonText(v)))
		case bool:
			*problems = append(*problems, fmt.Sprintf("%s: %s is a boolean in YAML, and text is expected here: put it in quotes", path, jsonText(v)))
		}
	case fd.Kind() == protoreflect.EnumKind:
		if s, ok := v.(string); ok {
			return normalizeEnum(fd.Enum(), s, path, problems)
		}
	case fd.Message() != nil && fd.Message().FullName() == durationName:
		if v == nil {
			return v
		}
		s, ok := v.(string)
		if ok && protojson.Unmarshal([]byte(strconv.Quote(s)), &durationpb.Duration{}) == nil {
			return s // already protojson's form, including beyond Go's range
		}
		d, err := time.ParseDuration(s)
		if !ok || err != nil {
			*problems = append(*problems, fmt.Sprintf("%s: %s is not a duration: write it like \"30s\", \"5m\" or \"1h30m\"", path, jsonText(v)))
			return v
		}
		return protojsonDuration(d)
	case fd.Message() != nil && !strings.HasPrefix(string(fd.Message().FullName()), "google.protobuf."):
		obj, ok := v.(map[string]any)
		if !ok && v != nil {
			*problems = append(*problems, fmt.Sprintf("%s: want a mapping, got %s", path, jsonType(v)))
			return v
		}
		normalize(obj, fd.Message(), path, problems)
	case fd.Kind() == protoreflect.BoolKind:
		if _, ok := v.(bool); !ok && v != nil {
			*problems = append(*problems, fmt.Sprintf("%s: want true or false, got %s", path, jsonText(v)))
		}
	case fd.Message() == nil && fd.Kind() != protoreflect.BytesKind:
		// A number: protojson takes it as a number or a numeric string.
		switch x := v.(type) {
		case json.Number:
		case string:
			if _, err := strconv.ParseFloat(x, 64); err != nil {
				*problems = append(*problems, fmt.Sprintf("%s: want a number, got %s", path, jsonText(v)))
			}
		default:
			if v != nil {
				*problems = append(*problems, fmt.Sprintf("%s: want a number, got %s", path, jsonText(v)))
			}
		}
	}
	return v
}

// normalizeEnum accepts an enum value in any spelling canonical.ParseEnum
// takes ("per_client", "PER_CLIENT", "SESSION_MODE_PER_CLIENT") and returns
// its full name, which protojson reads.
func normalizeEnum(ed protoreflect.EnumDescriptor, s, path string, problems *[]string) any {
	ev, err := canonical.ParseEnum(ed, s)
	if err != nil {
		*problems = append(*problems, fmt.Sprintf("%s: %v", path, err))
		return s
	}
	return string(ev.Name())
}

func fieldByJSONKey(md protoreflect.MessageDescriptor, key string) protoreflect.FieldDescriptor {
	if fd := md.Fields().ByJSONName(key); fd != nil {
		return fd
	}
	return md.Fields().ByTextName(key)
}

// suggest returns the field name closest to a misspelt key, or "".
func suggest(md protoreflect.MessageDescriptor, key string) string {
	best, bestDist := "", 3
	lower := strings.ToLower(key)
	for i := 0; i < md.Fields().Len(); i++ {
		fd := md.Fields().Get(i)
		for _, cand := range []string{fd.JSONName(), string(fd.Name())} {
			if d := editDistance(lower, strings.ToLower(cand)); d < bestDist {
				best, bestDist = fd.JSONName(), d
			}
		}
	}
	return best
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// protojsonDuration writes d the way protojson reads it: seconds with an
// optional fraction and an "s".
func protojsonDuration(d time.Duration) string {
	sec, nanos := int64(d/time.Second), int64(d%time.Second)
	if nanos == 0 {
		return fmt.Sprintf("%ds", sec)
	}
	sign := ""
	if d < 0 {
		sign, sec, nanos = "-", -sec, -nanos
	}
	return fmt.Sprintf("%s%d.%09ds", sign, sec, nanos)
}

// formatDuration writes a duration for people: "90s" as "1m30s", "3600s" as
// "1h", fractions as Go does ("1.5s", "250ms").
func formatDuration(pd *durationpb.Duration) string {
	if pd.CheckValid() != nil || pd.GetSeconds() > math.MaxInt64/int64(time.Second) || pd.GetSeconds() < math.MinInt64/int64(time.Second) {
		b, _ := protojson.Marshal(pd)
		s, _ := strconv.Unquote(string(b))
		return s
	}
	d := pd.AsDuration()
	if d == 0 {
		return "0s"
	}
	if d < 0 || d%time.Second != 0 {
		return d.String()
	}
	var b strings.Builder
	if h := d / time.Hour; h > 0 {
		fmt.Fprintf(&b, "%dh", h)
		d -= h * time.Hour
	}
	if m := d / time.Minute; m > 0 {
		fmt.Fprintf(&b, "%dm", m)
		d -= m * time.Minute
	}
	if s := d / time.Second; s > 0 {
		fmt.Fprintf(&b, "%ds", s)
	}
	return b.String()
}

// Marshal writes resources as YAML documents, in the given order, each
// starting with apiVersion, kind and name, then the other fields in their
// declaration order with camelCase names. Output-only fields are left out,
// and a secret shows as `{secret: true}` with no value: an export never leaks
// secrets, and applying it back keeps the stored ones.
func Marshal(w io.Writer, resources []*metamcpv1.Resource) error {
	var buf bytes.Buffer
	for i, r := range resources {
		kind, _ := KindOf(r)
		if kind == "" {
			return fmt.Errorf("resource %d has no kind: set server, namespace, endpoint or rateLimit", i+1)
		}
		r = proto.Clone(r).(*metamcpv1.Resource)
		ClearOutputOnly(r)
		canonical.Strip(r)
		var msg protoreflect.Message
		r.ProtoReflect().Range(func(_ protoreflect.FieldDescriptor, v protoreflect.Value) bool {
			msg = v.Message()
			return false
		})
		doc := yaml.MapSlice{{Key: "apiVersion", Value: APIVersion}, {Key: "kind", Value: kind}}
		doc = append(doc, marshalMessage(msg)...)
		out, err := yaml.Marshal(doc)
		if err != nil {
			return fmt.Errorf("encode %s: %w", kind, err)
		}
		if i > 0 {
			buf.WriteString("---\n")
		}
		buf.Write(out)
	}
	_, err := w.Write(buf.Bytes())
	return err
}

// marshalMessage is the ordered YAML form of m's populated fields.
func marshalMessage(m protoreflect.Message) yaml.MapSlice {
	out := yaml.MapSlice{}
	md := m.Descriptor()
	secret := md.FullName() == valueName && m.Get(md.Fields().ByName("secret")).Bool()
	for i := 0; i < md.Fields().Len(); i++ {
		fd := md.Fields().Get(i)
		if !m.Has(fd) {
			continue
		}
		if secret && fd.Name() == "value" {
			continue // never written out
		}
		v := m.Get(fd)
		var y any
		switch {
		case fd.IsMap():
			keys := make([]protoreflect.MapKey, 0, v.Map().Len())
			v.Map().Range(func(k protoreflect.MapKey, _ protoreflect.Value) bool {
				keys = append(keys, k)
				return true
			})
			sort.Slice(keys, func(a, b int) bool { return keys[a].String() < keys[b].String() })
			ms := make(yaml.MapSlice, 0, len(keys))
			for _, k := range keys {
				ms = append(ms, yaml.MapItem{Key: k.String(), Value: marshalScalar(fd.MapValue(), v.Map().Get(k))})
			}
			y = ms
		case fd.IsList():
			l := make([]any, v.List().Len())
			for j := range l {
				l[j] = marshalScalar(fd, v.List().Get(j))
			}
			y = l
		default:
			y = marshalScalar(fd, v)
		}
		out = append(out, yaml.MapItem{Key: fd.JSONName(), Value: y})
	}
	return out
}

// marshalScalar is the YAML form of one singular value of field fd, as
// protojson writes it except that 64-bit integers stay numbers and
// durations read like "1m30s".
func marshalScalar(fd protoreflect.FieldDescriptor, v protoreflect.Value) any {
	switch fd.Kind() {
	case protoreflect.MessageKind, protoreflect.GroupKind:
		m := v.Message()
		switch fn := m.Descriptor().FullName(); {
		case fn == durationName:
			return formatDuration(m.Interface().(*durationpb.Duration))
		case strings.HasPrefix(string(fn), "google.protobuf."):
			b, err := protojson.Marshal(m.Interface())
			if err != nil {
				return nil
			}
			var x any
			_ = json.Unmarshal(b, &x)
			return x
		}
		return marshalMessage(m)
	case protoreflect.EnumKind:
		if ev := fd.Enum().Values().ByNumber(v.Enum()); ev != nil {
			return canonical.EnumName(ev)
		}
		return int64(v.Enum())
	case protoreflect.BytesKind:
		return base64.StdEncoding.EncodeToString(v.Bytes())
	case protoreflect.BoolKind:
		return v.Bool()
	case protoreflect.StringKind:
		return v.String()
	case protoreflect.FloatKind, protoreflect.DoubleKind:
		f := v.Float()
		switch {
		case math.IsNaN(f):
			return "NaN"
		case math.IsInf(f, 1):
			return "Infinity"
		case math.IsInf(f, -1):
			return "-Infinity"
		}
		return f
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind, protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return v.Uint()
	default:
		return v.Int()
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// UnmarshalJSON reads into m the JSON that `mmctl ... -o json` prints of
// it: protojson, with enum values in any spelling ParseEnum takes (mmctl
// writes them lowercase, which protojson alone does not read) and durations
// as Go writes them too.
func UnmarshalJSON(data []byte, m proto.Message) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var obj map[string]any
	if err := dec.Decode(&obj); err != nil {
		return fmt.Errorf("not a JSON object: %w", err)
	}
	var problems []string
	normalize(obj, m.ProtoReflect().Descriptor(), "", &problems)
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "; "))
	}
	j, err := json.Marshal(obj)
	if err != nil {
		return err
	}
	if err := protojson.Unmarshal(j, m); err != nil {
		return errors.New(protojsonError(err))
	}
	return nil
}
