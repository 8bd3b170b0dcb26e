package redisconn

import (
	"strings"
	"testing"
	"time"
)

func TestOptionsDefaults(t *testing.T) {
	o, err := Options("redis://127.0.0.1:6379/2", "dp-1")
	if err != nil {
		t.Fatal(err)
	}
	if o.Addr != "127.0.0.1:6379" || o.DB != 2 || o.ClientName != "dp-1" {
		t.Fatalf("addr %q db %d name %q", o.Addr, o.DB, o.ClientName)
	}
	if o.DialTimeout != DefaultDialTimeout || o.ReadTimeout != DefaultReadTimeout || o.WriteTimeout != DefaultWriteTimeout || o.PoolTimeout != DefaultPoolTimeout {
		t.Fatalf("timeouts dial %s read %s write %s pool %s, want the package defaults", o.DialTimeout, o.ReadTimeout, o.WriteTimeout, o.PoolTimeout)
	}
	if o.MaxRetries != -1 || o.DialerRetries != 1 {
		t.Fatalf("MaxRetries %d DialerRetries %d, want -1 (none) and 1", o.MaxRetries, o.DialerRetries)
	}
}

func TestOptionsURLWins(t *testing.T) {
	o, err := Options("redis://:pw@h:1/0?dial_timeout=3s&read_timeout=4s&max_retries=2&client_name=mine", "dp-1")
	if err != nil {
		t.Fatal(err)
	}
	if o.DialTimeout != 3*time.Second || o.ReadTimeout != 4*time.Second || o.MaxRetries != 2 || o.ClientName != "mine" || o.Password != "pw" {
		t.Fatalf("URL settings not kept: %+v", o)
	}
	if o.WriteTimeout != DefaultWriteTimeout {
		t.Fatalf("write timeout %s, want the default", o.WriteTimeout)
	}
}

func TestOptionsBadURLHidesPassword(t *testing.T) {
	for _, u := range []string{"http://user:secret@h:1/0", "redis://user:secret@h:1/notanumber", "redis://user:secret@h:1/0?nosuch=1", "::secret"} {
		_, err := Options(u, "")
		if err == nil {
			t.Fatalf("Options(%q): no error", u)
		}
		if strings.Contains(err.Error(), "secret") {
			t.Fatalf("Options(%q) error shows the password: %v", u, err)
		}
		if !strings.Contains(err.Error(), "redis://") {
			t.Fatalf("Options(%q) error %q does not show the expected form", u, err)
		}
	}
}

func TestRedacted(t *testing.T) {
	if got := Redacted("redis://u:secret@h:6379/0"); strings.Contains(got, "secret") || !strings.Contains(got, "h:6379") {
		t.Fatalf("Redacted = %q", got)
	}
}
