package rulestore

import (
	"bytes"
	"encoding/json"
	"maps"
	"slices"
	"strconv"

	"go.yaml.in/yaml/v3"

	"github.com/griddle-mesh/griddle/internal/routing"
)

// Same reports whether applying proposed (parsed from proposedSrc) over the
// current entry changes nothing: the documents mean the same and the texts
// carry the same comments. Reformatting, reordering keys or switching
// between YAML and JSON is not a change; editing a comment is.
func Same(current Entry, proposed *routing.Document, proposedSrc []byte) bool {
	if current.Document == nil || proposed == nil {
		return false
	}
	a, err1 := json.Marshal(current.Document)
	b, err2 := json.Marshal(proposed)
	if err1 != nil || err2 != nil || !bytes.Equal(a, b) {
		return false
	}
	if current.Source == string(proposedSrc) {
		return true
	}
	return slices.Equal(comments([]byte(current.Source)), comments(proposedSrc))
}

// comments lists the comments of a YAML (or JSON) text in order.
func comments(src []byte) []string {
	var root yaml.Node
	if len(src) == 0 || yaml.Unmarshal(src, &root) != nil {
		return nil
	}
	var out []string
	var walk func(n *yaml.Node)
	walk = func(n *yaml.Node) {
		for _, c := range []string{n.HeadComment, n.LineComment, n.FootComment} {
			if c != "" {
				out = append(out, c)
			}
		}
		for _, k := range n.Content {
			walk(k)
		}
	}
	walk(&root)
	return out
}

// Rewrite returns src with the targets ("to") of its version rules set to
// those of doc, keeping everything else of src (key order, comments,
// style). It returns false when that is not possible: src is not YAML, its
// rules differ from doc's in more than their targets, or the result would
// not parse to doc. JSON sources come back as YAML flow style.
func Rewrite(src string, doc *routing.Document) (string, bool) {
	if src == "" || doc == nil {
		return "", false
	}
	var root yaml.Node
	if err := yaml.Unmarshal([]byte(src), &root); err != nil || root.Kind != yaml.DocumentNode || len(root.Content) != 1 {
		return "", false
	}
	rules := mapValue(root.Content[0], "versions")
	if rules == nil || rules.Kind != yaml.SequenceNode || len(rules.Content) != len(doc.Versions) {
		return "", false
	}
	for i, r := range rules.Content {
		to := mapValue(r, "to")
		if to == nil || to.Kind != yaml.MappingNode {
			return "", false
		}
		setTargets(to, doc.Versions[i].To)
	}
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(indentOf(src))
	if err := enc.Encode(&root); err != nil {
		return "", false
	}
	_ = enc.Close()
	out := buf.String()
	got, err := routing.Parse([]byte(out))
	if err != nil {
		return "", false
	}
	a, _ := json.Marshal(got)
	b, _ := json.Marshal(doc)
	if !bytes.Equal(a, b) {
		return "", false
	}
	return out, true
}

// setTargets makes mapping node n hold to: versions already there keep
// their place (and comments), dropped ones go, new ones are added in name
// order.
func setTargets(n *yaml.Node, to map[string]int) {
	var content []*yaml.Node
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		w, ok := to[k.Value]
		if !ok {
			continue
		}
		seen[k.Value] = true
		v.Kind, v.Tag, v.Value, v.Style = yaml.ScalarNode, "!!int", strconv.Itoa(w), 0
		content = append(content, k, v)
	}
	for _, name := range slices.Sorted(maps.Keys(to)) {
		if seen[name] {
			continue
		}
		content = append(content,
			&yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: name},
			&yaml.Node{Kind: yaml.ScalarNode, Tag: "!!int", Value: strconv.Itoa(to[name])})
	}
	n.Content = content
}

func mapValue(n *yaml.Node, key string) *yaml.Node {
	if n == nil || n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return nil
}

// indentOf guesses the indentation of a YAML text: the first indented
// line's (2 when there is none).
func indentOf(src string) int {
	for _, l := range bytes.Split([]byte(src), []byte("\n")) {
		t := bytes.TrimLeft(l, " ")
		if n := len(l) - len(t); n > 0 && len(t) > 0 && t[0] != '#' {
			if n > 8 {
				return 2
			}
			return n
		}
	}
	return 2
}
