package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
	"sigs.k8s.io/yaml"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/pkg/canonical"
	"github.com/metamcp/metamcp/pkg/configfile"
)

// secretShown stands for a secret value that is set.
const secretShown = "<set>"

// secretUnset stands for a secret value that has no stored value.
const secretUnset = "<not set>"

// none is shown for an empty cell.
const none = "-"

// marshalJSON encodes m as indented protojson with stable whitespace.
func marshalJSON(m proto.Message) ([]byte, error) {
	raw, err := protojson.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode %s as JSON: %w", m.ProtoReflect().Descriptor().Name(), err)
	}
	raw = lowerEnums(raw, m.ProtoReflect().Descriptor())
	// protojson randomizes its whitespace on purpose; re-indent for output
	// that scripts and diffs can rely on.
	var buf bytes.Buffer
	if err := json.Indent(&buf, raw, "", "  "); err != nil {
		return nil, fmt.Errorf("indent JSON: %w", err)
	}
	buf.WriteByte('\n')
	return buf.Bytes(), nil
}

// marshalListJSON encodes a list response like marshalJSON, but keeps an
// empty list as [] instead of leaving it out, so that scripts can iterate
// over `.servers[]` whether or not there are servers.
func marshalListJSON(resp proto.Message) ([]byte, error) {
	raw, err := protojson.Marshal(resp)
	if err != nil {
		return nil, fmt.Errorf("encode %s as JSON: %w", resp.ProtoReflect().Descriptor().Name(), err)
	}
	raw = lowerEnums(raw, resp.ProtoReflect().Descriptor())
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil {
		return nil, fmt.Errorf("decode JSON: %w", err)
	}
	fields := resp.ProtoReflect().Descriptor().Fields()
	for i := 0; i < fields.Len(); i++ {
		if fd := fields.Get(i); fd.IsList() {
			if _, ok := obj[fd.JSONName()]; !ok {
				obj[fd.JSONName()] = json.RawMessage("[]")
			}
		}
	}
	// encoding/json sorts the keys: stable output.
	b, err := json.MarshalIndent(obj, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode JSON: %w", err)
	}
	return append(b, '\n'), nil
}

// lowerEnums rewrites, in protojson output for messages md, every enum value
// ("SESSION_MODE_PER_CLIENT") into its one spelling ("per_client"). Enum
// names are upper case and field names camelCase, so only values match.
func lowerEnums(raw []byte, md protoreflect.MessageDescriptor) []byte {
	var pairs []string
	seen := map[protoreflect.FullName]bool{}
	var walk func(md protoreflect.MessageDescriptor)
	walk = func(md protoreflect.MessageDescriptor) {
		if seen[md.FullName()] {
			return
		}
		seen[md.FullName()] = true
		for i := 0; i < md.Fields().Len(); i++ {
			fd := md.Fields().Get(i)
			if fd.IsMap() {
				fd = fd.MapValue()
			}
			if ed := fd.Enum(); ed != nil && !seen[ed.FullName()] {
				seen[ed.FullName()] = true
				for j := 0; j < ed.Values().Len(); j++ {
					ev := ed.Values().Get(j)
					pairs = append(pairs, `"`+string(ev.Name())+`"`, `"`+canonical.EnumName(ev)+`"`)
				}
			}
			if fd.Message() != nil {
				walk(fd.Message())
			}
		}
	}
	walk(md)
	if len(pairs) == 0 {
		return raw
	}
	return []byte(strings.NewReplacer(pairs...).Replace(string(raw)))
}

// writeJSON prints m as JSON.
func writeJSON(w io.Writer, m proto.Message) error {
	b, err := marshalJSON(m)
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}

// writeYAML prints m as the YAML form of its protojson.
func writeYAML(w io.Writer, m proto.Message) error {
	b, err := marshalJSON(m)
	if err != nil {
		return err
	}
	y, err := yaml.JSONToYAML(b)
	if err != nil {
		return fmt.Errorf("encode YAML: %w", err)
	}
	_, err = w.Write(y)
	return err
}

// asResource wraps a config kind's message in a Resource; nil for other kinds.
func asResource(m proto.Message) *metamcpv1.Resource {
	switch v := m.(type) {
	case *metamcpv1.Server:
		return &metamcpv1.Resource{Kind: &metamcpv1.Resource_Server{Server: v}}
	case *metamcpv1.Namespace:
		return &metamcpv1.Resource{Kind: &metamcpv1.Resource_Namespace{Namespace: v}}
	case *metamcpv1.Endpoint:
		return &metamcpv1.Resource{Kind: &metamcpv1.Resource_Endpoint{Endpoint: v}}
	case *metamcpv1.RateLimitPolicy:
		return &metamcpv1.Resource{Kind: &metamcpv1.Resource_RateLimit{RateLimit: v}}
	}
	return nil
}

// writeConfigYAML prints config resources in the config-file form, the one
// `mmctl apply` reads.
func writeConfigYAML(w io.Writer, items []proto.Message) error {
	res := make([]*metamcpv1.Resource, 0, len(items))
	for _, m := range items {
		r := asResource(m)
		if r == nil {
			return fmt.Errorf("%s is not a config resource", m.ProtoReflect().Descriptor().Name())
		}
		res = append(res, r)
	}
	if err := configfile.Marshal(w, res); err != nil {
		return fmt.Errorf("encode YAML: %w", err)
	}
	return nil
}

// printItems prints what `mmctl get` read: one item (single) or a list.
func (a *app) printItems(k *kind, resp proto.Message, items []proto.Message, single bool) error {
	switch a.output {
	case outputJSON:
		if single {
			return writeJSON(a.stdout, items[0])
		}
		b, err := marshalListJSON(resp)
		if err != nil {
			return err
		}
		_, err = a.stdout.Write(b)
		return err
	case outputYAML:
		if k.config {
			return writeConfigYAML(a.stdout, items)
		}
		if single {
			return writeYAML(a.stdout, items[0])
		}
		return writeYAML(a.stdout, resp)
	}
	if len(items) == 0 {
		fmt.Fprintf(a.stderr, "No %s found.\n", k.plural)
		return nil
	}
	t := a.table(k, resp, items)
	return t.write(a.stdout)
}

// table is rows of cells printed in aligned columns.
type table struct {
	header []string
	rows   [][]string
}

func (t *table) add(cells ...string) {
	for i, c := range cells {
		if c == "" {
			cells[i] = none
		}
	}
	t.rows = append(t.rows, cells)
}

func (t *table) write(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 3, ' ', 0)
	fmt.Fprintln(tw, strings.Join(t.header, "\t"))
	for _, r := range t.rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	return tw.Flush()
}

// table builds the table view of items of kind k.
func (a *app) table(k *kind, resp proto.Message, items []proto.Message) *table {
	t := &table{}
	switch k.name {
	case "server":
		t.header = []string{"NAME", "TRANSPORT", "TARGET", "SESSION-MODE", "REVISION", "AGE"}
		for _, m := range items {
			s := m.(*metamcpv1.Server)
			transport, target := serverTarget(s)
			t.add(s.GetName(), transport, truncate(target, 60), sessionModeName(s.GetSessionMode()),
				revision(s.GetRevision()), a.age(s.GetCreateTime()))
		}
	case "namespace":
		t.header = []string{"NAME", "SERVERS", "SEPARATOR", "REVISION", "AGE"}
		for _, m := range items {
			n := m.(*metamcpv1.Namespace)
			var members []string
			for _, mem := range n.GetMembers() {
				members = append(members, memberSpec(mem))
			}
			t.add(n.GetName(), truncate(strings.Join(members, ","), 60), separator(n.GetSeparator()),
				revision(n.GetRevision()), a.age(n.GetCreateTime()))
		}
	case "endpoint":
		t.header = []string{"NAME", "NAMESPACE", "AUTH", "RATE-LIMITS", "REVISION", "AGE"}
		for _, m := range items {
			e := m.(*metamcpv1.Endpoint)
			t.add(e.GetName(), e.GetNamespace(), authSummary(e.GetAuth()), strings.Join(e.GetRateLimits(), ","),
				revision(e.GetRevision()), a.age(e.GetCreateTime()))
		}
	case "ratelimit":
		t.header = []string{"NAME", "RATE", "BURST", "KEY", "SERVER", "TOOL", "ON-REDIS-FAILURE", "REVISION", "AGE"}
		for _, m := range items {
			p := m.(*metamcpv1.RateLimitPolicy)
			t.add(p.GetName(), rateSpec(p), burst(p), rateLimitKeyName(p.GetKey()), p.GetServer(), p.GetTool(),
				failureModeName(p.GetOnRedisFailure()), revision(p.GetRevision()), a.age(p.GetCreateTime()))
		}
	case "apikey":
		t.header = []string{"NAME", "PRINCIPAL", "ENDPOINTS", "PREFIX", "EXPIRES", "STATUS", "AGE"}
		for _, m := range items {
			key := m.(*metamcpv1.ApiKey)
			principal := key.GetPrincipal()
			if principal == "" {
				principal = key.GetName()
			}
			t.add(key.GetName(), principal, strings.Join(key.GetEndpoints(), ","), prefixShown(key.GetKeyPrefix()),
				a.expires(key.GetExpireTime()), a.credentialStatus(key.GetRevokeTime(), key.GetExpireTime()), a.age(key.GetCreateTime()))
		}
	case "token":
		t.header = []string{"NAME", "SCOPE", "PREFIX", "EXPIRES", "STATUS", "AGE"}
		for _, m := range items {
			tok := m.(*metamcpv1.Token)
			t.add(tok.GetName(), tokenScopeName(tok.GetScope()), prefixShown(tok.GetTokenPrefix()),
				a.expires(tok.GetExpireTime()), a.credentialStatus(tok.GetRevokeTime(), tok.GetExpireTime()), a.age(tok.GetCreateTime()))
		}
	case "dataplane":
		r, _ := resp.(*metamcpv1.ListDataPlanesResponse)
		t.header = []string{"NODE", "ADDRESS", "VERSION", "CONNECTED", "REVISION", "STATUS", "LAST-SEEN"}
		for _, m := range items {
			d := m.(*metamcpv1.DataPlane)
			lastSeen := none
			if d.GetLastSeen() != nil {
				lastSeen = a.age(d.GetLastSeen()) + " ago"
			}
			t.add(d.GetNodeId(), d.GetAddress(), d.GetVersion(), yesNo(d.GetConnected()),
				revision(d.GetAppliedRevision()), dataPlaneStatus(d, r), lastSeen)
		}
	}
	return t
}

// dataPlaneStatus flags a data plane that runs an older revision, refused
// the last one (perhaps keeping only its keys), leaves servers out, or
// serves (or served until it connected) a config this store did not make.
// r is the control plane's answer, for its revision and store id; nil when
// unknown.
func dataPlaneStatus(d *metamcpv1.DataPlane, r *metamcpv1.ListDataPlanesResponse) string {
	current, store := r.GetRevision(), r.GetStoreId()
	var parts []string
	otherStore := store != "" && d.GetStoreId() != "" && d.GetStoreId() != store
	if otherStore {
		parts = append(parts, fmt.Sprintf("serves another store's config (store %s)", shortID(d.GetStoreId())))
	} else if prev := d.GetPreviousStoreRevision(); prev > 0 {
		if id := d.GetPreviousStoreId(); id != "" && id != store {
			parts = append(parts, fmt.Sprintf("took this store's config over revision %d of another store (%s)", prev, shortID(id)))
		} else {
			parts = append(parts, fmt.Sprintf("took this store's config over revision %d, which this store never reached (restored or reset)", prev))
		}
	}
	if e := d.GetLastError(); e != "" {
		if d.GetApplyOutcome() == metamcpv1.ApplyOutcome_APPLY_OUTCOME_KEYS_ONLY && d.GetKeysRevision() > 0 {
			parts = append(parts, fmt.Sprintf("refused (keys of %d applied): %s", d.GetKeysRevision(), oneLine(e)))
		} else {
			parts = append(parts, "refused: "+oneLine(e))
		}
	}
	if rs := d.GetRefusedServers(); len(rs) > 0 {
		parts = append(parts, "partial: "+refusedServers(rs))
	}
	switch {
	case otherStore || current <= 0:
	case d.GetAppliedRevision() < current:
		parts = append(parts, "stale")
	case d.GetAppliedRevision() > current:
		parts = append(parts, "ahead of this store")
	}
	if len(parts) == 0 {
		return "ok"
	}
	return strings.Join(parts, ", ")
}

// shortID is the first 8 characters of a store id, enough to tell stores apart.
func shortID(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	return id
}

// refusedServers lists the servers a data plane leaves out, with why.
func refusedServers(refused []*metamcpv1.RefusedServer) string {
	out := make([]string, len(refused))
	for i, r := range refused {
		out[i] = r.GetServer() + ": " + oneLine(r.GetReason())
	}
	return strings.Join(out, "; ")
}

// serverTarget is a server's transport name and what it connects to.
func serverTarget(s *metamcpv1.Server) (transport, target string) {
	switch t := s.GetTransport().(type) {
	case *metamcpv1.Server_Stdio:
		return "stdio", shellJoin(append([]string{t.Stdio.GetCommand()}, t.Stdio.GetArgs()...))
	case *metamcpv1.Server_Sse:
		return "sse", t.Sse.GetUrl()
	case *metamcpv1.Server_StreamableHttp:
		return "streamable_http", t.StreamableHttp.GetUrl()
	}
	return "", ""
}

// memberSpec is a namespace member in the --server form: `gh` (prefix is the
// server's name), `gh:g` (prefix g) or `gh:` (no prefix).
func memberSpec(m *metamcpv1.NamespaceMember) string {
	if m.Prefix == nil {
		return m.GetServer()
	}
	return m.GetServer() + ":" + m.GetPrefix()
}

func separator(s string) string {
	if s == "" {
		return "__"
	}
	return s
}

func authSummary(a *metamcpv1.EndpointAuth) string {
	if a.GetAnonymous() {
		return "anonymous"
	}
	if a.GetJwt() != nil {
		return "api-key,jwt"
	}
	return "api-key"
}

func rateSpec(p *metamcpv1.RateLimitPolicy) string {
	period := time.Minute
	if p.GetPeriod() != nil {
		period = p.GetPeriod().AsDuration()
	}
	return fmt.Sprintf("%d/%s", p.GetRate(), shortDuration(period))
}

func burst(p *metamcpv1.RateLimitPolicy) string {
	if p.Burst == nil {
		return strconv.FormatInt(p.GetRate(), 10)
	}
	return strconv.FormatInt(p.GetBurst(), 10)
}

func prefixShown(p string) string {
	if p == "" {
		return ""
	}
	return p + "..."
}

func revision(r int64) string {
	if r == 0 {
		return ""
	}
	return strconv.FormatInt(r, 10)
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// sessionModeName is the one spelling of a session mode, its default for
// the zero value.
func sessionModeName(m metamcpv1.SessionMode) string {
	return canonical.EnumEffective(m.Descriptor(), protoreflect.EnumNumber(m))
}

func rateLimitKeyName(k metamcpv1.RateLimitKey) string {
	return canonical.EnumEffective(k.Descriptor(), protoreflect.EnumNumber(k))
}

func failureModeName(m metamcpv1.RateLimitFailureMode) string {
	return canonical.EnumEffective(m.Descriptor(), protoreflect.EnumNumber(m))
}

func tokenScopeName(s metamcpv1.TokenScope) string {
	return canonical.EnumNumberName(s.Descriptor(), protoreflect.EnumNumber(s))
}

// credentialStatus says whether an API key or token works.
func (a *app) credentialStatus(revoked, expires *timestamppb.Timestamp) string {
	switch {
	case revoked != nil:
		return "revoked"
	case expires != nil && !expires.AsTime().After(a.now()):
		return "expired"
	default:
		return "active"
	}
}

// expires shows an expiry as a date, or "never".
func (a *app) expires(ts *timestamppb.Timestamp) string {
	if ts == nil {
		return "never"
	}
	return ts.AsTime().UTC().Format(time.RFC3339)
}

// age is how long ago ts was, kubectl style (45s, 12m, 3h, 5d).
func (a *app) age(ts *timestamppb.Timestamp) string {
	if ts == nil {
		return ""
	}
	return humanAge(a.now().Sub(ts.AsTime()))
}

// humanAge rounds d down to its largest unit.
func humanAge(d time.Duration) string {
	switch {
	case d < 0:
		return "0s"
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d/time.Second))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d/time.Minute))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d/time.Hour))
	case d < 2*365*24*time.Hour:
		return fmt.Sprintf("%dd", int(d/(24*time.Hour)))
	default:
		return fmt.Sprintf("%dy", int(d/(365*24*time.Hour)))
	}
}

// shortDuration prints d without trailing zero units: 1m, 1h30m, 90s.
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// durationShown shows an optional duration; zero means the data plane's
// default.
func durationShown(d *durationpb.Duration) string {
	if d == nil || d.AsDuration() == 0 {
		return "default"
	}
	return shortDuration(d.AsDuration())
}

// truncate shortens s to at most n runes, marking the cut.
func truncate(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-3]) + "..."
}

// oneLine folds a multi-line message into one line.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// shellJoin quotes words so that the result, pasted into a shell (or passed
// to --stdio), gives back the same words.
func shellJoin(words []string) string {
	out := make([]string, len(words))
	for i, w := range words {
		out[i] = shellQuote(w)
	}
	return strings.Join(out, " ")
}

func shellQuote(w string) string {
	if w == "" {
		return "''"
	}
	if strings.IndexFunc(w, func(r rune) bool {
		safe := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("@%+=:,./-_", r)
		return !safe
	}) < 0 {
		return w
	}
	return "'" + strings.ReplaceAll(w, "'", `'\''`) + "'"
}

// valueShown shows one Value: plain text, or a placeholder for a secret.
func valueShown(v *metamcpv1.Value) string {
	if v.GetSecret() {
		if v.GetSet() || v.GetValue() != "" || len(v.GetSealed()) > 0 {
			return secretShown
		}
		return secretUnset
	}
	return v.GetValue()
}

// sortedKeys returns a map's keys in order.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
