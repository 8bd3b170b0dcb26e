package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
)

func TestResolveValues(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "tok"), []byte("from-file\r\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("MMCTL_TEST_SECRET", "from-env")
	t.Setenv("MMCTL_TEST_EMPTY", "")
	server := func(env map[string]*metamcpv1.Value) []*metamcpv1.Resource {
		return []*metamcpv1.Resource{{Kind: &metamcpv1.Resource_Server{Server: &metamcpv1.Server{Name: "s",
			Transport: &metamcpv1.Server_Stdio{Stdio: &metamcpv1.StdioTransport{Command: "x", Env: env}}}}}}
	}
	res := server(map[string]*metamcpv1.Value{
		"A": {Secret: true, FromEnv: "MMCTL_TEST_SECRET"},
		"B": {Secret: true, FromFile: "tok"},
		"C": {Value: "plain"},
	})
	if err := resolveValues(res, dir); err != nil {
		t.Fatal(err)
	}
	env := res[0].GetServer().GetStdio().GetEnv()
	if env["A"].GetValue() != "from-env" || env["B"].GetValue() != "from-file" || env["A"].GetFromEnv() != "" || env["B"].GetFromFile() != "" || !env["B"].GetSecret() {
		t.Errorf("resolved = %v", env)
	}
	for name, v := range map[string]*metamcpv1.Value{
		"$MMCTL_TEST_UNSET is not set": {FromEnv: "MMCTL_TEST_UNSET"},
		"$MMCTL_TEST_EMPTY is empty":   {FromEnv: "MMCTL_TEST_EMPTY"},
		"exclude each other":           {FromEnv: "MMCTL_TEST_SECRET", FromFile: "tok"},
		"no such file":                 {FromFile: "missing"},
		"value and fromEnv":            {Value: "x", FromEnv: "MMCTL_TEST_SECRET"},
	} {
		err := resolveValues(server(map[string]*metamcpv1.Value{"K": v}), dir)
		if err == nil || !strings.Contains(err.Error(), name) || !strings.Contains(err.Error(), `Server "s": stdio.env["K"]`) {
			t.Errorf("%v: error %v, want %q", v, err, name)
		}
	}
}

func TestSecretFileFlags(t *testing.T) {
	tok := filepath.Join(t.TempDir(), "tok")
	if err := os.WriteFile(tok, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	into := map[string]*metamcpv1.Value{}
	if err := parseFileValues("secret-env-file", []string{"TOKEN=" + tok}, into); err != nil {
		t.Fatal(err)
	}
	if v := into["TOKEN"]; v.GetValue() != "s3cret" || !v.GetSecret() || v.GetFromFile() != "" {
		t.Errorf("parsed %v", v)
	}
	for _, spec := range []string{"TOKEN", "=x", "TOKEN=" + tok + ".missing"} {
		if err := parseFileValues("secret-env-file", []string{spec}, map[string]*metamcpv1.Value{}); err == nil {
			t.Errorf("%q: no error", spec)
		}
	}
}

func TestLowerEnumsJSON(t *testing.T) {
	b, err := marshalJSON(&metamcpv1.ApplyResponse{Changes: []*metamcpv1.Change{{Kind: "Server", Name: "x", Action: metamcpv1.ChangeAction_CHANGE_ACTION_DELETED}}})
	if err != nil || !strings.Contains(string(b), `"action": "deleted"`) {
		t.Errorf("marshalJSON = %s, %v", b, err)
	}
}
