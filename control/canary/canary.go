package canary

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/griddle-mesh/griddle/internal/routing"
)

// Errors of this package; match them with errors.Is.
var (
	// ErrInvalid means a Spec failed validation; the message names the field.
	ErrInvalid = errors.New("canary: invalid")
	// ErrNotFound means the service has no canary record.
	ErrNotFound = errors.New("canary: not found")
	// ErrRunning means a canary of the service is already running.
	ErrRunning = errors.New("canary: already running")
	// ErrNotRunning means the canary has ended (promoted, rolled back or
	// aborted), so it cannot be promoted or aborted.
	ErrNotRunning = errors.New("canary: not running")
	// ErrBusy means the record or the rules kept changing under a write;
	// try again.
	ErrBusy = errors.New("canary: concurrent changes, try again")
)

// State is where a canary is in its life.
type State string

// The states of a canary. Only Running canaries are advanced.
const (
	Running    State = "running"
	Promoted   State = "promoted"
	RolledBack State = "rolled-back"
	Aborted    State = "aborted"
)

// DefaultMinRequests is the fewest requests to the new version in one
// interval that a decision is made on; with fewer the step waits another
// interval.
const DefaultMinRequests = 20

// Spec is what an operator asks for.
type Spec struct {
	Service string `json:"service"`
	// From is the version traffic moves away from ("": the version with the
	// largest weight in the catch-all rule when the canary starts).
	From string `json:"from,omitempty"`
	// To is the new version.
	To string `json:"to"`
	// Steps are the new version's weights in percent, increasing, ending at 100.
	Steps []int `json:"steps"`
	// Interval is how long each step runs before it is judged.
	Interval routing.Duration `json:"interval"`
	// MaxErrorRate is the largest tolerated share of 5xx answers (0.01 = 1%).
	MaxErrorRate float64 `json:"maxErrorRate"`
	// MaxP99 is the largest tolerated 99th percentile latency (0: not checked).
	MaxP99 routing.Duration `json:"maxP99,omitempty"`
	// MinRequests is the fewest requests a step is judged on (0: DefaultMinRequests).
	MinRequests int `json:"minRequests,omitempty"`
	// MaxErrorRateIncrease is how far the new version's error rate may
	// exceed the old version's over the same step (0.01 = one percentage
	// point; 0: DefaultMaxErrorRateIncrease; 1 turns the comparison off).
	// It is judged when the old version served at least MinRequests.
	MaxErrorRateIncrease float64 `json:"maxErrorRateIncrease,omitempty"`
	// MaxP99Ratio is how many times the old version's p99 the new
	// version's may be, beyond a slack of P99Slack (0: not compared).
	MaxP99Ratio float64 `json:"maxP99Ratio,omitempty"`
}

// DefaultMaxErrorRateIncrease is the error rate the new version may have
// above the old one's when Spec.MaxErrorRateIncrease is 0.
const DefaultMaxErrorRateIncrease = 0.01

// P99Slack is the latency by which the new version's p99 may exceed
// MaxP99Ratio times the old one's: below it, differences are noise.
const P99Slack = 5 * time.Millisecond

// Validate reports the first problem of s, naming the field as in JSON; the
// error wraps ErrInvalid. From may be empty (it is then resolved by Start).
func (s Spec) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
	}
	switch {
	case s.Service == "":
		return bad("service: required")
	case s.To == "":
		return bad("to: required")
	case s.From == s.To:
		return bad("to: %q is also the version traffic moves from", s.To)
	case len(s.Steps) == 0:
		return bad("steps: at least one step is required")
	case s.Interval <= 0:
		return bad("interval: %v must be positive", time.Duration(s.Interval))
	case s.MaxErrorRate < 0 || s.MaxErrorRate > 1:
		return bad("maxErrorRate: %v must be between 0 and 1 (0%%-100%%)", s.MaxErrorRate)
	case s.MaxP99 < 0:
		return bad("maxP99: %v must not be negative", time.Duration(s.MaxP99))
	case s.MinRequests < 0:
		return bad("minRequests: %d must not be negative", s.MinRequests)
	case s.MaxErrorRateIncrease < 0 || s.MaxErrorRateIncrease > 1:
		return bad("maxErrorRateIncrease: %v must be between 0 and 1 (0%%-100%%)", s.MaxErrorRateIncrease)
	case s.MaxP99Ratio < 0 || (s.MaxP99Ratio > 0 && s.MaxP99Ratio < 1):
		return bad("maxP99Ratio: %v must be 0 (not compared) or at least 1", s.MaxP99Ratio)
	}
	prev := 0
	for i, w := range s.Steps {
		if w <= prev || w > 100 {
			return bad("steps[%d]: %d must be more than the step before (%d) and at most 100", i, w, prev)
		}
		prev = w
	}
	if prev != 100 {
		return bad("steps: the last step is %d, want 100", prev)
	}
	return nil
}

func (s Spec) maxIncrease() float64 {
	if s.MaxErrorRateIncrease == 0 {
		return DefaultMaxErrorRateIncrease
	}
	return s.MaxErrorRateIncrease
}

func (s Spec) minRequests() float64 {
	if s.MinRequests == 0 {
		return DefaultMinRequests
	}
	return float64(s.MinRequests)
}

// Canary is the record of one canary, stored as JSON under Key.
type Canary struct {
	Spec
	// Step is the index in Steps of the weight now applied; -1 until the
	// controller applies the first step.
	Step  int   `json:"step"`
	State State `json:"state"`
	// Reason says why the canary ended (or why it is waiting).
	Reason string `json:"reason,omitempty"`
	// NextAt is when the current step is judged. It is persisted, so a
	// restarted controller keeps the schedule.
	NextAt time.Time `json:"nextAt"`
	// RuleRevision is the rules revision of the last weights the canary applied.
	RuleRevision int64 `json:"ruleRevision,omitempty"`
	// RevisionPending means the record was written in the same transaction
	// as its rules, so RuleRevision and the last history entry's revision
	// are the record's own mod revision; reads fill them in.
	RevisionPending bool `json:"revisionPending,omitempty"`
	// Origin is the targets of every version rule when the canary started;
	// Moves are the indexes of the rules the canary steers (those that send
	// traffic to From), Kept those it leaves alone (pins: a header, cookie
	// or query match sending everything to From). Records without Origin
	// steer only the last rule.
	Origin []map[string]int `json:"origin,omitempty"`
	Moves  []int            `json:"moves,omitempty"`
	Kept   []int            `json:"kept,omitempty"`
	// History has one entry per decision, oldest first.
	History []Event `json:"history"`
	// Baseline holds the counters per source (see Source) at the start of
	// the current step: the next judgement uses what happened since. A
	// source that is gone (an instance that died) keeps its last figures.
	Baseline map[string]Counters `json:"baseline,omitempty"`
	Author   string              `json:"author,omitempty"`
	Created  time.Time           `json:"created"`
	Updated  time.Time           `json:"updated"`
	// Revision is the etcd mod revision of the record (not stored in it).
	Revision int64 `json:"revision"`
}

// Weight is the new version's weight now applied (0 before the first step).
func (c *Canary) Weight() int {
	switch {
	case c.State == RolledBack || c.State == Aborted:
		return 0
	case c.Step < 0:
		return 0
	}
	return c.Steps[min(c.Step, len(c.Steps)-1)]
}

// Weights are the targets of the catch-all rule that the canary's state
// stands for.
func (c *Canary) Weights() map[string]int {
	if n := len(c.Origin); n > 0 && slices.Contains(c.Moves, n-1) {
		return Move(c.Origin[n-1], c.From, c.To, c.Weight())
	}
	w := c.Weight()
	out := map[string]int{}
	if w < 100 {
		out[c.From] = 100 - w
	}
	if w > 0 {
		out[c.To] = w
	}
	return out
}

// Move returns the targets of a rule that had origin, with weight percent
// of from's share moved to to (rounded; the weights still sum to 100).
// origin is not modified.
func Move(origin map[string]int, from, to string, weight int) map[string]int {
	out := maps.Clone(origin)
	share := out[from]
	moved := (share*weight + 50) / 100
	out[from] = share - moved
	out[to] += moved
	for k, v := range out {
		if v == 0 {
			delete(out, k)
		}
	}
	return out
}

// Event is one decision of a canary.
type Event struct {
	At time.Time `json:"at"`
	// Action is start, step, wait, promote, rollback or abort.
	Action string `json:"action"`
	// Weight is the new version's weight after the decision.
	Weight int `json:"weight"`
	// Metrics are what the decision was made on (nil for start and the
	// operator's actions).
	Metrics      *Metrics `json:"metrics,omitempty"`
	RuleRevision int64    `json:"ruleRevision,omitempty"`
	Reason       string   `json:"reason,omitempty"`
}

// Metrics are the new version's numbers over one step: the top-level
// figures are the worse of the two views (the version's own sidecars, and
// its callers: edges and calling sidecars), which are given too, with the
// old version's for comparison.
type Metrics struct {
	Requests  float64          `json:"requests"`
	Errors    float64          `json:"errors"`
	ErrorRate float64          `json:"errorRate"`
	P99       routing.Duration `json:"p99"`
	Instances int              `json:"instances"`
	// ScrapeErrors counts sources whose metrics could not be read.
	ScrapeErrors int `json:"scrapeErrors,omitempty"`
	// Server is what the new version's sidecars saw (dropped work counts
	// as errors); Callers what the edges and calling sidecars saw of it
	// (502, 503, 504 included).
	Server  *View `json:"server,omitempty"`
	Callers *View `json:"callers,omitempty"`
	// Baseline is the old version over the same step, the worse view.
	Baseline *View `json:"baseline,omitempty"`
}

// View is one observer's figures of one version over a step.
type View struct {
	Requests  float64          `json:"requests"`
	Errors    float64          `json:"errors"`
	ErrorRate float64          `json:"errorRate"`
	P99       routing.Duration `json:"p99"`
	// Sources is how many sidecars or edges reported; ScrapeErrors how
	// many could not be read (their last figures stand).
	Sources      int `json:"sources"`
	ScrapeErrors int `json:"scrapeErrors,omitempty"`
}
