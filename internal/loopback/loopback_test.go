package loopback_test

import (
	"strings"
	"testing"

	"github.com/griddle-mesh/griddle/internal/loopback"
)

func TestCheckAdmin(t *testing.T) {
	for _, c := range []struct {
		addr   string
		public bool
		want   string // in the error; "" for none
	}{
		{"", false, ""},
		{"127.0.0.1:9090", false, ""},
		{"[::1]:9090", false, ""},
		{"localhost:9090", false, ""},
		{"127.8.0.1:9090", false, ""},
		{":9090", false, "--admin-public"},
		{"0.0.0.0:9090", false, "not a loopback address"},
		{"10.0.0.7:9101", false, "--admin-public"},
		{"10.0.0.7:9101", true, ""},
		{":9090", true, ""},
		{"nonsense", true, "missing port"},
	} {
		err := loopback.CheckAdmin("--admin", c.addr, c.public, "--admin-public")
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%q public=%v: %v, want nil", c.addr, c.public, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%q public=%v: %v, want an error with %q", c.addr, c.public, err, c.want)
		}
	}
}
