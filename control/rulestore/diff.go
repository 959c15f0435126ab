package rulestore

import (
	"encoding/json"
	"fmt"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/griddle-mesh/griddle/internal/routing"
)

// Canonical returns doc as YAML with keys sorted: the form of a revision
// kept without its source. A nil doc gives no bytes.
func Canonical(doc *routing.Document) ([]byte, error) {
	if doc == nil {
		return nil, nil
	}
	j, err := json.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("rulestore: encode: %w", err)
	}
	y, err := yaml.JSONToYAML(j)
	if err != nil {
		return nil, fmt.Errorf("rulestore: encode: %w", err)
	}
	return y, nil
}

// Diff returns a unified diff (with hunks, as diff -u writes it) from the
// canonical YAML of current to that of proposed ("" if they are the same;
// either may be nil).
func Diff(current, proposed *routing.Document) (string, error) {
	a, err := Canonical(current)
	if err != nil {
		return "", err
	}
	b, err := Canonical(proposed)
	if err != nil {
		return "", err
	}
	return Unified(string(a), string(b), "current", "proposed"), nil
}

// diffContext is the number of unchanged lines around each hunk.
const diffContext = 3

// maxDiffCells bounds the work of the line diff; past it, the files are
// shown as one replaced hunk.
const maxDiffCells = 4 << 20

// Unified returns the unified diff of text a (named nameA) against b, with
// three lines of context, in the format patch(1) applies: "--- nameA",
// "+++ nameB", then "@@ -l,n +l,n @@" hunks, and "\ No newline at end of
// file" after a last line without one. Equal texts give "".
func Unified(a, b, nameA, nameB string) string {
	if a == b {
		return ""
	}
	x, y := lines(a), lines(b)
	ops := diffOps(x, y)
	var sb strings.Builder
	fmt.Fprintf(&sb, "--- %s\n+++ %s\n", nameA, nameB)
	for i := 0; i < len(ops); {
		if ops[i].kind == ' ' {
			i++
			continue
		}
		// A hunk: from diffContext lines before the change to diffContext
		// lines after the last change that is at most 2*diffContext away.
		start := max(0, i-diffContext)
		end := i
		for end < len(ops) {
			if ops[end].kind != ' ' {
				end++
				continue
			}
			run := end
			for run < len(ops) && ops[run].kind == ' ' {
				run++
			}
			if run == len(ops) || run-end > 2*diffContext {
				end = min(len(ops), end+diffContext)
				break
			}
			end = run
		}
		ha, hb := ops[start].ai, ops[start].bi
		na, nb := 0, 0
		for _, o := range ops[start:end] {
			if o.kind != '+' {
				na++
			}
			if o.kind != '-' {
				nb++
			}
		}
		fmt.Fprintf(&sb, "@@ -%s +%s @@\n", hunkRange(ha, na), hunkRange(hb, nb))
		for _, o := range ops[start:end] {
			sb.WriteByte(o.kind)
			if l, ok := strings.CutSuffix(o.line, "\n"); ok {
				sb.WriteString(l)
				sb.WriteByte('\n')
			} else {
				sb.WriteString(o.line)
				sb.WriteString("\n\\ No newline at end of file\n")
			}
		}
		i = end
	}
	return sb.String()
}

// hunkRange writes a hunk's start (1-based; the line before for an empty
// range) and length as diff -u does.
func hunkRange(start, n int) string {
	switch n {
	case 0:
		return fmt.Sprintf("%d,0", start)
	case 1:
		return fmt.Sprintf("%d", start+1)
	}
	return fmt.Sprintf("%d,%d", start+1, n)
}

// lines splits s after each newline; a last line without one stays as is.
func lines(s string) []string {
	if s == "" {
		return nil
	}
	out := strings.SplitAfter(s, "\n")
	if out[len(out)-1] == "" {
		out = out[:len(out)-1]
	}
	return out
}

// op is one line of a diff: kind ' ', '-' or '+', and the line's 0-based
// index in a and b where the op stands.
type op struct {
	kind   byte
	line   string
	ai, bi int
}

// diffOps is a longest-common-subsequence line diff; rule documents are small.
func diffOps(a, b []string) []op {
	// Common head and tail are cheap to take off first.
	pre := 0
	for pre < len(a) && pre < len(b) && a[pre] == b[pre] {
		pre++
	}
	suf := 0
	for suf < len(a)-pre && suf < len(b)-pre && a[len(a)-1-suf] == b[len(b)-1-suf] {
		suf++
	}
	var out []op
	for i := range pre {
		out = append(out, op{' ', a[i], i, i})
	}
	ma, mb := a[pre:len(a)-suf], b[pre:len(b)-suf]
	n, m := len(ma), len(mb)
	i, j := 0, 0
	if n*m <= maxDiffCells {
		lcs := make([][]int32, n+1)
		for k := range lcs {
			lcs[k] = make([]int32, m+1)
		}
		for x := n - 1; x >= 0; x-- {
			for y := m - 1; y >= 0; y-- {
				if ma[x] == mb[y] {
					lcs[x][y] = lcs[x+1][y+1] + 1
				} else {
					lcs[x][y] = max(lcs[x+1][y], lcs[x][y+1])
				}
			}
		}
		for i < n && j < m {
			switch {
			case ma[i] == mb[j]:
				out = append(out, op{' ', ma[i], pre + i, pre + j})
				i++
				j++
			case lcs[i+1][j] >= lcs[i][j+1]:
				out = append(out, op{'-', ma[i], pre + i, pre + j})
				i++
			default:
				out = append(out, op{'+', mb[j], pre + i, pre + j})
				j++
			}
		}
	}
	for ; i < n; i++ {
		out = append(out, op{'-', ma[i], pre + i, pre + j})
	}
	for ; j < m; j++ {
		out = append(out, op{'+', mb[j], pre + i, pre + j})
	}
	for k := range suf {
		out = append(out, op{' ', a[len(a)-suf+k], len(a) - suf + k, len(b) - suf + k})
	}
	return out
}
