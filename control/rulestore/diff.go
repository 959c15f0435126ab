package rulestore

import (
	"encoding/json"
	"fmt"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/griddle-mesh/griddle/internal/routing"
)

// Canonical returns doc as YAML with keys sorted: the form diffs compare.
// A nil doc gives no bytes.
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

// Diff returns a unified-style line diff from the canonical YAML of current
// to that of proposed ("" if they are the same; either may be nil). Lines
// start with "-" (only in current), "+" (only in proposed) or " ".
func Diff(current, proposed *routing.Document) (string, error) {
	a, err := Canonical(current)
	if err != nil {
		return "", err
	}
	b, err := Canonical(proposed)
	if err != nil {
		return "", err
	}
	if string(a) == string(b) {
		return "", nil
	}
	var sb strings.Builder
	sb.WriteString("--- current\n+++ proposed\n")
	for _, l := range diffLines(splitLines(string(a)), splitLines(string(b))) {
		sb.WriteString(l)
		sb.WriteByte('\n')
	}
	return sb.String(), nil
}

func splitLines(s string) []string {
	s = strings.TrimSuffix(s, "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

// diffLines is a longest-common-subsequence diff; documents are small.
func diffLines(a, b []string) []string {
	n, m := len(a), len(b)
	lcs := make([][]int, n+1)
	for i := range lcs {
		lcs[i] = make([]int, m+1)
	}
	for i := n - 1; i >= 0; i-- {
		for j := m - 1; j >= 0; j-- {
			if a[i] == b[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	var out []string
	i, j := 0, 0
	for i < n && j < m {
		switch {
		case a[i] == b[j]:
			out = append(out, " "+a[i])
			i++
			j++
		case lcs[i+1][j] >= lcs[i][j+1]:
			out = append(out, "-"+a[i])
			i++
		default:
			out = append(out, "+"+b[j])
			j++
		}
	}
	for ; i < n; i++ {
		out = append(out, "-"+a[i])
	}
	for ; j < m; j++ {
		out = append(out, "+"+b[j])
	}
	return out
}
