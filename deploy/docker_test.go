package deploy_test

import (
	"bufio"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// instruction is one Dockerfile instruction, continuation lines joined.
type instruction struct {
	line int
	op   string // FROM, COPY, …, upper case
	args string
}

func readDockerfile(t *testing.T, path string) []instruction {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []instruction
	var cur strings.Builder
	start := 0
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if cur.Len() == 0 && (line == "" || strings.HasPrefix(line, "#")) {
			continue
		}
		if cur.Len() == 0 {
			start = n
		}
		if s, ok := strings.CutSuffix(line, "\\"); ok {
			cur.WriteString(s + " ")
			continue
		}
		cur.WriteString(line)
		op, args, _ := strings.Cut(cur.String(), " ")
		out = append(out, instruction{start, strings.ToUpper(op), strings.TrimSpace(args)})
		cur.Reset()
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

var knownOps = []string{"FROM", "ARG", "ENV", "WORKDIR", "COPY", "ADD", "RUN", "USER", "EXPOSE", "ENTRYPOINT", "CMD", "LABEL", "HEALTHCHECK", "VOLUME", "STOPSIGNAL", "SHELL", "ONBUILD"}

// TestDockerfiles checks what a build would trip over without a Docker
// daemon: unknown instructions, stages referenced before they exist,
// packages that are not in the repository, and a final image that runs as
// root or without an exec-form entrypoint. For every value of a build
// argument that picks a stage, the picked stage must exist.
func TestDockerfiles(t *testing.T) {
	files, err := filepath.Glob("docker/*Dockerfile")
	if err != nil || len(files) < 2 {
		t.Fatalf("found %v, want the griddle and the service Dockerfile", files)
	}
	stageChoices := map[string][]string{"GRIDDLE_BUILD": {"static", "fdb"}}
	buildPkg := regexp.MustCompile(`go build .*?(\./[A-Za-z0-9_/${}.-]+)\s*$`)
	for _, path := range files {
		t.Run(path, func(t *testing.T) {
			ins := readDockerfile(t, path)
			stages := map[string]bool{}
			var last string // the final stage's FROM argument
			user := ""
			entry := ""
			for _, in := range ins {
				if !slices.Contains(knownOps, in.op) {
					t.Errorf("line %d: unknown instruction %s", in.line, in.op)
				}
				switch in.op {
				case "FROM":
					f := strings.Fields(in.args)
					from := f[0]
					for arg, vals := range stageChoices {
						if strings.Contains(from, "${"+arg+"}") {
							for _, v := range vals {
								if s := strings.ReplaceAll(from, "${"+arg+"}", v); !stages[s] {
									t.Errorf("line %d: FROM %s with %s=%s names no earlier stage %s", in.line, from, arg, v, s)
								}
							}
						}
					}
					if len(f) == 3 && strings.EqualFold(f[1], "AS") {
						stages[f[2]] = true
					}
					last, user, entry = from, "", ""
				case "COPY":
					if from, ok := strings.CutPrefix(in.args, "--from="); ok {
						name, _, _ := strings.Cut(from, " ")
						if !stages[name] && !strings.ContainsAny(name, ":/") {
							t.Errorf("line %d: COPY --from=%s: no such earlier stage", in.line, name)
						}
					}
				case "RUN":
					if m := buildPkg.FindStringSubmatch(in.args); m != nil && !strings.Contains(m[1], "$") {
						if _, err := os.Stat(filepath.Join("..", m[1])); err != nil {
							t.Errorf("line %d: go build %s: not a directory of the repository", in.line, m[1])
						}
					}
				case "USER":
					user = in.args
				case "ENTRYPOINT":
					entry = in.args
				}
			}
			if last == "" {
				t.Fatal("no FROM")
			}
			if user == "" || strings.HasPrefix(user, "root") || strings.HasPrefix(user, "0") {
				t.Errorf("the final stage (FROM %s) runs as %q, want a non-root USER", last, user)
			}
			if !strings.HasPrefix(entry, "[") {
				t.Errorf("the final stage's ENTRYPOINT %q: want the exec (JSON) form, so signals reach griddle", entry)
			}
		})
	}
	for _, svc := range []string{"hello", "profiles", "messages", "feed"} {
		if _, err := os.Stat(filepath.Join("..", "services", svc)); err != nil {
			t.Errorf("service %s, built by the compose file and the manifests: %v", svc, err)
		}
	}
}
