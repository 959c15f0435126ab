package rulestore

import (
	"fmt"
	"strings"

	"github.com/griddle-mesh/griddle/internal/discovery"
)

// RulesPrefix is where the current rules of every service live: the data
// plane watches it. Each key under it is RuleKey(prefix, service) and holds a
// routing.Document as JSON.
func RulesPrefix(prefix string) string { return discovery.RulesPrefix(prefix) }

// RuleKey is the key of one service's current rules: <prefix>rules/<service>.
func RuleKey(prefix, service string) string { return discovery.RuleKey(prefix, service) }

// ServiceOfKey returns the service whose RuleKey is key, and false if key is
// not directly under RulesPrefix(prefix).
func ServiceOfKey(prefix, key string) (string, bool) {
	s, ok := strings.CutPrefix(key, RulesPrefix(prefix))
	if !ok || s == "" || strings.Contains(s, "/") {
		return "", false
	}
	return s, true
}

// MetaKey is the key of the Meta of a service's current rules.
func MetaKey(prefix, service string) string { return prefix + "rules-meta/" + service }

// HistoryPrefix is where the history of one service's rules lives.
func HistoryPrefix(prefix, service string) string {
	return prefix + "rules-history/" + service + "/"
}

// HistoryKey is the key of one revision in a service's history; the
// zero-padded revision makes keys sort by revision.
func HistoryKey(prefix, service string, revision int64) string {
	return fmt.Sprintf("%s%020d", HistoryPrefix(prefix, service), revision)
}

// ValidService reports whether s can name a service (discovery's rule for names).
func ValidService(s string) bool { return discovery.ValidName(s) }
