package pluginhost

import (
	"slices"
	"strings"
)

// baseEnv are the variables of the sidecar's environment every handler
// gets: what a process needs to find programs, files, certificates, its
// locale and its time zone.
var baseEnv = []string{"PATH", "HOME", "USER", "LOGNAME", "SHELL", "TMPDIR", "TZ", "LANG", "SSL_CERT_FILE", "SSL_CERT_DIR"}

// handlerEnv is the part of env (KEY=value) a handler may see: baseEnv,
// the locale's LC_* and the names in pass.
func handlerEnv(env, pass []string) []string {
	var out []string
	for _, kv := range env {
		name, _, _ := strings.Cut(kv, "=")
		if slices.Contains(baseEnv, name) || strings.HasPrefix(name, "LC_") || slices.Contains(pass, name) {
			out = append(out, kv)
		}
	}
	return out
}
