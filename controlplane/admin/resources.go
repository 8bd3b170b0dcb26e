package admin

import (
	"fmt"
	"slices"
	"sort"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/timestamppb"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/controlplane/secret"
	"github.com/metamcp/metamcp/controlplane/store"
	"github.com/metamcp/metamcp/pkg/canonical"
	"github.com/metamcp/metamcp/pkg/snapshot"
)

// resource is a message kept as one store record.
type resource interface {
	proto.Message
	GetName() string
}

// configKinds are the kinds Apply and Export handle, in export order.
var configKinds = []store.Kind{store.KindServer, store.KindNamespace, store.KindEndpoint, store.KindRateLimitPolicy}

// newResource returns an empty message of a kind.
func newResource(kind store.Kind) resource {
	switch kind {
	case store.KindServer:
		return new(metamcpv1.Server)
	case store.KindNamespace:
		return new(metamcpv1.Namespace)
	case store.KindEndpoint:
		return new(metamcpv1.Endpoint)
	case store.KindRateLimitPolicy:
		return new(metamcpv1.RateLimitPolicy)
	case store.KindApiKey:
		return new(metamcpv1.ApiKey)
	case store.KindToken:
		return new(metamcpv1.Token)
	}
	panic(fmt.Sprintf("admin: no message for kind %q", kind))
}

// outputOnlyFields are the fields the store fills in from the record; they are
// never stored in a record's data and are ignored in client input.
var outputOnlyFields = []protoreflect.Name{"revision", "create_time", "update_time"}

// clearOutputOnly clears the fields filled from the record.
func clearOutputOnly(m proto.Message) {
	r := m.ProtoReflect()
	fields := r.Descriptor().Fields()
	for _, n := range outputOnlyFields {
		if fd := fields.ByName(n); fd != nil {
			r.Clear(fd)
		}
	}
}

// setOutputOnly fills the output-only fields a message has from its record.
func setOutputOnly(m proto.Message, rec store.Record) {
	r := m.ProtoReflect()
	fields := r.Descriptor().Fields()
	if fd := fields.ByName("revision"); fd != nil {
		r.Set(fd, protoreflect.ValueOfInt64(rec.Revision))
	}
	setTime := func(name protoreflect.Name, t time.Time) {
		if fd := fields.ByName(name); fd != nil && !t.IsZero() {
			r.Set(fd, protoreflect.ValueOfMessage(timestamppb.New(t).ProtoReflect()))
		}
	}
	setTime("create_time", rec.CreateTime)
	setTime("update_time", rec.UpdateTime)
}

// decode parses a record's data.
func decode(rec store.Record) (resource, error) {
	m := newResource(rec.Kind)
	if err := proto.Unmarshal(rec.Data, m); err != nil {
		return nil, fmt.Errorf("decode %s %q: %w", rec.Kind, rec.Name, err)
	}
	if slices.Contains(configKinds, rec.Kind) {
		// Records written before defaults were kept unset may hold them.
		canonical.Strip(m)
	}
	return m, nil
}

// encode returns the deterministic wire form of a message for a record.
func encode(m proto.Message) ([]byte, error) {
	return proto.MarshalOptions{Deterministic: true}.Marshal(m)
}

// changedFields returns the JSON names (camelCase) of the top-level fields
// that differ between two messages of one type, in field-number order.
func changedFields(a, b proto.Message) []string {
	ra, rb := a.ProtoReflect(), b.ProtoReflect()
	fields := ra.Descriptor().Fields()
	var out []string
	for i := range fields.Len() {
		fd := fields.Get(i)
		if !fieldEqual(ra, rb, fd) {
			out = append(out, fd.JSONName())
		}
	}
	return out
}

// fieldEqual compares one field of two messages by copying it alone into
// fresh messages, so proto.Equal's rules (presence, NaN, maps) apply.
func fieldEqual(a, b protoreflect.Message, fd protoreflect.FieldDescriptor) bool {
	only := func(m protoreflect.Message) proto.Message {
		out := m.New()
		if m.Has(fd) {
			out.Set(fd, m.Get(fd))
		}
		return out.Interface()
	}
	return proto.Equal(only(a), only(b))
}

// valueRef is one Value field of a server.
type valueRef struct {
	// path names the field in messages as snapshot.Violation does (JSON
	// names), e.g. `streamableHttp.headers["X-Key"]`.
	path string
	// slot names the field in a sealed value's additional data (proto
	// names), e.g. "stdio.env/GITHUB_TOKEN" or "streamable_http.bearer_token".
	// Changing it makes stored secrets unreadable.
	slot   string
	v      *metamcpv1.Value
	bearer bool // always a secret
}

// serverValues lists every Value of a server, sorted by path.
func serverValues(s *metamcpv1.Server) []valueRef {
	var out []valueRef
	addMap := func(field, jsonField string, m map[string]*metamcpv1.Value) {
		for k, v := range m {
			if v != nil {
				out = append(out, valueRef{path: fmt.Sprintf("%s[%q]", jsonField, k), slot: field + "/" + k, v: v})
			}
		}
	}
	addHTTP := func(field, jsonField string, h *metamcpv1.HTTPTransport) {
		if h == nil {
			return
		}
		addMap(field+".headers", jsonField+".headers", h.GetHeaders())
		if h.BearerToken != nil {
			out = append(out, valueRef{path: jsonField + ".bearerToken", slot: field + ".bearer_token", v: h.BearerToken, bearer: true})
		}
	}
	switch t := s.GetTransport().(type) {
	case *metamcpv1.Server_Stdio:
		if t.Stdio != nil {
			addMap("stdio.env", "stdio.env", t.Stdio.GetEnv())
		}
	case *metamcpv1.Server_Sse:
		addHTTP("sse", "sse", t.Sse)
	case *metamcpv1.Server_StreamableHttp:
		addHTTP("streamable_http", "streamableHttp", t.StreamableHttp)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].slot < out[j].slot })
	return out
}

// secretAAD binds a sealed value to the server and field it belongs to, e.g.
// "Server/github/stdio.env/GITHUB_TOKEN".
func secretAAD(server, slot string) []byte {
	return []byte(string(store.KindServer) + "/" + server + "/" + slot)
}

// sanitizeServerInput drops what a client may not set on a Value: `sealed`
// and `set`; a bearer token is always a secret.
func sanitizeServerInput(s *metamcpv1.Server) {
	for _, ref := range serverValues(s) {
		ref.v.Sealed = nil
		ref.v.Set = false
		if ref.bearer {
			ref.v.Secret = true
		}
	}
}

// unresolvedRefs reports each Value of a server that still names where its
// text comes from (from_env, from_file): the client resolves those, never
// the control plane, whose environment and files are not the user's.
func unresolvedRefs(s *metamcpv1.Server) []snapshot.Violation {
	var out []snapshot.Violation
	for _, ref := range serverValues(s) {
		if ref.v.GetFromEnv() != "" || ref.v.GetFromFile() != "" {
			out = append(out, snapshot.Violation{
				Kind: string(store.KindServer), Name: s.GetName(), Field: ref.path,
				Description: "fromEnv and fromFile are resolved by the client (mmctl apply reads them): send the value itself",
			})
		}
	}
	return out
}

// unsealServer replaces every sealed secret of a stored server by its clear
// text, in place.
func unsealServer(sealer *secret.Sealer, s *metamcpv1.Server) error {
	for _, ref := range serverValues(s) {
		if !ref.v.GetSecret() {
			continue
		}
		plain, err := sealer.Open(ref.v.GetSealed(), secretAAD(s.GetName(), ref.slot))
		if err != nil {
			return fmt.Errorf("server %q %s: %w", s.GetName(), ref.path, err)
		}
		ref.v.Value = string(plain)
		ref.v.Sealed = nil
	}
	return nil
}

// sealServer replaces every clear secret of a server by its sealed form, in
// place.
func sealServer(sealer *secret.Sealer, s *metamcpv1.Server) error {
	for _, ref := range serverValues(s) {
		if !ref.v.GetSecret() {
			continue
		}
		sealed, err := sealer.Seal([]byte(ref.v.GetValue()), secretAAD(s.GetName(), ref.slot))
		if err != nil {
			return fmt.Errorf("server %q %s: %w", s.GetName(), ref.path, err)
		}
		ref.v.Value = ""
		ref.v.Sealed = sealed
	}
	return nil
}

// redactServer replaces every secret by the placeholder clients see:
// Value{secret: true, set: true}, in place.
func redactServer(s *metamcpv1.Server) {
	for _, ref := range serverValues(s) {
		if ref.v.GetSecret() {
			set := len(ref.v.GetSealed()) > 0 || ref.v.GetValue() != ""
			ref.v.Reset()
			ref.v.Secret = true
			ref.v.Set = set
		}
	}
}

// redact removes from a stored message what no admin client may see: secret
// values and key hashes.
func redact(m resource) {
	switch r := m.(type) {
	case *metamcpv1.Server:
		redactServer(r)
	case *metamcpv1.ApiKey:
		r.KeyHash = nil
	case *metamcpv1.Token:
		r.TokenHash = nil
	}
}

// present turns a stored record into what an admin client sees: decoded,
// redacted, output-only fields filled.
func present(rec store.Record) (resource, error) {
	m, err := decode(rec)
	if err != nil {
		return nil, err
	}
	redact(m)
	setOutputOnly(m, rec)
	return m, nil
}
