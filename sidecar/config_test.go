package sidecar

import (
	"crypto/tls"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/griddle-mesh/griddle/internal/events"
)

func TestConfigValidate(t *testing.T) {
	dir := t.TempDir()
	exe := filepath.Join(dir, "handler")
	if err := os.WriteFile(exe, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	plain := filepath.Join(dir, "plain")
	if err := os.WriteFile(plain, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	ok := Config{Service: "hello", Version: "v1", Plugin: exe, Listen: "tcp://127.0.0.1:0"}
	tests := []struct {
		name    string
		edit    func(*Config)
		wantErr string
	}{
		{"ok", func(*Config) {}, ""},
		{"no service", func(c *Config) { c.Service = "" }, "--service: required"},
		{"no version", func(c *Config) { c.Version = "" }, "--version: required"},
		{"no plugin", func(c *Config) { c.Plugin = "" }, "--plugin: required"},
		{"missing plugin", func(c *Config) { c.Plugin = filepath.Join(dir, "nope") }, "--plugin"},
		{"plugin not executable", func(c *Config) { c.Plugin = plain }, "not an executable"},
		{"listen not a URL", func(c *Config) { c.Listen = "127.0.0.1:7000" }, "--listen"},
		{"advertise without port", func(c *Config) { c.Advertise = "tcp://10.0.0.1:0" }, "--advertise"},
		{"prefix without slash", func(c *Config) { c.HTTPPrefixes = []string{"/ok/", "bad"} }, "--http-prefix[1]"},
		{"loopback admin", func(c *Config) { c.Admin = "[::1]:9101" }, ""},
		{"admin beyond loopback", func(c *Config) { c.Admin = "0.0.0.0:9101" }, "--admin-public"},
		{"admin beyond loopback, allowed", func(c *Config) { c.Admin, c.AdminPublic = "0.0.0.0:9101", true }, ""},
		{"short ttl", func(c *Config) { c.TTL = time.Second }, "--ttl"},
		{"negative concurrency", func(c *Config) { c.Concurrency = -1 }, "--concurrency"},
		{"tls+tcp without certificates", func(c *Config) { c.Listen = "tls+tcp://127.0.0.1:0" }, "--tls-cert"},
		{"certificates on plain tcp", func(c *Config) { c.TLS = &tls.Config{} }, "--tls-cert"},
		{"tls+tcp with certificates", func(c *Config) { c.Listen, c.TLS = "tls+tcp://127.0.0.1:0", &tls.Config{} }, ""},
		{"retention", func(c *Config) { c.Retention = map[string]events.Retention{"message.sent": {MaxEvents: 10}} }, ""},
		{"retention without bound", func(c *Config) { c.Retention = map[string]events.Retention{"message.sent": {Hard: true}} }, "--retain message.sent"},
		{"retention of a bad topic", func(c *Config) { c.Retention = map[string]events.Retention{"a/b": {MaxEvents: 1}} }, "--retain a/b"},
		{"negative retain interval", func(c *Config) { c.RetainInterval = -time.Second }, "RetainInterval"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := ok
			tt.edit(&cfg)
			err := cfg.Validate()
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Errorf("Validate() = %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
}

// The handler's environment names its service and, with HandlerProcs,
// its GOMAXPROCS.
func TestHandlerEnv(t *testing.T) {
	for _, c := range []struct {
		procs int
		want  []string
	}{
		{0, []string{"GRIDDLE_SERVICE=hello"}},
		{1, []string{"GRIDDLE_SERVICE=hello", "GOMAXPROCS=1"}},
	} {
		s := &Sidecar{cfg: Config{Service: "hello", HandlerProcs: c.procs}}
		if got := s.handlerEnv(); !slices.Equal(got, c.want) {
			t.Errorf("HandlerProcs %d: got %q, want %q", c.procs, got, c.want)
		}
	}
}

func TestParseRetention(t *testing.T) {
	for _, tc := range []struct {
		in      string
		topic   string
		want    events.Retention
		wantErr string
	}{
		{in: "message.sent=events:10000", topic: "message.sent", want: events.Retention{MaxEvents: 10000}},
		{in: "t=age:24h,events:5,hard", topic: "t", want: events.Retention{MaxAge: 24 * time.Hour, MaxEvents: 5, Hard: true}},
		{in: "message.sent", wantErr: "no valid topic"},
		{in: "a/b=events:1", wantErr: "no valid topic"},
		{in: "t=events:0", wantErr: "events: want a positive count"},
		{in: "t=events:x", wantErr: "events: want a positive count"},
		{in: "t=age:-1s", wantErr: "age: want a positive duration"},
		{in: "t=hard", wantErr: "no bound"},
		{in: "t=size:1", wantErr: `unknown bound "size:1"`},
	} {
		topic, r, err := ParseRetention(tc.in)
		switch {
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("%q: got %v, want an error containing %q", tc.in, err, tc.wantErr)
		case tc.wantErr == "" && (err != nil || topic != tc.topic || r != tc.want):
			t.Errorf("%q: got %q %+v %v, want %q %+v", tc.in, topic, r, err, tc.topic, tc.want)
		}
	}
}
