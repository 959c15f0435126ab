package edge

import (
	"strings"
	"testing"
	"time"

	"github.com/griddle-mesh/griddle/internal/discovery"
)

func TestRouteTableLongestPrefixWins(t *testing.T) {
	table := newRouteTable([]discovery.Exposure{
		{Service: "api", PathPrefixes: []string{"/api/"}},
		{Service: "profiles", PathPrefixes: []string{"/api/profiles/", "/p/"}},
	})
	tests := []struct {
		path, want string
		ok         bool
	}{
		{"/api/profiles/1", "profiles", true},
		{"/api/other", "api", true},
		{"/p/x", "profiles", true},
		{"/apix", "", false},
		{"/", "", false},
	}
	for _, tt := range tests {
		got, ok := table.match(tt.path)
		if got != tt.want || ok != tt.ok {
			t.Errorf("match(%q) = %q, %v; want %q, %v", tt.path, got, ok, tt.want, tt.ok)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{"ok", Config{Listen: "127.0.0.1:8080"}, ""},
		{"no listen", Config{}, "--listen: required"},
		{"bad listen", Config{Listen: "8080"}, "--listen"},
		{"bad admin", Config{Listen: ":80", Admin: "x"}, "--admin"},
		{"loopback admin", Config{Listen: ":80", Admin: "127.0.0.1:9090"}, ""},
		{"admin beyond loopback", Config{Listen: ":80", Admin: ":9090"}, "--admin-public"},
		{"admin beyond loopback, allowed", Config{Listen: ":80", Admin: "0.0.0.0:9090", AdminPublic: true}, ""},
		{"negative timeout", Config{Listen: ":80", Timeout: -time.Second}, "--timeout"},
		{"negative body", Config{Listen: ":80", MaxBodyBytes: -1}, "--max-body-bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Errorf("Validate() = %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
}
