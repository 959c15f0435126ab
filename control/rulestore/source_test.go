package rulestore_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
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

var hunkHeader = regexp.MustCompile(`^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@\n$`)

// applyUnified applies a unified diff as patch(1) would, strictly: context
// and removed lines must match.
func applyUnified(t *testing.T, a, d string) string {
	t.Helper()
	if d == "" {
		return a
	}
	src := strings.SplitAfter(a, "\n")
	if src[len(src)-1] == "" {
		src = src[:len(src)-1]
	}
	lines := strings.SplitAfter(d, "\n")
	var out []string
	pos := 0
	for i := 2; i < len(lines); {
		h := lines[i]
		if h == "" {
			break
		}
		m := hunkHeader.FindStringSubmatch(h)
		if m == nil {
			t.Fatalf("bad hunk header %q", h)
		}
		as, _ := strconv.Atoi(m[1])
		al := 1
		if m[2] != "" {
			al, _ = strconv.Atoi(m[2])
		}
		start := as - 1
		if al == 0 {
			start = as
		}
		if start < pos || start > len(src) {
			t.Fatalf("hunk %q starts at line %d, outside %d..%d", h, start+1, pos+1, len(src))
		}
		out = append(out, src[pos:start]...)
		pos = start
		i++
		for i < len(lines) && lines[i] != "" && !strings.HasPrefix(lines[i], "@@") {
			l := lines[i]
			body := l[1:]
			if i+1 < len(lines) && strings.HasPrefix(lines[i+1], `\ No newline`) {
				body = strings.TrimSuffix(body, "\n")
				i++
			}
			switch l[0] {
			case ' ', '-':
				if pos >= len(src) || src[pos] != body {
					t.Fatalf("hunk %q does not match line %d %q of the original", h, pos+1, src[min(pos, len(src)-1)])
				}
				pos++
				if l[0] == ' ' {
					out = append(out, body)
				}
			case '+':
				out = append(out, body)
			}
			i++
		}
	}
	out = append(out, src[pos:]...)
	return strings.Join(out, "")
}

func FuzzUnified(f *testing.F) {
	f.Add(authored, strings.Replace(authored, "v3: 50", "v3: 40\n      v2: 10", 1))
	f.Add("a\nb\nc\nd\ne\nf\ng\nh\ni\nj\n", "a\nB\nc\nd\ne\nf\ng\nh\nI\nj")
	f.Add("", "x\n")
	f.Fuzz(func(t *testing.T, a, b string) {
		if len(a) > 4096 || len(b) > 4096 {
			return
		}
		d := rulestore.Unified(a, b, "a", "b")
		if got := applyUnified(t, a, d); got != b {
			t.Fatalf("applying the diff of %q to %q gives %q\n%s", a, b, got, d)
		}
	})
}

func FuzzRewrite(f *testing.F) {
	f.Add(authored, 30)
	f.Add("{\"service\":\"hello\",\"versions\":[{\"to\":{\"v1\":100}}]}", 5)
	f.Fuzz(func(t *testing.T, src string, w int) {
		d, err := routing.Parse([]byte(src))
		if err != nil || w < 0 || w > 100 {
			return
		}
		last := &d.Versions[len(d.Versions)-1]
		last.To = map[string]int{"zz": w, "yy": 100 - w}
		if w == 0 {
			delete(last.To, "zz")
		}
		if w == 100 {
			delete(last.To, "yy")
		}
		out, ok := rulestore.Rewrite(src, d)
		if !ok {
			return
		}
		got, err := routing.Parse([]byte(out))
		if err != nil || !rulestore.Same(rulestore.Entry{Document: got, Meta: rulestore.Meta{Source: out}}, d, []byte(out)) {
			t.Fatalf("Rewrite gave a text that does not parse to the document: %v\n%s", err, out)
		}
	})
}
