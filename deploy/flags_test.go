package deploy_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
)

var helpFlag = regexp.MustCompile(`(?m)^\s+(?:-\w, )?--([a-z][a-z0-9-]*)`)

// griddleFlags builds cmd/griddle and returns the flags each command
// (edge, sidecar, control, store) takes, global ones included.
func griddleFlags(t *testing.T) map[string][]string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "griddle")
	build := exec.CommandContext(t.Context(), "go", "build", "-o", bin, "./cmd/griddle")
	build.Dir = ".."
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/griddle: %v\n%s", err, out)
	}
	flags := map[string][]string{}
	for _, cmd := range []string{"edge", "sidecar", "control", "store"} {
		out, err := exec.CommandContext(t.Context(), bin, cmd, "--help").CombinedOutput()
		if err != nil {
			t.Fatalf("griddle %s --help: %v\n%s", cmd, err, out)
		}
		for _, m := range helpFlag.FindAllStringSubmatch(string(out), -1) {
			flags[cmd] = append(flags[cmd], m[1])
		}
		if len(flags[cmd]) < 3 {
			t.Fatalf("griddle %s --help lists flags %v: the help's format changed?", cmd, flags[cmd])
		}
	}
	return flags
}

// flagsIn returns the --flags among args (as --name=value or --name value).
func flagsIn(args []string) []string {
	var out []string
	for _, a := range args {
		if name, ok := strings.CutPrefix(a, "--"); ok {
			name, _, _ = strings.Cut(name, "=")
			out = append(out, name)
		}
	}
	return out
}

// TestFlagsExist checks that every flag the deployments pass to griddle is
// one the command takes, so that a renamed flag fails here and not at the
// first rollout.
func TestFlagsExist(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("needs the go command to build griddle")
	}
	flags := griddleFlags(t)
	check := func(where, cmd string, args []string) {
		t.Helper()
		if _, ok := flags[cmd]; !ok {
			t.Errorf("%s: griddle %s is not a command the deployments use", where, cmd)
			return
		}
		for _, f := range flagsIn(args) {
			if !slices.Contains(flags[cmd], f) {
				t.Errorf("%s: griddle %s has no flag --%s", where, cmd, f)
			}
		}
	}
	n := 0
	// Kubernetes: a container's args start with the command, except in a
	// service image, whose entrypoint is `griddle sidecar`.
	for id, o := range renderObjects(t, kustomizeBase) {
		d, ok := o.value.(*appsv1.Deployment)
		if !ok {
			continue
		}
		for _, c := range d.Spec.Template.Spec.Containers {
			args := c.Args
			cmd := "sidecar"
			if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
				cmd, args = args[0], args[1:]
			}
			check(id+" container "+c.Name, cmd, args)
			n++
		}
	}
	// Compose: the same two forms.
	data, err := os.ReadFile(composeFile)
	if err != nil {
		t.Fatal(err)
	}
	p, err := loadCompose(t, composeFile, data)
	if err != nil {
		t.Fatal(err)
	}
	for name, s := range p.Services {
		if s.Build == nil && !strings.HasPrefix(s.Image, "griddle") {
			continue
		}
		args := []string(s.Command)
		cmd := "sidecar"
		if s.Build != nil && strings.HasSuffix(s.Build.Dockerfile, "/Dockerfile") {
			cmd, args = args[0], args[1:]
		}
		check("compose service "+name, cmd, args)
		n++
	}
	// systemd: ExecStart and the *_ARGS of each environment file.
	for unitName, envFile := range units {
		unitData, err := os.ReadFile(filepath.Join("systemd", unitName))
		if err != nil {
			t.Fatal(err)
		}
		var exec string
		for _, line := range strings.Split(strings.ReplaceAll(string(unitData), "\\\n", " "), "\n") {
			if v, ok := strings.CutPrefix(line, "ExecStart="); ok {
				exec = v
			}
		}
		f := strings.Fields(exec)
		if len(f) < 2 {
			t.Fatalf("%s: ExecStart %q", unitName, exec)
		}
		env, err := readEnvFile(filepath.Join("systemd", envFile))
		if err != nil {
			t.Fatal(err)
		}
		args := f[2:]
		for k, v := range env {
			if strings.HasSuffix(k, "_ARGS") {
				args = append(args, strings.Fields(v)...)
			}
		}
		check(unitName+" with "+envFile, f[1], args)
		n++
	}
	if n < 15 {
		t.Errorf("checked %d command lines, want every Deployment, compose service and unit (at least 15)", n)
	}
}
