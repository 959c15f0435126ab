package deploy_test

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/coreos/go-systemd/v22/unit"
)

// units are the systemd units and, for each, the environment file its
// instance reads (the sidecar's is per service: %i = profiles here).
var units = map[string]string{
	"griddle-edge.service":     "env/edge.env",
	"griddle-sidecar@.service": "env/sidecar-profiles.env",
	"griddle-control.service":  "env/control.env",
	"griddle-store.service":    "env/store.env",
}

// hardening is what every unit must set.
var hardening = []string{"NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes", "DynamicUser=yes", "SystemCallFilter=@system-service"}

var envRef = regexp.MustCompile(`\$\{?([A-Z_][A-Z0-9_]*)\}?`)

func TestSystemdUnitsParse(t *testing.T) {
	for name, envFile := range units {
		t.Run(name, func(t *testing.T) {
			f, err := os.Open(filepath.Join("systemd", name))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			opts, err := unit.DeserializeOptions(f)
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			get := func(section, key string) []string {
				var vs []string
				for _, o := range opts {
					if o.Section == section && o.Name == key {
						vs = append(vs, o.Value)
					}
				}
				return vs
			}
			for _, sec := range []string{"Unit", "Service", "Install"} {
				if !slices.ContainsFunc(opts, func(o *unit.UnitOption) bool { return o.Section == sec }) {
					t.Errorf("no [%s] section", sec)
				}
			}
			for _, h := range hardening {
				k, v, _ := strings.Cut(h, "=")
				if !slices.Contains(get("Service", k), v) {
					t.Errorf("[Service] %s: want %s", k, v)
				}
			}
			exec := get("Service", "ExecStart")
			if len(exec) != 1 || !strings.HasPrefix(exec[0], "/usr/local/bin/griddle ") {
				t.Fatalf("ExecStart %q: want one /usr/local/bin/griddle command", exec)
			}
			wantFile := "/etc/griddle/" + strings.ReplaceAll(filepath.Base(envFile), "profiles", "%i")
			if ef := get("Service", "EnvironmentFile"); !slices.Contains(ef, wantFile) {
				t.Errorf("EnvironmentFile %q: want %s", ef, wantFile)
			}
			env, err := readEnvFile(filepath.Join("systemd", envFile))
			if err != nil {
				t.Fatal(err)
			}
			// Variables systemd itself sets for the command.
			env["CREDENTIALS_DIRECTORY"], env["STATE_DIRECTORY"] = "/run/credentials/x", "/var/lib/x"
			for _, m := range envRef.FindAllStringSubmatch(exec[0], -1) {
				if _, ok := env[m[1]]; !ok {
					t.Errorf("ExecStart uses $%s, which %s does not set", m[1], envFile)
				}
			}
		})
	}
}

// readEnvFile reads KEY=VALUE lines as systemd's EnvironmentFile= does
// (comments and blank lines skipped).
func readEnvFile(path string) (map[string]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	env := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || !regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`).MatchString(k) {
			return nil, fmt.Errorf("%s:%d: want KEY=VALUE, got %q", path, n, line)
		}
		env[k] = v
	}
	return env, sc.Err()
}

// TestSystemdVerify runs systemd's own checker over the units (unknown keys,
// bad values, ordering), with the griddle path pointed at a stand-in
// executable. It needs systemd-analyze (Debian's systemd package).
func TestSystemdVerify(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze is not installed (apt-get install systemd); the units were only parsed")
	}
	dir := t.TempDir()
	stub := filepath.Join(dir, "griddle")
	if err := os.WriteFile(stub, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	verify := func(t *testing.T, names ...string) string {
		out, err := exec.CommandContext(t.Context(), analyze, append([]string{"verify", "--man=no"}, names...)...).CombinedOutput()
		if err != nil {
			return fmt.Sprintf("%s(exit: %v)", out, err)
		}
		return string(out)
	}
	var names []string
	for name := range units {
		data, err := os.ReadFile(filepath.Join("systemd", name))
		if err != nil {
			t.Fatal(err)
		}
		data = bytes.ReplaceAll(data, []byte("/usr/local/bin/griddle"), []byte(stub))
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
		instance := strings.Replace(name, "@.", "@profiles.", 1)
		names = append(names, filepath.Join(dir, instance))
	}
	slices.Sort(names)
	t.Chdir(dir)
	if out := verify(t, names...); out != "" {
		t.Errorf("systemd-analyze verify:\n%s", out)
	}
	// The check can fail: a misspelt key is reported.
	bad := filepath.Join(dir, "griddle-bad.service")
	if err := os.WriteFile(bad, []byte("[Service]\nExecStart="+stub+"\nNoNewPrivilege=yes\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out := verify(t, bad); !strings.Contains(out, "NoNewPrivilege") {
		t.Errorf("systemd-analyze verify of a unit with a misspelt key said %q, want it to name the key", out)
	}
}
