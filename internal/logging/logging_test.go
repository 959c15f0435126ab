package logging

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

func TestZapInTheProcessFormat(t *testing.T) {
	var buf bytes.Buffer
	lg, err := New(Config{Level: "debug", Format: "json"}, &buf)
	if err != nil {
		t.Fatal(err)
	}
	z := Zap(lg, zapcore.WarnLevel, nil)
	z.Info("dropped: below the bridge's level")
	z.Named("client").With(zap.String("endpoint", "127.0.0.1:2379")).Warn("retrying", zap.Int("attempt", 2))
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 1 {
		t.Fatalf("got %d lines, want 1:\n%s", len(lines), buf.String())
	}
	var got map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &got); err != nil {
		t.Fatalf("not one JSON line: %v: %s", err, lines[0])
	}
	for k, want := range map[string]any{"level": "WARN", "msg": "retrying", "component": "etcd", "logger": "client", "endpoint": "127.0.0.1:2379", "attempt": float64(2)} {
		if got[k] != want {
			t.Errorf("%s = %v, want %v (line %s)", k, got[k], want, lines[0])
		}
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{Level: "loud"}, "--log-level"},
		{Config{Format: "xml"}, "--log-format"},
	} {
		if _, err := New(tc.cfg, &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%+v): %v, want an error naming %s", tc.cfg, err, tc.want)
		}
	}
	var buf bytes.Buffer
	lg, _ := New(Config{}, &buf)
	lg.Debug("hidden")
	lg.Info("shown")
	if s := buf.String(); strings.Contains(s, "hidden") || !strings.Contains(s, "level=INFO msg=shown") {
		t.Errorf("default config: %q, want text at info", s)
	}
}
