package control

import (
	"bufio"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"strings"
)

// Role says which write calls a token may make. Reads need no token.
type Role string

// The roles, from most to least allowed.
const (
	// RoleOperator may change rules (apply, rollback) and run canaries.
	RoleOperator Role = "operator"
	// RoleDeployer may start, promote and abort canaries, but not edit rules.
	RoleDeployer Role = "deployer"
)

// allows reports whether r may make calls that need want.
func (r Role) allows(want Role) bool {
	return r == RoleOperator || r == want
}

// Token is a bearer token with its role.
type Token struct {
	Secret string
	Role   Role
}

// ParseTokens reads a token file: one token per line, optionally preceded
// by its role and a space ("deployer s3cret"); a bare token is an
// operator's. Empty lines and lines starting with # are skipped.
func ParseTokens(text string) ([]Token, error) {
	var out []Token
	sc := bufio.NewScanner(strings.NewReader(text))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		tok := Token{Secret: line, Role: RoleOperator}
		if role, secret, ok := strings.Cut(line, " "); ok {
			tok = Token{Secret: strings.TrimSpace(secret), Role: Role(role)}
		}
		if err := tok.validate(); err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		out = append(out, tok)
	}
	return out, sc.Err()
}

func (t Token) validate() error {
	switch {
	case t.Role != RoleOperator && t.Role != RoleDeployer:
		return fmt.Errorf("%w: role %q is not operator or deployer", ErrConfig, t.Role)
	case t.Secret == "" || strings.ContainsAny(t.Secret, " \t"):
		return fmt.Errorf("%w: a token must be one word", ErrConfig)
	}
	return nil
}

// tokenSet checks bearer tokens in constant time per token.
type tokenSet []struct {
	digest [sha256.Size]byte
	role   Role
}

func newTokenSet(ts []Token) tokenSet {
	var out tokenSet
	for _, t := range ts {
		out = append(out, struct {
			digest [sha256.Size]byte
			role   Role
		}{sha256.Sum256([]byte(t.Secret)), t.Role})
	}
	return out
}

// role returns the role of tok, and false for an unknown token. Comparing
// digests keeps each comparison constant-time whatever the length.
func (s tokenSet) role(tok string) (Role, bool) {
	got := sha256.Sum256([]byte(tok))
	var found Role
	for _, t := range s {
		if subtle.ConstantTimeCompare(got[:], t.digest[:]) == 1 {
			found = t.role
		}
	}
	return found, found != ""
}
