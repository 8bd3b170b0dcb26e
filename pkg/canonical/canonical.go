// Package canonical holds the one form in which config values are read,
// written and kept: enum values spelt lowercase without their type prefix
// (`per_client` for SESSION_MODE_PER_CLIENT), and fields that hold their
// default left unset, so that writing a default and leaving it out are the
// same config.
//
// Everything here is driven by the messages' descriptors: an enum or a field
// added to the API gets the same treatment without a change here. The rules:
//
//   - In a config resource, an enum's zero value (`..._UNSPECIFIED`) means its
//     value numbered 1; that value is the default.
//   - A field with the option `(metamcp.v1.default_value)` means that value
//     when unset.
package canonical

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/known/durationpb"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
)

// EnumPrefix is the prefix all of an enum's value names share, taken from its
// zero value: SESSION_MODE_UNSPECIFIED gives SESSION_MODE_.
func EnumPrefix(ed protoreflect.EnumDescriptor) string {
	if ed.Values().Len() == 0 {
		return ""
	}
	zero := string(ed.Values().ByNumber(0).Name())
	if zero == "" {
		zero = string(ed.Values().Get(0).Name())
	}
	if i := strings.LastIndex(zero, "_"); i >= 0 {
		return zero[:i+1]
	}
	return ""
}

// EnumName spells an enum value: lowercase, without the type prefix
// (SESSION_MODE_PER_CLIENT is "per_client").
func EnumName(ev protoreflect.EnumValueDescriptor) string {
	prefix := EnumPrefix(ev.Parent().(protoreflect.EnumDescriptor))
	return strings.ToLower(strings.TrimPrefix(string(ev.Name()), prefix))
}

// EnumNumberName spells the value n of ed; a number the enum does not
// declare is written as a number.
func EnumNumberName(ed protoreflect.EnumDescriptor, n protoreflect.EnumNumber) string {
	if ev := ed.Values().ByNumber(n); ev != nil {
		return EnumName(ev)
	}
	return strconv.Itoa(int(n))
}

// EnumDefault is the value an enum field of a config resource means when
// unset: the value numbered 1, or 0 when the enum has none.
func EnumDefault(ed protoreflect.EnumDescriptor) protoreflect.EnumNumber {
	if ed.Values().ByNumber(1) != nil {
		return 1
	}
	return 0
}

// EnumEffective spells the value n of a config enum, its default for 0:
// SESSION_MODE_UNSPECIFIED is "shared".
func EnumEffective(ed protoreflect.EnumDescriptor, n protoreflect.EnumNumber) string {
	if n == 0 {
		n = EnumDefault(ed)
	}
	return EnumNumberName(ed, n)
}

// EnumNames lists the spellings of an enum's values, the zero value left out.
func EnumNames(ed protoreflect.EnumDescriptor) []string {
	var out []string
	for i := 0; i < ed.Values().Len(); i++ {
		if ev := ed.Values().Get(i); ev.Number() != 0 {
			out = append(out, EnumName(ev))
		}
	}
	return out
}

// EnumChoices is EnumNames for messages: "shared or per_client",
// "open, closed or local".
func EnumChoices(ed protoreflect.EnumDescriptor) string {
	names := EnumNames(ed)
	switch len(names) {
	case 0:
		return ""
	case 1:
		return names[0]
	}
	return strings.Join(names[:len(names)-1], ", ") + " or " + names[len(names)-1]
}

// ParseEnum reads an enum value. It takes the canonical spelling
// ("per_client") and the older ones: any case, '-' for '_', with or without
// the type prefix ("PER_CLIENT", "SESSION_MODE_PER_CLIENT", "per-client"),
// and the zero value by its full name. The error lists the spellings to use.
func ParseEnum(ed protoreflect.EnumDescriptor, s string) (protoreflect.EnumValueDescriptor, error) {
	up := strings.ToUpper(strings.ReplaceAll(strings.TrimSpace(s), "-", "_"))
	if ev := ed.Values().ByName(protoreflect.Name(up)); ev != nil {
		return ev, nil
	}
	if ev := ed.Values().ByName(protoreflect.Name(EnumPrefix(ed) + up)); ev != nil && ev.Number() != 0 {
		return ev, nil
	}
	return nil, fmt.Errorf("unknown value %q: use %s", s, EnumChoices(ed))
}

// DefaultValue is the `(metamcp.v1.default_value)` option of a field, and
// whether it has one.
func DefaultValue(fd protoreflect.FieldDescriptor) (string, bool) {
	opts, ok := fd.Options().(*descriptorpb.FieldOptions)
	if !ok || opts == nil || !proto.HasExtension(opts, metamcpv1.E_DefaultValue) {
		return "", false
	}
	return proto.GetExtension(opts, metamcpv1.E_DefaultValue).(string), true
}

var durationName = (&durationpb.Duration{}).ProtoReflect().Descriptor().FullName()

// Strip reduces a config resource (Server, Namespace, Endpoint,
// RateLimitPolicy, or a Resource holding one), in place, to its canonical
// form: every field that holds its default is cleared. Two resources that
// mean the same config are then proto.Equal.
func Strip(m proto.Message) {
	if m == nil {
		return
	}
	strip(m.ProtoReflect())
}

func strip(m protoreflect.Message) {
	if !m.IsValid() {
		return
	}
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsMap():
			if fd.MapValue().Message() != nil {
				v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
					strip(mv.Message())
					return true
				})
			}
		case fd.IsList():
			if fd.Message() != nil {
				for i := 0; i < v.List().Len(); i++ {
					strip(v.List().Get(i).Message())
				}
			}
		case isDefault(fd, v):
			m.Clear(fd)
		case fd.Message() != nil:
			strip(v.Message())
		}
		return true
	})
}

// isDefault reports whether the singular value v of fd is the field's
// default (an enum's value 1, or the default_value option).
func isDefault(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
	if fd.Kind() == protoreflect.EnumKind {
		d := EnumDefault(fd.Enum())
		return d != 0 && v.Enum() == d && fd.Enum().Values().ByNumber(0) != nil
	}
	def, ok := DefaultValue(fd)
	if !ok {
		return false
	}
	switch {
	case fd.Kind() == protoreflect.StringKind:
		return v.String() == def
	case fd.Message() != nil && fd.Message().FullName() == durationName:
		want, err := time.ParseDuration(def)
		if err != nil {
			return false
		}
		d, ok := v.Message().Interface().(*durationpb.Duration)
		return ok && d.CheckValid() == nil && d.AsDuration() == want
	case fd.Kind() == protoreflect.BoolKind:
		b, err := strconv.ParseBool(def)
		return err == nil && v.Bool() == b
	case fd.Message() == nil:
		switch fd.Kind() {
		case protoreflect.FloatKind, protoreflect.DoubleKind:
			f, err := strconv.ParseFloat(def, 64)
			return err == nil && v.Float() == f
		case protoreflect.Uint32Kind, protoreflect.Fixed32Kind, protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
			u, err := strconv.ParseUint(def, 10, 64)
			return err == nil && v.Uint() == u
		case protoreflect.BytesKind:
			return false
		default:
			i, err := strconv.ParseInt(def, 10, 64)
			return err == nil && v.Int() == i
		}
	}
	return false
}
