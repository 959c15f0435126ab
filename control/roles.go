package control

import (
	"bufio"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"net/http"
	"reflect"
	"strings"

	"github.com/griddle-mesh/griddle/internal/routing"
)

// Role says which calls a token may make. Each role may do what the roles
// below it may.
type Role string

// The roles, from least to most allowed.
const (
	// RoleViewer may read; it needs a token only on a control plane whose
	// reads are private (Config.PrivateReads).
	RoleViewer Role = "viewer"
	// RoleDeployer may start, promote and abort canaries, but not edit rules.
	RoleDeployer Role = "deployer"
	// RoleOperator may change rules (apply, rollback) and run canaries.
	RoleOperator Role = "operator"
	// RoleAdmin may also change who may call whom: the authorization
	// policy of a rule document.
	RoleAdmin Role = "admin"
)

var roleRank = map[Role]int{RoleViewer: 1, RoleDeployer: 2, RoleOperator: 3, RoleAdmin: 4}

// allows reports whether r may make calls that need want.
func (r Role) allows(want Role) bool {
	return roleRank[r] > 0 && roleRank[r] >= roleRank[want]
}

// Token is a bearer token with its holder's name, recorded as the author
// of the changes made with it, and role.
type Token struct {
	Name   string
	Secret string
	Role   Role
}

// ParseTokens reads a token file, one token a line:
//
//	NAME ROLE TOKEN    ann admin 6f1c…   (ROLE viewer, deployer, operator or admin)
//	ROLE TOKEN         deployer 9c1e…    (named after its role)
//	TOKEN              4f2a…             (an operator's, named "operator")
//
// Empty lines and lines starting with # are skipped. Names and tokens
// must each be unique.
func ParseTokens(text string) ([]Token, error) {
	var out []Token
	names, secrets := map[string]bool{}, map[string]bool{}
	sc := bufio.NewScanner(strings.NewReader(text))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		var tok Token
		switch f := strings.Fields(line); len(f) {
		case 1:
			tok = Token{Name: string(RoleOperator), Secret: f[0], Role: RoleOperator}
		case 2:
			tok = Token{Name: f[0], Secret: f[1], Role: Role(f[0])}
		case 3:
			tok = Token{Name: f[0], Secret: f[2], Role: Role(f[1])}
		default:
			return nil, fmt.Errorf("line %d: %w: want TOKEN, ROLE TOKEN or NAME ROLE TOKEN", n, ErrConfig)
		}
		if err := tok.validate(); err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		if secrets[tok.Secret] {
			return nil, fmt.Errorf("line %d: %w: a token given twice", n, ErrConfig)
		}
		if names[tok.Name] && tok.Name != string(tok.Role) {
			return nil, fmt.Errorf("line %d: %w: the name %q given twice", n, ErrConfig, tok.Name)
		}
		names[tok.Name], secrets[tok.Secret] = true, true
		out = append(out, tok)
	}
	return out, sc.Err()
}

func (t Token) validate() error {
	switch {
	case roleRank[t.Role] == 0:
		return fmt.Errorf("%w: role %q is not viewer, deployer, operator or admin", ErrConfig, t.Role)
	case t.Secret == "" || strings.ContainsAny(t.Secret, " \t"):
		return fmt.Errorf("%w: a token must be one word", ErrConfig)
	case t.Name == "" || strings.ContainsAny(t.Name, " \t") || len(t.Name) > 64:
		return fmt.Errorf("%w: a name must be one word of at most 64 characters", ErrConfig)
	}
	return nil
}

// tokenSet checks bearer tokens in constant time per token.
type tokenSet []tokenDigest

type tokenDigest struct {
	digest [sha256.Size]byte
	name   string
	role   Role
}

func newTokenSet(ts []Token) tokenSet {
	var out tokenSet
	for _, t := range ts {
		out = append(out, tokenDigest{sha256.Sum256([]byte(t.Secret)), t.Name, t.Role})
	}
	return out
}

// holder returns the name and role of tok, and false for an unknown
// token. Every token is compared, each comparison of digests constant-time
// whatever the length, so the time taken tells nothing of which matched.
func (s tokenSet) holder(tok string) (name string, role Role, ok bool) {
	got := sha256.Sum256([]byte(tok))
	for _, t := range s {
		if subtle.ConstantTimeCompare(got[:], t.digest[:]) == 1 {
			name, role = t.name, t.role
		}
	}
	return name, role, role != ""
}

// bearer is the token of r's "Authorization: Bearer TOKEN" (the scheme
// in any case), "" for none.
func bearer(r *http.Request) string {
	scheme, tok, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return ""
	}
	return strings.TrimSpace(tok)
}

type holderKey struct{}

// holderInfo is who made a request, as its token says.
type holderInfo struct {
	name string
	role Role
}

// withHolder records the token's holder in r's context.
func withHolder(r *http.Request, name string, role Role) *http.Request {
	return r.WithContext(context.WithValue(r.Context(), holderKey{}, holderInfo{name, role}))
}

// holderOf is who made r (the zero value: nobody known).
func holderOf(r *http.Request) holderInfo {
	h, _ := r.Context().Value(holderKey{}).(holderInfo)
	return h
}

// author is the name recorded in the history for a change made with r:
// its token's, whatever the request says of itself.
func author(r *http.Request) string {
	if h := holderOf(r); h.name != "" {
		return h.name
	}
	return "anonymous"
}

// policyChanged reports whether going from old (nil: no document yet) to
// doc changes the authorization policy, which only an admin may.
func policyChanged(old, doc *routing.Document) bool {
	var before *routing.Authorization
	if old != nil {
		before = old.Authorization
	}
	return !reflect.DeepEqual(before, doc.Authorization)
}
