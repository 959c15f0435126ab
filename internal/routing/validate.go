package routing

import (
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Sentinel errors. Every error this package returns for a bad document wraps
// ErrInvalid; check with errors.Is.
var (
	// ErrInvalid marks a document (or a part of one) that breaks the rules.
	ErrInvalid = errors.New("routing: invalid document")
	// ErrDuplicateService is returned by Compile when two documents name the same service.
	ErrDuplicateService = errors.New("routing: duplicate service")
	// ErrRouteConflict is returned by Compile when two services expose the
	// same path prefix for a common method, so the edge could not choose.
	ErrRouteConflict = errors.New("routing: conflicting http routes")
)

// FieldError is one problem in a document. Field is the path of the field
// as the user wrote it ("versions[2].to", "retries.attempts"; "document" for
// the whole document). It wraps ErrInvalid.
type FieldError struct {
	Field   string
	Problem string
}

// Error returns "field: problem".
func (e *FieldError) Error() string { return e.Field + ": " + e.Problem }

// Unwrap returns ErrInvalid.
func (e *FieldError) Unwrap() error { return ErrInvalid }

// Limits of the language.
const (
	// MaxNameLength bounds service, version and experiment names.
	MaxNameLength = 63
	// MaxAttempts bounds RetryPolicy.Attempts.
	MaxAttempts = 10
)

// methodBit returns m's bit in a method mask, 0 if m is not a method a
// document may name.
func methodBit(m string) uint16 {
	switch m {
	case http.MethodGet:
		return 1 << 0
	case http.MethodHead:
		return 1 << 1
	case http.MethodPost:
		return 1 << 2
	case http.MethodPut:
		return 1 << 3
	case http.MethodPatch:
		return 1 << 4
	case http.MethodDelete:
		return 1 << 5
	case http.MethodConnect:
		return 1 << 6
	case http.MethodOptions:
		return 1 << 7
	case http.MethodTrace:
		return 1 << 8
	}
	return 0
}

// retryReasons lists the values RetryPolicy.On accepts, for messages.
const retryReasons = "deadline, 5xx, unavailable"

func isRetryReason(s string) bool { return s == "deadline" || s == "5xx" || s == "unavailable" }

// Validate checks d against the rules of the language and returns nil or
// every problem found, joined (errors.Join), each a *FieldError naming its
// field. It does not modify d. It is the one validator: the CLI, the
// control plane and the data plane all call it (Parse and Compile do).
func (d *Document) Validate() error {
	if d == nil {
		return &FieldError{Field: "document", Problem: "missing"}
	}
	var v validator
	v.name("service", d.Service)
	timeout := time.Duration(d.Timeout)
	if timeout < 0 {
		v.addf("timeout", "%s is negative", timeout)
	}
	for i, h := range d.HTTP {
		p := fmt.Sprintf("http[%d]", i)
		v.pathPrefix(p+".pathPrefix", h.PathPrefix, true)
		v.methods(p+".methods", h.Methods)
		for j := range i {
			if d.HTTP[j].PathPrefix == h.PathPrefix && h.PathPrefix != "" {
				v.addf(p+".pathPrefix", "%q repeats http[%d].pathPrefix", h.PathPrefix, j)
				break
			}
		}
	}
	if r := d.Retries; r != nil {
		if r.Attempts < 1 || r.Attempts > MaxAttempts {
			v.addf("retries.attempts", "%d, want 1 to %d", r.Attempts, MaxAttempts)
		}
		perTry := time.Duration(r.PerTry)
		switch {
		case perTry < 0:
			v.addf("retries.perTry", "%s is negative", perTry)
		case perTry > 0 && timeout > 0 && perTry > timeout:
			v.addf("retries.perTry", "%s exceeds timeout %s", perTry, timeout)
		}
		for i, on := range r.On {
			if !isRetryReason(on) {
				v.addf(fmt.Sprintf("retries.on[%d]", i), "%q must be one of %s", on, retryReasons)
			}
		}
		if r.Budget != "" {
			if _, err := ParseBudget(r.Budget); err != nil {
				v.addf("retries.budget", "%q must be a percentage above 0%% and at most 100%%, such as \"10%%\"", r.Budget)
			}
		}
		for i, m := range r.GRPCMethods {
			if svc, meth, ok := strings.Cut(strings.TrimPrefix(m, "/"), "/"); !strings.HasPrefix(m, "/") || !ok || svc == "" || meth == "" || strings.Contains(meth, "/") {
				v.addf(fmt.Sprintf("retries.grpcMethods[%d]", i), "%q must be a gRPC method path, such as \"/package.Service/Method\"", m)
			}
		}
		if r.MinPerSecond < 0 {
			v.addf("retries.minPerSecond", "%d, want 0 or more", r.MinPerSecond)
		}
	}
	if st := d.Streams; st != nil && st.IdleTimeout < 0 {
		v.addf("streams.idleTimeout", "%s is negative", time.Duration(st.IdleTimeout))
	}
	if len(d.Versions) == 0 {
		v.addf("versions", "at least one rule required")
	}
	for i := range d.Versions {
		v.rule(d, i)
	}
	v.authorization(d.Authorization)
	return v.err()
}

// validator collects FieldErrors.
type validator struct{ errs []error }

func (v *validator) addf(field, format string, args ...any) {
	v.errs = append(v.errs, &FieldError{Field: field, Problem: fmt.Sprintf(format, args...)})
}

func (v *validator) err() error { return errors.Join(v.errs...) }

// name checks a service, version or experiment name.
func (v *validator) name(field, s string) {
	if p := nameProblem(s); p != "" {
		v.addf(field, "%s", p)
	}
}

// nameProblem says what is wrong with a service, version or experiment
// name, "" if nothing.
func nameProblem(s string) string {
	if s == "" {
		return "required"
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.') {
			return fmt.Sprintf("%q must be lowercase letters, digits, '-' or '.'", s)
		}
	}
	if len(s) > MaxNameLength {
		return fmt.Sprintf("%q is %d characters, want at most %d", s, len(s), MaxNameLength)
	}
	if !isAlnum(s[0]) || !isAlnum(s[len(s)-1]) {
		return fmt.Sprintf("%q must start and end with a letter or digit", s)
	}
	return ""
}

func isAlnum(c byte) bool { return c >= 'a' && c <= 'z' || c >= '0' && c <= '9' }

func (v *validator) pathPrefix(field, s string, required bool) {
	switch {
	case s == "" && required:
		v.addf(field, "required")
	case s != "" && s[0] != '/':
		v.addf(field, "%q must start with /", s)
	}
}

func (v *validator) methods(field string, ms []string) {
	for i, m := range ms {
		if methodBit(m) == 0 {
			v.addf(fmt.Sprintf("%s[%d]", field, i), "%q is not an HTTP method", m)
		}
	}
}

// rule checks d.Versions[i].
func (v *validator) rule(d *Document, i int) {
	r := &d.Versions[i]
	p := fmt.Sprintf("versions[%d]", i)
	if r.Name != "" {
		v.name(p+".name", r.Name)
		for j := range i {
			if d.Versions[j].Name == r.Name {
				v.addf(p+".name", "%q repeats versions[%d].name", r.Name, j)
				break
			}
		}
	}
	if m := r.Match; m != nil {
		mp := p + ".match"
		v.pathPrefix(mp+".pathPrefix", m.PathPrefix, false)
		v.methods(mp+".methods", m.Methods)
		for _, k := range sortedKeys(m.Header) {
			if !isToken(k) {
				v.addf(mp+".header", "%q is not a header name", k)
			}
		}
		for _, k := range sortedKeys(m.Cookie) {
			if !isToken(k) {
				v.addf(mp+".cookie", "%q is not a cookie name", k)
			}
		}
		for _, k := range sortedKeys(m.Query) {
			if k == "" {
				v.addf(mp+".query", "empty parameter name")
			}
		}
		if i == len(d.Versions)-1 && !m.empty() {
			v.addf(mp, "the last rule must have no match, so that every request finds a version")
		}
	}
	if r.Sticky != "" {
		if _, _, ok := parseSticky(r.Sticky); !ok {
			v.addf(p+".sticky", "%q must be header:<name> or cookie:<name>", r.Sticky)
		}
	}
	tp := p + ".to"
	if len(r.To) == 0 {
		v.addf(tp, "at least one version required")
		return
	}
	sum := 0
	weightsOK := true
	for _, name := range sortedKeys(r.To) {
		w := r.To[name]
		if prob := nameProblem(name); prob != "" {
			v.addf(tp, "version %s", prob)
		}
		if w < 0 || w > 100 {
			v.addf(fieldKey(tp, name), "weight %d, want 0 to 100", w)
			weightsOK = false
			continue
		}
		sum += w
	}
	if weightsOK && sum != 100 {
		v.addf(tp, "weights sum to %d, want 100", sum)
	}
}

// empty reports whether m has no condition (it holds for every request).
func (m *Match) empty() bool {
	return m.PathPrefix == "" && len(m.Methods) == 0 && len(m.Header) == 0 &&
		len(m.Cookie) == 0 && len(m.Query) == 0
}

// parseSticky splits "header:<name>" or "cookie:<name>".
func parseSticky(s string) (source, name string, ok bool) {
	source, name, ok = strings.Cut(s, ":")
	if !ok || (source != "header" && source != "cookie") || !isToken(name) {
		return "", "", false
	}
	return source, name, true
}

// isToken reports whether s is a non-empty RFC 9110 token (header and cookie names).
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0 {
			continue
		}
		return false
	}
	return true
}

// fieldKey returns the path of map key k under field: "to.v1", or
// `to["a b"]` when k is not a plain word.
func fieldKey(field, k string) string {
	for i := 0; i < len(k); i++ {
		c := k[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return field + "[" + strconv.Quote(k) + "]"
		}
	}
	if k == "" {
		return field + `[""]`
	}
	return field + "." + k
}

func sortedKeys[V any](m map[string]V) []string { return slices.Sorted(maps.Keys(m)) }

// VersionNames returns every version the document's rules name, sorted,
// each once. (It cannot be called Versions: that is the field of rules.)
func (d *Document) VersionNames() []string {
	var out []string
	for _, r := range d.Versions {
		for v := range r.To {
			out = append(out, v)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}
