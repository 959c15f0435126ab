package rulestore_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/griddle-mesh/griddle/control/rulestore"
	"github.com/griddle-mesh/griddle/internal/routing"
)

const authored = `# hello's rules: owned by the greeting team
service: hello
versions:
  # beta testers first
  - match: {header: {x-beta: "1"}}
    to: {v2: 100}
  - name: tone-test   # A/B
    sticky: cookie:uid
    to:
      v1: 50 # control
      v3: 50
  - to: {v1: 100}
http:
  - pathPrefix: /hello/
`

func TestRewriteKeepsCommentsAndOrder(t *testing.T) {
	d, err := routing.Parse([]byte(authored))
	if err != nil {
		t.Fatal(err)
	}
	d.Versions[1].To = map[string]int{"v1": 25, "v2": 25, "v3": 50}
	d.Versions[2].To = map[string]int{"v1": 50, "v2": 50}
	out, ok := rulestore.Rewrite(authored, d)
	if !ok {
		t.Fatalf("Rewrite failed")
	}
	for _, want := range []string{"# hello's rules", "# beta testers first", "# A/B", "v1: 25 # control", "v3: 50", "to: {v1: 50, v2: 50}"} {
		if !strings.Contains(out, want) {
			t.Errorf("rewritten source lacks %q:\n%s", want, out)
		}
	}
	if strings.Index(out, "versions:") > strings.Index(out, "http:") {
		t.Errorf("key order changed:\n%s", out)
	}
	got, err := routing.Parse([]byte(out))
	if err != nil || !rulestore.Same(rulestore.Entry{Document: got, Meta: rulestore.Meta{Source: out}}, d, []byte(out)) {
		t.Fatalf("rewritten source does not parse to the document: %v\n%s", err, out)
	}
}

func TestSame(t *testing.T) {
	d, _ := routing.Parse([]byte(authored))
	cur := rulestore.Entry{Document: d, Meta: rulestore.Meta{Source: authored}}
	for _, tc := range []struct {
		name string
		src  string
		want bool
	}{
		{"identical text", authored, true},
		{"reindented", strings.ReplaceAll(authored, "pathPrefix: /hello/", "pathPrefix:   /hello/"), true},
		{"comment edited", strings.Replace(authored, "beta testers first", "beta testers", 1), false},
		{"weight changed", strings.Replace(authored, "to: {v1: 100}", "to: {v1: 90, v3: 10}", 1), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := routing.Parse([]byte(tc.src))
			if err != nil {
				t.Fatal(err)
			}
			if got := rulestore.Same(cur, p, []byte(tc.src)); got != tc.want {
				t.Errorf("Same = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestUnifiedAppliesWithPatch(t *testing.T) {
	patch, err := exec.LookPath("patch")
	if err != nil {
		t.Skip("patch(1) is not installed")
	}
	long := strings.Repeat("# filler\n", 12)
	for _, tc := range []struct{ name, a, b string }{
		{"one weight", authored, strings.Replace(authored, "v3: 50", "v3: 40\n      v2: 10", 1)},
		{"two hunks", "service: hello\n" + long + "versions:\n  - to: {v1: 100}\n", "service: hello # x\n" + long + "versions:\n  - to: {v2: 100}\n"},
		{"no newline at end", "a\nb", "a\nc\n"},
		{"from empty", "", "service: hello\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := rulestore.Unified(tc.a, tc.b, "current", "proposed")
			if !strings.Contains(d, "@@ -") {
				t.Fatalf("no hunk header in:\n%s", d)
			}
			dir := t.TempDir()
			f := filepath.Join(dir, "rules.yaml")
			os.WriteFile(f, []byte(tc.a), 0o644)
			cmd := exec.Command(patch, "-s", f)
			cmd.Stdin = strings.NewReader(d)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("patch: %v: %s\ndiff:\n%s", err, out, d)
			}
			got, _ := os.ReadFile(f)
			if string(got) != tc.b {
				t.Fatalf("patched file:\n%q\nwant\n%q\ndiff:\n%s", got, tc.b, d)
			}
		})
	}
	if d := rulestore.Unified("x\n", "x\n", "a", "b"); d != "" {
		t.Errorf("equal texts give %q, want \"\"", d)
	}
}
