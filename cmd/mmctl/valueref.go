package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"google.golang.org/protobuf/reflect/protoreflect"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/pkg/configfile"
)

// maxValueFile bounds a fromFile read: a secret, not a disk image.
const maxValueFile = 1 << 20

var valueName = (&metamcpv1.Value{}).ProtoReflect().Descriptor().FullName()

// resolveValues replaces, in place, every Value of resources that names
// where its text comes from (fromEnv: an environment variable of this
// process; fromFile: a file, relative to dir unless absolute) by a Value that
// holds the text. The control plane gets the text as if it had been written
// out; the file that holds the reference holds no secret.
func resolveValues(resources []*metamcpv1.Resource, dir string) error {
	var problems []string
	for _, r := range resources {
		kind, name := configfile.KindOf(r)
		r.ProtoReflect().Range(func(_ protoreflect.FieldDescriptor, v protoreflect.Value) bool {
			walkValues(v.Message(), "", func(path string, val *metamcpv1.Value) {
				if err := resolveValue(val, dir); err != nil {
					problems = append(problems, fmt.Sprintf("%s %q: %s: %v", kind, name, path, err))
				}
			})
			return true
		})
	}
	if len(problems) > 0 {
		return fmt.Errorf("%s", strings.Join(problems, "; "))
	}
	return nil
}

// walkValues calls fn for every Value in m, with its path in JSON names
// (`stdio.env["GITHUB_TOKEN"]`).
func walkValues(m protoreflect.Message, path string, fn func(string, *metamcpv1.Value)) {
	if !m.IsValid() {
		return
	}
	if m.Descriptor().FullName() == valueName {
		fn(path, m.Interface().(*metamcpv1.Value))
		return
	}
	join := func(field string) string {
		if path == "" {
			return field
		}
		return path + "." + field
	}
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsMap():
			if fd.MapValue().Message() != nil {
				v.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
					walkValues(mv.Message(), fmt.Sprintf("%s[%q]", join(fd.JSONName()), k.String()), fn)
					return true
				})
			}
		case fd.IsList():
			if fd.Message() != nil {
				for i := 0; i < v.List().Len(); i++ {
					walkValues(v.List().Get(i).Message(), fmt.Sprintf("%s[%d]", join(fd.JSONName()), i), fn)
				}
			}
		case fd.Message() != nil:
			walkValues(v.Message(), join(fd.JSONName()), fn)
		}
		return true
	})
}

// resolveValue reads the text of one Value from its fromEnv or fromFile.
func resolveValue(v *metamcpv1.Value, dir string) error {
	env, file := v.GetFromEnv(), v.GetFromFile()
	switch {
	case env == "" && file == "":
		return nil
	case env != "" && file != "":
		return fmt.Errorf("fromEnv and fromFile exclude each other: keep one")
	case v.GetValue() != "":
		return fmt.Errorf("value and from%s exclude each other: keep one", map[bool]string{true: "Env", false: "File"}[env != ""])
	}
	var text string
	if env != "" {
		val, ok := os.LookupEnv(env)
		switch {
		case !ok:
			return fmt.Errorf("fromEnv: $%s is not set in mmctl's environment", env)
		case val == "":
			return fmt.Errorf("fromEnv: $%s is empty", env)
		}
		text = val
	} else {
		path := file
		if !filepath.IsAbs(path) {
			path = filepath.Join(dir, path)
		}
		f, err := os.Open(path)
		if err != nil {
			return fmt.Errorf("fromFile: %w", err)
		}
		data, err := io.ReadAll(io.LimitReader(f, maxValueFile+1))
		_ = f.Close()
		if err != nil {
			return fmt.Errorf("fromFile %s: %w", path, err)
		}
		if len(data) > maxValueFile {
			return fmt.Errorf("fromFile %s: larger than 1 MiB", path)
		}
		text = strings.TrimSuffix(strings.TrimSuffix(string(data), "\n"), "\r")
		if text == "" {
			return fmt.Errorf("fromFile %s: the file is empty", path)
		}
	}
	v.Value, v.FromEnv, v.FromFile = text, "", ""
	return nil
}
