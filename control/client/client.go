// Package client talks to the control plane's HTTP API (see control/api).
// The griddle CLI uses it; so can scripts and tests.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/griddle-mesh/griddle/control/api"
	"github.com/griddle-mesh/griddle/control/canary"
)

// Errors of API calls; an *Error matches the one of its code with errors.Is.
var (
	ErrInvalid      = errors.New("control: invalid")
	ErrConflict     = errors.New("control: conflict")
	ErrNotFound     = errors.New("control: not found")
	ErrUnauthorized = errors.New("control: unauthorized")
	ErrCanary       = errors.New("control: canary state does not allow this")
)

// Error is an error answer of the API.
type Error struct {
	Status   int    // HTTP status
	Code     string // one of the api.Code... constants
	Message  string // for users; names the field for ErrInvalid
	Field    string // the offending field, for ErrInvalid
	Revision int64  // the current revision, for ErrConflict
	ID       string // links an internal error to the server's log
}

func (e *Error) Error() string { return e.Message }

// Is matches the sentinel of e's code.
func (e *Error) Is(target error) bool {
	switch e.Code {
	case api.CodeInvalid:
		return target == ErrInvalid
	case api.CodeConflict:
		return target == ErrConflict
	case api.CodeNotFound:
		return target == ErrNotFound
	case api.CodeUnauthorized, api.CodeForbidden:
		return target == ErrUnauthorized
	case api.CodeRunning, api.CodeNotRunning, api.CodeBusy:
		return target == ErrCanary
	}
	return false
}

// Client calls one control plane. Its zero value is not usable; build it
// with New. It is safe for concurrent use.
type Client struct {
	base   string
	token  string
	author string
	hc     *http.Client
}

// New returns a Client of the control plane at base (e.g.
// "http://127.0.0.1:9300"). token is sent on write calls ("" : none);
// author is recorded in the rules history. A nil hc means http.DefaultClient.
func New(base, token, author string, hc *http.Client) *Client {
	if hc == nil {
		hc = http.DefaultClient
	}
	return &Client{base: strings.TrimSuffix(base, "/"), token: token, author: author, hc: hc}
}

// do sends a request and decodes a 2xx JSON answer into out (if non-nil).
func (c *Client) do(ctx context.Context, method, path string, body []byte, header http.Header, out any) error {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return fmt.Errorf("control: %w", err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	if c.author != "" {
		req.Header.Set(api.AuthorHeader, c.author)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("control: %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("control: %s %s: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		var ae api.Error
		if json.Unmarshal(b, &ae) != nil || ae.Code == "" {
			ae.Message = fmt.Sprintf("control: %s %s: %s", method, path, resp.Status)
		}
		return &Error{Status: resp.StatusCode, Code: ae.Code, Message: ae.Message, Field: ae.Field, Revision: ae.Revision, ID: ae.ID}
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("control: %s %s: decode answer: %w", method, path, err)
	}
	return nil
}

func rulesPath(service string, rest ...string) string {
	return "/v1/rules/" + url.PathEscape(service) + strings.Join(rest, "")
}

func revisionHeader(rev int64) http.Header {
	return http.Header{"If-Match": {strconv.Quote(strconv.FormatInt(rev, 10))}}
}

// Services returns the state of the mesh.
func (c *Client) Services(ctx context.Context) (api.Services, error) {
	var out api.Services
	return out, c.do(ctx, http.MethodGet, "/v1/services", nil, nil, &out)
}

// RulesList returns every service that has rules, sorted by name.
func (c *Client) RulesList(ctx context.Context) ([]api.RulesSummary, error) {
	var out []api.RulesSummary
	return out, c.do(ctx, http.MethodGet, "/v1/rules", nil, nil, &out)
}

// Rules returns the current rules of service.
func (c *Client) Rules(ctx context.Context, service string) (api.Rules, error) {
	var out api.Rules
	return out, c.do(ctx, http.MethodGet, rulesPath(service), nil, nil, &out)
}

// Validate has the server parse and validate doc (YAML or JSON).
func (c *Client) Validate(ctx context.Context, service string, doc []byte) (api.Rules, error) {
	var out api.Rules
	return out, c.do(ctx, http.MethodPost, rulesPath(service, "/validate"), doc, nil, &out)
}

// Apply makes doc (YAML or JSON) the rules of service if they are still at
// revision (0: service must have no rules). A stale revision returns an
// *Error matching ErrConflict whose Revision is the current one.
func (c *Client) Apply(ctx context.Context, service string, doc []byte, revision int64, comment string) (api.Applied, error) {
	var out api.Applied
	p := rulesPath(service)
	if comment != "" {
		p += "?comment=" + url.QueryEscape(comment)
	}
	return out, c.do(ctx, http.MethodPut, p, doc, revisionHeader(revision), &out)
}

// Diff compares the current rules of service with doc.
func (c *Client) Diff(ctx context.Context, service string, doc []byte) (api.Diff, error) {
	var out api.Diff
	return out, c.do(ctx, http.MethodPost, rulesPath(service, "/diff"), doc, nil, &out)
}

// DryRun replays doc against the requests the edges sampled and reports
// what it would move; nothing changes.
func (c *Client) DryRun(ctx context.Context, service string, doc []byte) (api.DryRun, error) {
	var out api.DryRun
	return out, c.do(ctx, http.MethodPost, rulesPath(service, "/dry-run"), doc, nil, &out)
}

// History returns up to limit revisions, newest first (0: the server's default).
func (c *Client) History(ctx context.Context, service string, limit int) (api.History, error) {
	var out api.History
	p := rulesPath(service, "/history")
	if limit > 0 {
		p += "?limit=" + strconv.Itoa(limit)
	}
	return out, c.do(ctx, http.MethodGet, p, nil, nil, &out)
}

// Rollback applies the document of revision to again, if the rules are
// still at revision.
func (c *Client) Rollback(ctx context.Context, service string, to, revision int64) (api.Applied, error) {
	var out api.Applied
	return out, c.do(ctx, http.MethodPost, rulesPath(service, "/rollback?to="+strconv.FormatInt(to, 10)), nil, revisionHeader(revision), &out)
}

func canaryPath(service string, rest string) string {
	return "/v1/canaries/" + url.PathEscape(service) + rest
}

// StartCanary starts a canary of spec.Service.
func (c *Client) StartCanary(ctx context.Context, spec canary.Spec) (canary.Canary, error) {
	var out canary.Canary
	b, err := json.Marshal(spec)
	if err != nil {
		return out, fmt.Errorf("control: encode spec: %w", err)
	}
	return out, c.do(ctx, http.MethodPost, canaryPath(spec.Service, ""), b, http.Header{"Content-Type": {"application/json"}}, &out)
}

// Canary returns the canary record of service.
func (c *Client) Canary(ctx context.Context, service string) (canary.Canary, error) {
	var out canary.Canary
	return out, c.do(ctx, http.MethodGet, canaryPath(service, ""), nil, nil, &out)
}

// Canaries returns every canary record.
func (c *Client) Canaries(ctx context.Context) ([]canary.Canary, error) {
	var out []canary.Canary
	return out, c.do(ctx, http.MethodGet, "/v1/canaries", nil, nil, &out)
}

// Promote sends all traffic to the canary's new version now.
func (c *Client) Promote(ctx context.Context, service string) (canary.Canary, error) {
	var out canary.Canary
	return out, c.do(ctx, http.MethodPost, canaryPath(service, "/promote"), nil, nil, &out)
}

// Abort sends all traffic back to the canary's old version.
func (c *Client) Abort(ctx context.Context, service string) (canary.Canary, error) {
	var out canary.Canary
	return out, c.do(ctx, http.MethodPost, canaryPath(service, "/abort"), nil, nil, &out)
}
