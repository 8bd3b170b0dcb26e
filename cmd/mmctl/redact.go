package main

import (
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/pkg/urluser"
)

// redact clears, in place, whatever in m must never be printed: the text and
// sealed form of secret values, the userinfo of upstream URLs, and key and
// token hashes. The control plane
// never sends them; this is a second line of defence, so that a server bug
// cannot make mmctl print a secret.
func redact(m proto.Message) {
	if m == nil {
		return
	}
	redactMessage(m.ProtoReflect())
}

func redactMessage(m protoreflect.Message) {
	if !m.IsValid() {
		return
	}
	switch v := m.Interface().(type) {
	case *metamcpv1.Value:
		v.Sealed = nil
		if v.GetSecret() && v.GetValue() != "" {
			v.Value = ""
			v.Set = true
		}
		return
	case *metamcpv1.ApiKey:
		v.KeyHash = nil
	case *metamcpv1.Token:
		v.TokenHash = nil
	case *metamcpv1.HTTPTransport:
		// https://TOKEN@host/...: apply puts the stored userinfo back.
		v.Url = urluser.Hide(v.GetUrl())
	}
	m.Range(func(fd protoreflect.FieldDescriptor, val protoreflect.Value) bool {
		if fd.Message() == nil {
			return true
		}
		switch {
		case fd.IsList():
			l := val.List()
			for i := 0; i < l.Len(); i++ {
				redactMessage(l.Get(i).Message())
			}
		case fd.IsMap():
			if fd.MapValue().Message() != nil {
				val.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
					redactMessage(mv.Message())
					return true
				})
			}
		default:
			redactMessage(val.Message())
		}
		return true
	})
}
