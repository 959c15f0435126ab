package control

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"maps"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/griddle-mesh/griddle/control/api"
	"github.com/griddle-mesh/griddle/control/canary"
	"github.com/griddle-mesh/griddle/control/rulestore"
	"github.com/griddle-mesh/griddle/internal/routing"
)

// The page is rendered here; page.js only refreshes parts of it and sends
// the write calls, and page.css styles it. Nothing is loaded from elsewhere.
//
//go:embed web/page.html web/page.js web/page.css
var webFiles embed.FS

var pageTemplates = template.Must(template.New("").Funcs(template.FuncMap{
	"since": func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return time.Since(t).Round(time.Second).String()
	},
	"stamp": func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return t.Local().Format("2006-01-02 15:04:05")
	},
	"pct": func(v float64) string { return fmt.Sprintf("%.2f%%", 100*v) },
	"dur": func(v any) string {
		var d time.Duration
		switch x := v.(type) {
		case time.Duration:
			d = x
		case routing.Duration:
			d = time.Duration(x)
		}
		switch {
		case d == 0:
			return "–"
		case d < time.Millisecond:
			return fmt.Sprintf("%dµs", d.Microseconds())
		case d < time.Second:
			return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond))
		}
		return d.Round(10 * time.Millisecond).String()
	},
	"successClass": func(v float64) string {
		switch {
		case v >= 0.999:
			return "ok"
		case v >= 0.99:
			return "warn"
		}
		return "bad"
	},
	"stateClass": func(s canary.State) string {
		switch s {
		case canary.Running:
			return "warn"
		case canary.Promoted:
			return "ok"
		}
		return "bad"
	},
	"diffHTML": diffHTML,
}).ParseFS(webFiles, "web/page.html"))

// diffHTML colours a unified diff's lines.
func diffHTML(d string) template.HTML {
	var b strings.Builder
	for _, l := range strings.SplitAfter(d, "\n") {
		class := ""
		switch {
		case strings.HasPrefix(l, "@@"):
			class = "hunk"
		case strings.HasPrefix(l, "+") && !strings.HasPrefix(l, "+++"):
			class = "add"
		case strings.HasPrefix(l, "-") && !strings.HasPrefix(l, "---"):
			class = "del"
		}
		if class != "" {
			b.WriteString(`<span class="` + class + `">` + template.HTMLEscapeString(l) + `</span>`)
		} else {
			b.WriteString(template.HTMLEscapeString(l))
		}
	}
	return template.HTML(b.String())
}

// staticFile serves page.js and page.css.
func (s *Server) staticFile(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("file")
	types := map[string]string{"page.js": "text/javascript; charset=utf-8", "page.css": "text/css; charset=utf-8"}
	ct, ok := types[name]
	if !ok {
		http.NotFound(w, r)
		return
	}
	b, err := webFiles.ReadFile("web/" + name)
	if err != nil {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", ct)
	w.Header().Set("Cache-Control", "no-cache")
	_, _ = w.Write(b)
}

// versionRow is one version in the page's tables.
type versionRow struct {
	Name      string
	Instances int
	Behind    int
	Weight    int
	HasWeight bool
	Edge      Live
	Sidecar   Live
}

type serviceRow struct {
	Name         string
	RuleRevision int64
	Canary       *canary.Canary
	Versions     []versionRow
	Window       string
}

type overviewPage struct {
	Title, Leader, LiveNote string
	Every                   int64
	Services                []serviceRow
	Edges                   []api.Edge
}

func (s *Server) liveNote(f LiveFigures) string {
	switch {
	case f.At.IsZero():
		return "No live figures yet: this replica reads the sidecars' and edges' /metrics every " + s.live.every.String() + "."
	case f.Failed > 0:
		return fmt.Sprintf("Figures read at %s from %d of %d sidecars and edges (%d without an admin address or not answering).",
			f.At.Format("15:04:05"), f.Sources-f.Failed, f.Sources, f.Failed)
	}
	return fmt.Sprintf("Figures read at %s from %d sidecars and edges.", f.At.Format("15:04:05"), f.Sources)
}

func window(f LiveFigures) string {
	if f.Window == 0 {
		return "–"
	}
	return f.Window.Round(time.Second).String()
}

// rows joins a service's registered versions, the versions its rules name
// and the versions with figures.
func rows(sv api.Service, f LiveFigures) []versionRow {
	byName := map[string]*versionRow{}
	get := func(n string) *versionRow {
		if byName[n] == nil {
			byName[n] = &versionRow{Name: n}
		}
		return byName[n]
	}
	for _, v := range sv.Versions {
		r := get(v.Name)
		r.Instances = len(v.Instances)
		for _, in := range v.Instances {
			if in.Behind {
				r.Behind++
			}
		}
	}
	for v, w := range sv.Weights {
		r := get(v)
		r.Weight, r.HasWeight = w, true
	}
	for v, l := range f.Services[sv.Name] {
		if v == "" {
			v = "(any version)" // the edge chose no version: the service has no rules
		}
		r := get(v)
		r.Edge, r.Sidecar = l.Edge, l.Sidecar
	}
	var out []versionRow
	for _, n := range slices.Sorted(maps.Keys(byName)) {
		out = append(out, *byName[n])
	}
	return out
}

func (s *Server) page(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := reqCtx(r)
	defer cancel()
	st, err := s.Status(ctx)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	f := s.live.Figures()
	p := overviewPage{Title: "Services", Leader: st.Leader, LiveNote: s.liveNote(f), Every: s.live.every.Milliseconds(), Edges: st.Edges}
	for _, sv := range st.Services {
		p.Services = append(p.Services, serviceRow{Name: sv.Name, RuleRevision: sv.RuleRevision, Canary: sv.Canary, Versions: rows(sv, f), Window: window(f)})
	}
	name := "overview"
	if r.URL.Query().Get("part") == "live" {
		name = "overview-live"
	}
	s.render(w, name, p)
}

// render executes a template into a buffer first, so a failure is an
// error page rather than half a page.
func (s *Server) render(w http.ResponseWriter, name string, data any) {
	var buf bytes.Buffer
	if err := pageTemplates.ExecuteTemplate(&buf, name, data); err != nil {
		id := newID()
		s.log.Error("control: page", "id", id, "template", name, "err", err)
		http.Error(w, "the page could not be rendered (id "+id+")", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(buf.Bytes())
}

// ruleView is one version rule as the page shows it.
type ruleView struct {
	Index      int
	Kind, Name string
	Conditions []string
	Sticky     string
	Targets    []targetView
	Canary     string
}

type targetView struct {
	Version string
	Weight  int
	Color   int
}

type stepView struct {
	Weight int
	Class  string
}

type gateView struct {
	Name, Limit, Value string
	OK                 bool
}

type canaryView struct {
	canary.Canary
	Steps        []stepView
	Gates        []gateView
	Events       []canary.Event
	Next, NextIn string
}

type historyRow struct {
	rulestore.Entry
	Current bool
	Default string
	Diff    string
}

type servicePage struct {
	Title, Leader, LiveNote, Name, Window string
	Every                                 int64
	Revision                              int64
	Applied                               string
	Rules                                 *routing.Document
	Source                                string
	Versions                              []versionRow
	Instances                             []api.Version
	RuleViews                             []ruleView
	Canary                                *canary.Canary
	CanaryRunning                         bool
	CanaryView                            *canaryView
	History                               []historyRow
}

func (s *Server) servicePage(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := reqCtx(r)
	defer cancel()
	name := r.PathValue("service")
	if !rulestore.ValidService(name) {
		http.NotFound(w, r)
		return
	}
	st, err := s.Status(ctx)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	sv := api.Service{Name: name}
	found := false
	for _, x := range st.Services {
		if x.Name == name {
			sv, found = x, true
		}
	}
	if !found {
		http.NotFound(w, r)
		return
	}
	f := s.live.Figures()
	p := servicePage{Title: name, Leader: st.Leader, LiveNote: s.liveNote(f), Name: name, Window: window(f),
		Every: s.live.every.Milliseconds(), Versions: rows(sv, f), Instances: sv.Versions, Canary: sv.Canary}
	cur, err := s.rules.Get(ctx, name)
	switch {
	case errors.Is(err, rulestore.ErrNotFound):
		p.Source = "service: " + name + "\nversions:\n  - to: {}\n"
	case err != nil:
		s.fail(w, r, err)
		return
	default:
		p.Revision, p.Rules = cur.Revision, cur.Document
		p.Applied = fmt.Sprintf("applied %s by %s", cur.AppliedAt.Local().Format("2006-01-02 15:04:05"), cur.Author)
		if p.Source, err = cur.Text(); err != nil {
			s.fail(w, r, err)
			return
		}
	}
	colors := map[string]int{}
	for i, v := range p.Versions {
		colors[v.Name] = i % 6
	}
	if p.Rules != nil {
		p.RuleViews = ruleViews(p.Rules, sv.Canary, colors)
	}
	if c := sv.Canary; c != nil {
		p.CanaryRunning = c.State == canary.Running
		p.CanaryView = s.canaryView(*c)
	}
	if r.URL.Query().Get("part") == "live" {
		s.render(w, "service-live", p)
		return
	}
	if p.Revision > 0 {
		h, err := s.rules.History(ctx, name, 20)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		for i, e := range h {
			row := historyRow{Entry: e, Current: e.Revision == p.Revision, Default: defaultOf(e.Document)}
			if i+1 < len(h) {
				before, _ := h[i+1].Text()
				after, _ := e.Text()
				row.Diff = rulestore.Unified(before, after, fmt.Sprintf("%s@%d", name, h[i+1].Revision), fmt.Sprintf("%s@%d", name, e.Revision))
			}
			p.History = append(p.History, row)
		}
	}
	s.render(w, "service", p)
}

func defaultOf(d *routing.Document) string {
	if d == nil || len(d.Versions) == 0 {
		return ""
	}
	to := d.Versions[len(d.Versions)-1].To
	var parts []string
	for _, v := range slices.Sorted(maps.Keys(to)) {
		parts = append(parts, fmt.Sprintf("%s %d%%", v, to[v]))
	}
	return strings.Join(parts, ", ")
}

// ruleViews describes doc's rules as the data plane evaluates them.
func ruleViews(doc *routing.Document, c *canary.Canary, colors map[string]int) []ruleView {
	var out []ruleView
	for i, r := range doc.Versions {
		v := ruleView{Index: i, Name: r.Name, Sticky: r.Sticky}
		if m := r.Match; m != nil {
			if m.PathPrefix != "" {
				v.Conditions = append(v.Conditions, "path starts with "+m.PathPrefix)
			}
			if len(m.Methods) > 0 {
				v.Conditions = append(v.Conditions, "method "+strings.Join(m.Methods, " or "))
			}
			for _, kind := range []struct {
				what string
				m    map[string]string
			}{{"header", m.Header}, {"cookie", m.Cookie}, {"query", m.Query}} {
				for _, k := range slices.Sorted(maps.Keys(kind.m)) {
					v.Conditions = append(v.Conditions, fmt.Sprintf("%s %s = %q", kind.what, k, kind.m[k]))
				}
			}
		}
		byHeader := r.Match != nil && (len(r.Match.Header) > 0 || len(r.Match.Cookie) > 0 || len(r.Match.Query) > 0)
		switch {
		case byHeader && len(r.To) == 1:
			v.Kind = "pin"
		case r.Sticky != "":
			v.Kind = "experiment"
		case byHeader:
			v.Kind = "header match"
		case r.Match != nil:
			v.Kind = "path match"
		default:
			v.Kind = "catch-all"
		}
		for _, name := range slices.Sorted(maps.Keys(r.To)) {
			if r.To[name] > 0 {
				v.Targets = append(v.Targets, targetView{Version: name, Weight: r.To[name], Color: colors[name]})
			}
		}
		if c != nil && c.State == canary.Running {
			switch {
			case slices.Contains(c.Moves, i), len(c.Origin) == 0 && i == len(doc.Versions)-1:
				v.Canary = "steered by the canary"
			case slices.Contains(c.Kept, i):
				v.Canary = "left as it is (pin to " + c.From + ")"
			}
		}
		out = append(out, v)
	}
	return out
}

// canaryView describes c's steps, its gates as last judged, and what comes next.
func (s *Server) canaryView(c canary.Canary) *canaryView {
	v := &canaryView{Canary: c}
	for i, w := range c.Steps {
		class := ""
		switch {
		case c.State == canary.RolledBack || c.State == canary.Aborted:
			if i <= c.Step {
				class = "failed"
			}
		case i < c.Step, i == c.Step && c.State == canary.Promoted:
			class = "done"
		case i == c.Step:
			class = "current"
		}
		v.Steps = append(v.Steps, stepView{Weight: w, Class: class})
	}
	for i := len(c.History) - 1; i >= 0; i-- {
		v.Events = append(v.Events, c.History[i])
	}
	until := c.NextAt.Sub(s.now()).Round(time.Second)
	v.NextIn = "now"
	if until > 0 {
		v.NextIn = "in " + until.String()
	}
	switch {
	case c.State != canary.Running:
		v.Next = fmt.Sprintf("Ended %s at %s.", c.State, c.Updated.Local().Format("15:04:05"))
	case c.Step < 0:
		v.Next = "The leader applies the first step (" + fmt.Sprint(c.Steps[0]) + "%) at its next pass."
	case c.Step+1 < len(c.Steps):
		v.Next = fmt.Sprintf("Next decision %s: step to %d%% if every gate holds over at least %d requests, roll back to %s if one fails, else wait.",
			v.NextIn, c.Steps[c.Step+1], minRequests(c), c.From)
	default:
		v.Next = "At the last step."
	}
	var m *canary.Metrics
	for i := len(c.History) - 1; i >= 0 && m == nil; i-- {
		m = c.History[i].Metrics
	}
	if m == nil {
		return v
	}
	inc := c.MaxErrorRateIncrease
	if inc == 0 {
		inc = canary.DefaultMaxErrorRateIncrease
	}
	v.Gates = append(v.Gates,
		gateView{"requests to " + c.To, fmt.Sprintf("at least %d", minRequests(c)), fmt.Sprintf("%.0f", m.Requests), m.Requests >= float64(minRequests(c))},
		gateView{"error rate of " + c.To + " (worse of edges and sidecars)", fmt.Sprintf("≤ %.2f%%", 100*c.MaxErrorRate), fmt.Sprintf("%.2f%%", 100*m.ErrorRate), m.ErrorRate <= c.MaxErrorRate})
	if b := m.Baseline; b != nil {
		d := m.ErrorRate - b.ErrorRate
		val := fmt.Sprintf("%+.2f points (%s: %.2f%% over %.0f)", 100*d, c.From, 100*b.ErrorRate, b.Requests)
		v.Gates = append(v.Gates, gateView{"error rate above " + c.From + "'s", fmt.Sprintf("≤ %.2f points", 100*inc), val, d <= inc || b.Requests < float64(minRequests(c))})
	}
	if c.MaxP99 > 0 {
		v.Gates = append(v.Gates, gateView{"p99 of " + c.To, "≤ " + time.Duration(c.MaxP99).String(), time.Duration(m.P99).String(), m.P99 <= c.MaxP99})
	}
	if m.Server != nil && m.Callers != nil {
		v.Gates = append(v.Gates, gateView{"as seen by", "", fmt.Sprintf("sidecars %.0f req, %.2f%% errors; edges and callers %.0f req, %.2f%% errors; %d source(s) unread",
			m.Server.Requests, 100*m.Server.ErrorRate, m.Callers.Requests, 100*m.Callers.ErrorRate, m.ScrapeErrors), m.ScrapeErrors == 0})
	}
	return v
}

func minRequests(c canary.Canary) int {
	if c.MinRequests == 0 {
		return canary.DefaultMinRequests
	}
	return c.MinRequests
}
