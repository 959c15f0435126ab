// Package api holds the JSON types of the control plane's HTTP API, shared
// by the server (package control) and its client (control/client).
//
// Endpoints (write calls need "Authorization: Bearer <token>"; rules
// writes an operator's token, canary writes an operator's or a deployer's):
//
//	GET  /                                   the page: all services (HTML)
//	GET  /services/{service}                 the page of one service (HTML)
//	GET  /healthz                            200 "ok" when etcd answers, else 503
//	GET  /metrics                            the control plane's own Prometheus metrics
//	GET  /v1/live                            control.LiveFigures: recent rates and latencies
//	GET  /v1/services                        Services
//	GET  /v1/rules                           []RulesSummary: every service with rules
//	GET  /v1/rules/{service}                 Rules
//	POST /v1/rules/{service}/validate        body: YAML or JSON → Rules (Revision 0)
//	PUT  /v1/rules/{service}                 body: YAML or JSON; If-Match or ?revision= → Applied   (write)
//	                                         refused (409 canary_running) while a canary runs
//	POST /v1/rules/{service}/diff            body: YAML or JSON → Diff (of the texts, patch-ready)
//	POST /v1/rules/{service}/dry-run         body: YAML or JSON → DryRun: what it would move of the edges' sample
//	GET  /v1/rules/{service}/history?limit=  History
//	POST /v1/rules/{service}/rollback?to=REV If-Match or ?revision= → Applied                     (write)
//	GET  /v1/canaries                        []canary.Canary
//	POST /v1/canaries/{service}              body: canary.Spec → canary.Canary                   (write)
//	GET  /v1/canaries/{service}              canary.Canary
//	POST /v1/canaries/{service}/promote      canary.Canary                                         (write)
//	POST /v1/canaries/{service}/abort        canary.Canary                                         (write)
//
// Every error is an Error with a Code; unexpected ones carry only an id
// that is also in the server's log.
package api

import (
	"github.com/griddle-mesh/griddle/internal/wire"
	"time"

	"github.com/griddle-mesh/griddle/control/canary"
	"github.com/griddle-mesh/griddle/control/dryrun"
	"github.com/griddle-mesh/griddle/control/rulestore"
	"github.com/griddle-mesh/griddle/internal/discovery"
	"github.com/griddle-mesh/griddle/internal/routing"
)

// Error codes, with the HTTP status each comes with.
const (
	CodeInvalid      = "invalid"        // 400: the message names the field
	CodeUnauthorized = "unauthorized"   // 401: no bearer token
	CodeForbidden    = "forbidden"      // 403: wrong token
	CodeNotFound     = "not_found"      // 404
	CodeConflict     = "conflict"       // 409: stale revision; Revision is the current one
	CodeRunning      = "canary_running" // 409: a canary of the service is running
	CodeNotRunning   = "canary_ended"   // 409: the canary has ended
	CodeBusy         = "busy"           // 409: concurrent changes; try again
	CodeUnavailable  = "unavailable"    // 503: etcd did not answer in time
	CodeInternal     = "internal"       // 500: see the server log for ID
)

// AuthorHeader carries who makes a write call; it is recorded in history.
const AuthorHeader = wire.HeaderAuthor

// Error is the body of every non-2xx answer.
type Error struct {
	Message string `json:"error"`
	Code    string `json:"code"`
	// Field names the offending field for CodeInvalid, as the user wrote it.
	Field string `json:"field,omitempty"`
	// Revision is the current rules revision for CodeConflict (0: none).
	Revision int64 `json:"revision,omitempty"`
	// ID links an internal error to the server's log line.
	ID string `json:"id,omitempty"`
}

// Rules is a service's rules at one revision.
type Rules struct {
	Service  string            `json:"service"`
	Revision int64             `json:"revision"`
	Document *routing.Document `json:"document"`
	// YAML is Document in canonical YAML (sorted keys).
	YAML string `json:"yaml"`
	// Source is the document as it was applied (key order, comments); ""
	// when the revision was written without one (then YAML stands for it).
	Source    string    `json:"source,omitempty"`
	AppliedAt time.Time `json:"appliedAt,omitzero"`
	Author    string    `json:"author,omitempty"`
	Comment   string    `json:"comment,omitempty"`
}

// Applied answers a write of rules.
type Applied struct {
	Service  string `json:"service"`
	Revision int64  `json:"revision"`
	// Previous is the revision that was replaced (0: none).
	Previous int64 `json:"previous"`
	// Unchanged is true when the document was the same as the current
	// rules (comments included), so nothing was written: Revision is the
	// current one.
	Unchanged bool `json:"unchanged,omitempty"`
}

// RulesSummary is one service's current rules in a listing.
type RulesSummary struct {
	Service   string    `json:"service"`
	Revision  int64     `json:"revision"`
	AppliedAt time.Time `json:"appliedAt,omitzero"`
	Author    string    `json:"author,omitempty"`
	// Default is the catch-all rule's targets.
	Default map[string]int `json:"default"`
	// Rules is the number of version rules.
	Rules int `json:"rules"`
}

// Diff answers a diff: current (at Revision; 0 if none) against the proposal.
type Diff struct {
	Service  string `json:"service"`
	Revision int64  `json:"revision"`
	// Diff is a unified diff (hunks, patch-ready) from the current text
	// (as `routes get` prints it) to the proposed one; "" when applying the
	// proposal would change nothing.
	Diff string `json:"diff"`
}

// History lists revisions newest first.
type History struct {
	Service string            `json:"service"`
	Entries []rulestore.Entry `json:"entries"`
}

// Services is the state of the mesh: what griddle status shows.
type Services struct {
	Services []Service `json:"services"`
	Edges    []Edge    `json:"edges"`
	// Leader is the id of the control plane replica that runs the controllers ("" if none).
	Leader string `json:"leader"`
	// Revision is the etcd revision this view was read at.
	Revision int64 `json:"revision"`
}

// Service is one service: its rules revision, versions and instances.
type Service struct {
	Name string `json:"name"`
	// RuleRevision is the revision of its current rules (0: none).
	RuleRevision int64 `json:"ruleRevision"`
	// Weights are the catch-all rule's targets (nil without rules).
	Weights  map[string]int `json:"weights,omitempty"`
	Versions []Version      `json:"versions"`
	// Canary is the service's canary record, if it has one.
	Canary *canary.Canary `json:"canary,omitempty"`
}

// Version is the instances of one version of a service.
type Version struct {
	Name      string     `json:"name"`
	Instances []Instance `json:"instances"`
}

// Instance is a registered sidecar; Behind is true when it runs an older
// rules revision than the service's current one.
type Instance struct {
	discovery.Instance
	Behind bool `json:"behind"`
}

// Edge is a registered edge; Behind is true when its rules revision is older
// than some service's current one.
type Edge struct {
	discovery.Edge
	Behind bool `json:"behind"`
}

// DryRun answers a dry run: the proposal replayed against the requests
// the edges sampled, beside the rules in force (at Revision; 0: none).
type DryRun struct {
	dryrun.Report
	Revision int64 `json:"revision"`
	// Edges is how many edges were asked for their sample; Failed how many
	// could not be read (or have no admin address).
	Edges  int `json:"edges"`
	Failed int `json:"failed"`
	// Text is the report as the CLI prints it.
	Text string `json:"text"`
}
