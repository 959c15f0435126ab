package routing

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strconv"
	"strings"
	"time"

	// YAML 1.2, read as a node tree. sigs.k8s.io/yaml.YAMLToJSON is not used:
	// it parses YAML 1.1, where the key "on" (retries.on) and version names
	// such as "y" or "no" become the key "true" or "false", repeated keys
	// pass silently, and errors carry no field path.
	"go.yaml.in/yaml/v3"
)

// MaxDocumentSize bounds the input Parse accepts, in bytes.
const MaxDocumentSize = 1 << 20

// maxNodes bounds the YAML nodes Parse visits, aliases expanded, so that a
// small document cannot expand into a huge one.
const maxNodes = 100_000

// Parse reads one document, YAML or JSON, and validates it.
//
// Input that is valid JSON is read as JSON, anything else as YAML 1.2 (one
// YAML document; anchors and aliases allowed, merge keys not). Field names
// are case-sensitive; unknown and repeated fields are errors. A string
// field takes any scalar as written ("name: 2024" is the name "2024");
// number and boolean fields need a number or true/false. A null or empty
// value leaves a field unset.
//
// On error the document is nil and the error joins one *FieldError (which
// wraps ErrInvalid) per problem, each naming its field as written:
//
//	versions[0].to.v1: want a whole number, got "fifty"
//	retries.atempts: unknown field
//
// Shape errors (unknown fields, wrong types) are reported before Validate
// runs; Validate's errors only for a well-shaped document.
func Parse(b []byte) (*Document, error) {
	if len(b) > MaxDocumentSize {
		return nil, &FieldError{Field: "document", Problem: fmt.Sprintf("%d bytes, want at most %d", len(b), MaxDocumentSize)}
	}
	root, err := parseNode(b)
	if err != nil {
		return nil, err
	}
	c := converter{budget: maxNodes}
	tree := c.value("", root, reflect.TypeFor[Document](), false)
	if len(c.errs) > 0 {
		return nil, errors.Join(c.errs...)
	}
	j, err := json.Marshal(tree)
	if err != nil { // cannot happen: tree holds only JSON values
		return nil, &FieldError{Field: "document", Problem: err.Error()}
	}
	dec := json.NewDecoder(bytes.NewReader(j))
	dec.DisallowUnknownFields()
	var d Document
	if err := dec.Decode(&d); err != nil { // cannot happen: the converter checked the shape
		return nil, &FieldError{Field: "document", Problem: err.Error()}
	}
	d.normalize()
	if err := d.Validate(); err != nil {
		return nil, err
	}
	return &d, nil
}

// parseNode parses b as JSON if it is valid JSON, else as YAML, into a YAML
// node tree (JSON values become nodes tagged as YAML would tag them).
func parseNode(b []byte) (*yaml.Node, error) {
	if json.Valid(b) {
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.UseNumber()
		return jsonNode(dec, 0)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if err == io.EOF {
			return nil, &FieldError{Field: "document", Problem: "empty"}
		}
		return nil, &FieldError{Field: "document", Problem: strings.TrimPrefix(err.Error(), "yaml: ")}
	}
	var more yaml.Node
	if err := dec.Decode(&more); err != io.EOF {
		return nil, &FieldError{Field: "document", Problem: "want one YAML document, found more"}
	}
	if doc.Kind == yaml.DocumentNode && len(doc.Content) == 1 {
		return doc.Content[0], nil
	}
	return &doc, nil
}

// maxJSONDepth bounds the nesting of JSON input; documents nest at most 5 deep.
const maxJSONDepth = 32

// jsonNode reads one JSON value from dec (which has UseNumber set) as a
// YAML node. The input is known to be valid JSON.
func jsonNode(dec *json.Decoder, depth int) (*yaml.Node, error) {
	if depth > maxJSONDepth {
		return nil, &FieldError{Field: "document", Problem: fmt.Sprintf("nested more than %d deep", maxJSONDepth)}
	}
	tok, err := dec.Token()
	if err != nil {
		return nil, &FieldError{Field: "document", Problem: err.Error()}
	}
	switch t := tok.(type) {
	case json.Delim:
		n := &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq"}
		if t == '{' {
			n = &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
		}
		for dec.More() {
			if t == '{' {
				k, err := dec.Token()
				if err != nil {
					return nil, &FieldError{Field: "document", Problem: err.Error()}
				}
				key, _ := k.(string)
				n.Content = append(n.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: key})
			}
			child, err := jsonNode(dec, depth+1)
			if err != nil {
				return nil, err
			}
			n.Content = append(n.Content, child)
		}
		if _, err := dec.Token(); err != nil { // the closing delimiter
			return nil, &FieldError{Field: "document", Problem: err.Error()}
		}
		return n, nil
	case string:
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: t, Style: yaml.DoubleQuotedStyle}, nil
	case json.Number:
		tag := "!!float"
		if _, err := strconv.ParseInt(string(t), 10, 64); err == nil {
			tag = "!!int"
		}
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: tag, Value: string(t)}, nil
	case bool:
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!bool", Value: strconv.FormatBool(t)}, nil
	default: // nil
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null", Value: "null"}, nil
	}
}

// converter turns a node tree into JSON values shaped like a Go type,
// collecting a FieldError for each node that does not fit.
type converter struct {
	budget int // nodes left to visit
	errs   []error
}

func (c *converter) addf(path, format string, args ...any) {
	if path == "" {
		path = "document"
	}
	c.errs = append(c.errs, &FieldError{Field: path, Problem: fmt.Sprintf(format, args...)})
}

// value converts n, found at path, to a JSON value fitting t. It returns
// nil for a null node when nullable (the field stays unset) and after
// recording an error.
func (c *converter) value(path string, n *yaml.Node, t reflect.Type, nullable bool) any {
	for n.Kind == yaml.AliasNode && n.Alias != nil && c.budget > 0 {
		n = n.Alias
		c.budget--
	}
	if c.budget--; c.budget < 0 {
		if c.budget == -1 {
			c.addf("document", "more than %d values, aliases expanded", maxNodes)
		}
		return nil
	}
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" {
		if !nullable {
			c.addf(path, "want %s, got null", want(t))
		}
		return nil
	}
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch {
	case t == reflect.TypeFor[Duration]():
		if n.Kind != yaml.ScalarNode {
			c.addf(path, "want a duration such as \"250ms\"")
			return nil
		}
		if _, err := time.ParseDuration(n.Value); err != nil {
			c.addf(path, "want a duration such as \"250ms\", got %q", n.Value)
			return nil
		}
		return n.Value
	case t.Kind() == reflect.Struct:
		if n.Kind != yaml.MappingNode {
			c.addf(path, "want %s", want(t))
			return nil
		}
		out := make(map[string]any, len(n.Content)/2)
		c.mapping(path, n, func(fpath, key string, val *yaml.Node) {
			f, ok := jsonField(t, key)
			if !ok {
				c.addf(fpath, "unknown field")
				return
			}
			if v := c.value(fpath, val, f.Type, true); v != nil {
				out[key] = v
			}
		})
		return out
	case t.Kind() == reflect.Map:
		if n.Kind != yaml.MappingNode {
			c.addf(path, "want %s", want(t))
			return nil
		}
		out := make(map[string]any, len(n.Content)/2)
		c.mapping(path, n, func(fpath, key string, val *yaml.Node) {
			if v := c.value(fpath, val, t.Elem(), false); v != nil {
				out[key] = v
			}
		})
		return out
	case t.Kind() == reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			c.addf(path, "want %s", want(t))
			return nil
		}
		out := make([]any, 0, len(n.Content))
		for i, el := range n.Content {
			v := c.value(fmt.Sprintf("%s[%d]", path, i), el, t.Elem(), false)
			out = append(out, v)
		}
		return out
	case t.Kind() == reflect.String:
		if n.Kind != yaml.ScalarNode {
			c.addf(path, "want %s", want(t))
			return nil
		}
		return n.Value
	case t.Kind() == reflect.Int:
		var i int
		if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" || n.Decode(&i) != nil {
			c.addf(path, "want %s, got %s", want(t), shown(n))
			return nil
		}
		return json.Number(strconv.Itoa(i))
	case t.Kind() == reflect.Bool:
		var b bool
		if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!bool" || n.Decode(&b) != nil {
			c.addf(path, "want %s, got %s", want(t), shown(n))
			return nil
		}
		return b
	}
	c.addf(path, "unsupported field type %s", t) // a Document type this converter does not know
	return nil
}

// mapping calls f for each key of the mapping node n, after checking that
// keys are scalars and not repeated.
func (c *converter) mapping(path string, n *yaml.Node, f func(fpath, key string, val *yaml.Node)) {
	seen := make(map[string]bool, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := n.Content[i]
		for k.Kind == yaml.AliasNode && k.Alias != nil {
			k = k.Alias
		}
		if k.Kind != yaml.ScalarNode {
			c.addf(path, "keys must be plain words or strings")
			continue
		}
		fpath := k.Value
		if path != "" {
			fpath = fieldKey(path, k.Value)
		}
		if seen[k.Value] {
			c.addf(fpath, "repeated")
			continue
		}
		seen[k.Value] = true
		f(fpath, k.Value, n.Content[i+1])
	}
}

// jsonField returns the field of struct type t whose JSON name is exactly name.
func jsonField(t reflect.Type, name string) (reflect.StructField, bool) {
	for i := range t.NumField() {
		f := t.Field(i)
		tag, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if f.IsExported() && tag == name {
			return f, true
		}
	}
	return reflect.StructField{}, false
}

// want describes the values of type t for messages.
func want(t reflect.Type) string {
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch {
	case t == reflect.TypeFor[Duration]():
		return "a duration such as \"250ms\""
	case t.Kind() == reflect.Struct, t.Kind() == reflect.Map:
		return "a mapping"
	case t.Kind() == reflect.Slice:
		return "a list"
	case t.Kind() == reflect.Int:
		return "a whole number"
	case t.Kind() == reflect.Bool:
		return "true or false"
	}
	return "a string"
}

// shown describes node n for messages.
func shown(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	}
	if n.ShortTag() == "!!str" {
		return strconv.Quote(n.Value)
	}
	return n.Value
}

// normalize makes empty lists and maps nil, the form Parse returns and
// json.Marshal round-trips.
func (d *Document) normalize() {
	if len(d.HTTP) == 0 {
		d.HTTP = nil
	}
	for i := range d.HTTP {
		d.HTTP[i].Methods = nilIfEmpty(d.HTTP[i].Methods)
	}
	if d.Retries != nil {
		d.Retries.On = nilIfEmpty(d.Retries.On)
	}
	if len(d.Versions) == 0 {
		d.Versions = nil
	}
	for i := range d.Versions {
		r := &d.Versions[i]
		if len(r.To) == 0 {
			r.To = nil
		}
		if m := r.Match; m != nil {
			m.Methods = nilIfEmpty(m.Methods)
			if len(m.Header) == 0 {
				m.Header = nil
			}
			if len(m.Cookie) == 0 {
				m.Cookie = nil
			}
			if len(m.Query) == 0 {
				m.Query = nil
			}
		}
	}
}

func nilIfEmpty(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	return s
}
