package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"os/user"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"github.com/griddle-mesh/griddle/control"
	"github.com/griddle-mesh/griddle/control/api"
	"github.com/griddle-mesh/griddle/control/canary"
	"github.com/griddle-mesh/griddle/control/client"
	"github.com/griddle-mesh/griddle/control/rulestore"
	"github.com/griddle-mesh/griddle/internal/launch"
	"github.com/griddle-mesh/griddle/internal/routing"
)

// Exit codes of the operator's commands.
const (
	exitFailure  = 1 // anything else; for routes diff: there are differences
	exitInvalid  = 2 // usage error, or the document or a flag is invalid; the message names the field
	exitConflict = 3 // the revision is stale, or a canary steers the rules
	exitRollback = 4 // canary status --wait: the canary was rolled back or aborted
)

// usageError is a usage error: exit status 2.
func usageError(err error) error { return &exitError{exitInvalid, err} }

// exitError carries an exit code other than 1 to the top of the command.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// withExitCodes runs run and, for errors that have their own exit code,
// prints the error as main does and exits with that code (main exits 1 for
// everything else).
func withExitCodes(run func(*cobra.Command, []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		err := run(cmd, args)
		code := exitFailure
		var ce *client.Error
		switch {
		case err == nil:
			return nil
		case errors.As(err, new(*exitError)):
			var ee *exitError
			errors.As(err, &ee)
			code = ee.code
		case errors.Is(err, client.ErrConflict), errors.Is(err, client.ErrCanary):
			code = exitConflict
			if errors.As(err, &ce) {
				err = errors.New(ce.Message)
			}
		case errors.Is(err, client.ErrInvalid), errors.Is(err, routing.ErrInvalid), errors.Is(err, canary.ErrInvalid):
			code = exitInvalid
		}
		if code == exitFailure {
			return err
		}
		return &exitError{code, err}
	}
}

// opsFlags are the flags of the commands that talk to the control plane.
type opsFlags struct {
	control string
	token   string
	output  string
}

func (o *opsFlags) add(cmd *cobra.Command) {
	def := os.Getenv("GRIDDLE_CONTROL")
	if def == "" {
		def = "http://127.0.0.1:9300"
	}
	f := cmd.PersistentFlags()
	f.StringVar(&o.control, "control", def, "control plane URL (env GRIDDLE_CONTROL)")
	f.StringVar(&o.token, "token", "", "bearer token for write calls (default: env GRIDDLE_TOKEN; a flag's value shows in the process list, the environment does not)")
	f.StringVarP(&o.output, "output", "o", "text", "text, json or yaml")
	_ = cmd.RegisterFlagCompletionFunc("output", cobra.FixedCompletions([]string{"text", "json", "yaml"}, cobra.ShellCompDirectiveNoFileComp))
}

func (o *opsFlags) checkOutput() error {
	switch o.output {
	case "text", "json", "yaml":
		return nil
	}
	return usageError(fmt.Errorf("--output: %q is not text, json or yaml", o.output))
}

func (o *opsFlags) client() (*client.Client, error) {
	if err := o.checkOutput(); err != nil {
		return nil, err
	}
	author := "unknown"
	if u, err := user.Current(); err == nil {
		author = u.Username
	}
	token := o.token
	if token == "" {
		token = os.Getenv("GRIDDLE_TOKEN")
	}
	return client.New(o.control, token, author, &http.Client{Timeout: 30 * time.Second}), nil
}

// print writes v as indented JSON with --output json, as YAML with
// --output yaml, else calls text.
func (o *opsFlags) print(w io.Writer, v any, text func(io.Writer)) error {
	switch o.output {
	case "json":
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	case "yaml":
		j, err := json.Marshal(v)
		if err != nil {
			return err
		}
		y, err := yaml.JSONToYAML(j)
		if err != nil {
			return err
		}
		_, err = w.Write(y)
		return err
	}
	text(w)
	return nil
}

func controlCmd(g *globals) *cobra.Command {
	var (
		cfg       control.Config
		etcd      etcdFlags
		listen    string
		tokenFile string
	)
	cmd := &cobra.Command{
		Use:   "control",
		Short: "Run a control plane replica: the rules and canary API, the web page, /metrics and /healthz, the canary controller when elected",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := g.logger()
			if err != nil {
				return err
			}
			defer g.adaptProcs(cmd.Context(), log)()
			cfg.Logger = log
			cfg.Token = os.Getenv("GRIDDLE_TOKEN")
			if tokenFile != "" {
				b, err := os.ReadFile(tokenFile)
				if err != nil {
					return fmt.Errorf("--token-file: %w", err)
				}
				cfg.Token = ""
				if cfg.Tokens, err = control.ParseTokens(string(b)); err != nil {
					return usageError(fmt.Errorf("--token-file %s: %w", tokenFile, err))
				}
			}
			m, err := etcd.connect(cmd.Context(), nil, launch.Dispatch{}, log)
			if err != nil {
				return err
			}
			defer m.Close()
			cfg.Etcd, cfg.Prefix = m.Etcd, m.Prefix
			s, err := control.New(cfg)
			if err != nil {
				return err
			}
			ln, err := net.Listen("tcp", listen)
			if err != nil {
				return fmt.Errorf("--listen: %w", err)
			}
			log.Info("control plane listening", "addr", ln.Addr().String())
			return s.Run(cmd.Context(), ln)
		},
	}
	f := cmd.Flags()
	f.StringVar(&listen, "listen", "127.0.0.1:9300", "address of the API and the status page")
	f.StringVar(&tokenFile, "token-file", "", "file of bearer tokens, one per line: NAME ROLE TOKEN (NAME is recorded as the author of its changes), ROLE TOKEN or TOKEN (an operator's); ROLE viewer, deployer (canaries), operator (rules, canaries) or admin (also authorization policies) (default: env GRIDDLE_TOKEN, an operator's)")
	f.BoolVar(&cfg.PrivateReads, "private-reads", false, "reads (API, page, /metrics) need a token too, of a viewer or better; /healthz stays open")
	f.StringVar(&cfg.ID, "id", "", "name of this replica in the leader election (default: hostname-pid)")
	f.DurationVar(&cfg.SessionTTL, "session-ttl", control.DefaultSessionTTL, "leader lease: a dead leader is replaced within it")
	f.DurationVar(&cfg.Poll, "poll", canary.DefaultPoll, "how often the canary controller looks for due steps")
	f.DurationVar(&cfg.SampleEvery, "sample-every", control.DefaultSampleEvery, "how often the page's live figures are read from the sidecars' and edges' /metrics")
	etcd.add(cmd)
	return cmd
}

func routesCmd(g *globals) *cobra.Command {
	var o opsFlags
	cmd := &cobra.Command{Use: "routes", Short: "List, get, validate, apply, diff and roll back services' routing rules"}
	o.add(cmd)

	list := &cobra.Command{
		Use: "list", Short: "List every service with rules: revision, author, default route", Args: cobra.NoArgs,
		RunE: withExitCodes(func(cmd *cobra.Command, _ []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			return listRules(cmd, c, &o)
		}),
	}

	get := &cobra.Command{
		Use:   "get [SERVICE]",
		Short: "Print the rules of SERVICE as they were applied (all services' without SERVICE)",
		Long: "Get prints the document exactly as it was applied: key order, comments, YAML or JSON.\n" +
			"Its revision and author go to stderr, so `griddle routes get S | griddle routes apply -f -` is a no-op.\n" +
			"-o yaml prints the document as YAML; -o json prints it with its revision, which apply reads back\n" +
			"(so `routes get S -o json | routes apply -f -` is a compare-and-swap on that revision).",
		Args:              cobra.MaximumNArgs(1),
		ValidArgsFunction: completeServices(&o),
		RunE: withExitCodes(func(cmd *cobra.Command, args []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			if len(args) == 0 {
				return listRules(cmd, c, &o)
			}
			r, err := c.Rules(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			src := r.Source
			if src == "" {
				src = r.YAML
			}
			switch o.output {
			case "json":
				return o.print(cmd.OutOrStdout(), r, nil)
			case "yaml":
				if json.Valid([]byte(src)) {
					src = r.YAML
				}
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "# %s at revision %d, applied %s by %s", r.Service, r.Revision, r.AppliedAt.Format(time.RFC3339), r.Author)
			if r.Comment != "" {
				fmt.Fprintf(cmd.ErrOrStderr(), ": %s", r.Comment)
			}
			fmt.Fprintln(cmd.ErrOrStderr())
			_, err = io.WriteString(cmd.OutOrStdout(), src)
			return err
		}),
	}

	var file string
	var revision int64
	var comment string
	var dryRun bool
	apply := &cobra.Command{
		Use:   "apply -f FILE",
		Short: "Make FILE (YAML or JSON) the rules of its service",
		Long: "Apply validates FILE and stores it, as written, if the rules are still at --revision (the revision you read with get).\n" +
			"Without --revision it is based on the revision in FILE (the output of get -o json) or else on whatever is current.\n" +
			"A document that changes nothing (same meaning, same comments) writes nothing and says so.\n" +
			"With --dry-run nothing is written: the document is replayed against the requests the edges sampled and\n" +
			"the share of traffic and the sticky keys it would move, per version, are printed.\n" +
			"Exit status: 2 invalid document or usage, 3 stale revision or a canary steers the rules, 1 any other error.",
		Args: cobra.NoArgs,
		RunE: withExitCodes(func(cmd *cobra.Command, _ []string) error {
			if file == "" {
				return usageError(errors.New("--file (-f) is required"))
			}
			in, err := readDoc(file, cmd.InOrStdin())
			if err != nil {
				return err
			}
			c, err := o.client()
			if err != nil {
				return err
			}
			if dryRun {
				rep, err := c.DryRun(cmd.Context(), in.doc.Service, in.text)
				if err != nil {
					return err
				}
				return o.print(cmd.OutOrStdout(), rep, func(w io.Writer) {
					io.WriteString(w, rep.Text)
					if rep.Failed > 0 {
						fmt.Fprintf(w, "%d of %d edges could not be read; their requests are not counted\n", rep.Failed, rep.Edges)
					}
				})
			}
			switch {
			case cmd.Flags().Changed("revision"):
			case in.revision != nil:
				revision = *in.revision
			default:
				cur, err := c.Rules(cmd.Context(), in.doc.Service)
				switch {
				case err == nil:
					revision = cur.Revision
				case errors.Is(err, client.ErrNotFound):
					revision = 0
				default:
					return err
				}
			}
			a, err := c.Apply(cmd.Context(), in.doc.Service, in.text, revision, comment)
			if err != nil {
				return err
			}
			return o.print(cmd.OutOrStdout(), a, func(w io.Writer) {
				if a.Unchanged {
					fmt.Fprintf(w, "%s: unchanged: the rules are already this document at revision %d; nothing written\n", a.Service, a.Revision)
					return
				}
				fmt.Fprintf(w, "%s: applied revision %d (replacing %d)\n", a.Service, a.Revision, a.Previous)
			})
		}),
	}
	apply.Flags().StringVarP(&file, "file", "f", "", "the document, YAML or JSON, or the output of get -o json (- for stdin)")
	apply.Flags().Int64Var(&revision, "revision", 0, "the revision your change is based on (0: the service has no rules yet)")
	apply.Flags().StringVar(&comment, "comment", "", "why, for the history")
	apply.Flags().BoolVar(&dryRun, "dry-run", false, "write nothing: report what share of recent traffic and which sticky keys the document would move")

	var dfile string
	diff := &cobra.Command{
		Use:   "diff -f FILE",
		Short: "Show how FILE differs from the current rules of its service, as a unified diff",
		Long: "Diff prints a unified diff from the text `routes get` prints to FILE; patch(1) applies it.\n" +
			"Exit status: 0 no differences, 1 differences, 2 invalid document or usage, other errors 1 with a message.",
		Args: cobra.NoArgs,
		RunE: withExitCodes(func(cmd *cobra.Command, _ []string) error {
			if dfile == "" {
				return usageError(errors.New("--file (-f) is required"))
			}
			in, err := readDoc(dfile, cmd.InOrStdin())
			if err != nil {
				return err
			}
			c, err := o.client()
			if err != nil {
				return err
			}
			d, err := c.Diff(cmd.Context(), in.doc.Service, in.text)
			if err != nil {
				return err
			}
			if err := o.print(cmd.OutOrStdout(), d, func(w io.Writer) {
				if d.Diff == "" {
					fmt.Fprintf(cmd.ErrOrStderr(), "%s: no changes from revision %d\n", d.Service, d.Revision)
					return
				}
				fmt.Fprint(w, d.Diff)
			}); err != nil {
				return err
			}
			if d.Diff != "" {
				return &exitError{exitFailure, fmt.Errorf("%s: %s differs from revision %d", d.Service, dfile, d.Revision)}
			}
			return nil
		}),
	}
	diff.Flags().StringVarP(&dfile, "file", "f", "", "the document, YAML or JSON (- for stdin)")

	var vfile string
	validate := &cobra.Command{
		Use:   "validate -f FILE",
		Short: "Check FILE locally with the same validation the control plane and the data plane run (no server needed)",
		Args:  cobra.NoArgs,
		RunE: withExitCodes(func(cmd *cobra.Command, _ []string) error {
			if err := o.checkOutput(); err != nil {
				return err
			}
			if vfile == "" {
				return usageError(errors.New("--file (-f) is required"))
			}
			in, err := readDoc(vfile, cmd.InOrStdin())
			if err != nil {
				return err
			}
			y, err := rulestore.Canonical(in.doc)
			if err != nil {
				return err
			}
			return o.print(cmd.OutOrStdout(), api.Rules{Service: in.doc.Service, Document: in.doc, YAML: string(y), Source: string(in.text)}, func(w io.Writer) {
				fmt.Fprintf(w, "%s: valid\n", in.doc.Service)
			})
		}),
	}
	validate.Flags().StringVarP(&vfile, "file", "f", "", "the document, YAML or JSON (- for stdin)")

	var limit int
	history := &cobra.Command{
		Use: "history SERVICE", Short: "List the revisions of SERVICE's rules, newest first", Args: cobra.ExactArgs(1),
		ValidArgsFunction: completeServices(&o),
		RunE: withExitCodes(func(cmd *cobra.Command, args []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			h, err := c.History(cmd.Context(), args[0], limit)
			if err != nil {
				return err
			}
			return o.print(cmd.OutOrStdout(), h, func(w io.Writer) {
				tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "REVISION\tAPPLIED\tAUTHOR\tDEFAULT ROUTE\tCOMMENT")
				for _, e := range h.Entries {
					fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\n", e.Revision, e.AppliedAt.Format(time.RFC3339), e.Author, defaultRoute(e.Document), e.Comment)
				}
				tw.Flush()
			})
		}),
	}
	history.Flags().IntVar(&limit, "limit", 20, "most revisions to list (0: the server's default)")

	var to, rbRevision int64
	rollback := &cobra.Command{
		Use: "rollback SERVICE --to REV", Short: "Apply an earlier revision of SERVICE's rules again", Args: cobra.ExactArgs(1),
		ValidArgsFunction: completeServices(&o),
		RunE: withExitCodes(func(cmd *cobra.Command, args []string) error {
			if to <= 0 {
				return usageError(errors.New("--to: the revision to return to is required (see routes history)"))
			}
			c, err := o.client()
			if err != nil {
				return err
			}
			if !cmd.Flags().Changed("revision") {
				cur, err := c.Rules(cmd.Context(), args[0])
				if err != nil {
					return err
				}
				rbRevision = cur.Revision
			}
			a, err := c.Rollback(cmd.Context(), args[0], to, rbRevision)
			if err != nil {
				return err
			}
			return o.print(cmd.OutOrStdout(), a, func(w io.Writer) {
				fmt.Fprintf(w, "%s: revision %d applied again as revision %d\n", a.Service, to, a.Revision)
			})
		}),
	}
	rollback.Flags().Int64Var(&to, "to", 0, "the revision to return to (see history)")
	rollback.Flags().Int64Var(&rbRevision, "revision", 0, "the revision the rules must still be at (default: the current one)")

	cmd.AddCommand(list, get, apply, diff, validate, history, rollback)
	return cmd
}

func listRules(cmd *cobra.Command, c *client.Client, o *opsFlags) error {
	all, err := c.RulesList(cmd.Context())
	if err != nil {
		return err
	}
	return o.print(cmd.OutOrStdout(), all, func(w io.Writer) {
		if len(all) == 0 {
			fmt.Fprintln(w, "no service has rules")
			return
		}
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "SERVICE\tREVISION\tAPPLIED\tAUTHOR\tRULES\tDEFAULT ROUTE")
		for _, r := range all {
			fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%d\t%s\n", r.Service, r.Revision, r.AppliedAt.Format(time.RFC3339), r.Author, r.Rules, weights(r.Default))
		}
		tw.Flush()
	})
}

// input is a document read by readDoc.
type input struct {
	text     []byte // the document as written: what is sent and stored
	doc      *routing.Document
	revision *int64 // the revision of get -o json's output, if that was the input
}

// readDoc reads and validates a document with routing.Parse: the same
// validation the control plane runs. It also takes the output of
// `routes get -o json` and then applies the document it holds (as authored)
// at the revision it names.
func readDoc(file string, stdin io.Reader) (input, error) {
	var (
		b   []byte
		err error
	)
	if file == "-" {
		b, err = io.ReadAll(stdin)
	} else {
		b, err = os.ReadFile(file)
	}
	if err != nil {
		return input{}, fmt.Errorf("-f: %w", err)
	}
	in := input{text: b}
	var env struct {
		Revision *int64          `json:"revision"`
		Document json.RawMessage `json:"document"`
		Source   string          `json:"source"`
		YAML     string          `json:"yaml"`
	}
	if json.Valid(b) && json.Unmarshal(b, &env) == nil && len(env.Document) > 0 && env.Revision != nil {
		in.revision = env.Revision
		switch {
		case env.Source != "":
			in.text = []byte(env.Source)
		case env.YAML != "":
			in.text = []byte(env.YAML)
		default:
			in.text = env.Document
		}
	}
	in.doc, err = routing.Parse(in.text)
	if err != nil {
		return input{}, fmt.Errorf("%s: %w", file, err)
	}
	return in, nil
}

func defaultRoute(doc *routing.Document) string {
	if doc == nil || len(doc.Versions) == 0 {
		return "-"
	}
	return weights(doc.Versions[len(doc.Versions)-1].To)
}

func weights(m map[string]int) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s %d%%", k, m[k]))
	}
	return strings.Join(parts, ", ")
}

func canaryCmd(g *globals) *cobra.Command {
	var o opsFlags
	cmd := &cobra.Command{Use: "canary", Short: "Move a service's traffic to a new version in steps, rolling back on trouble"}
	o.add(cmd)

	var (
		spec             canary.Spec
		steps            []int
		interval, maxP99 time.Duration
		maxErrorRate     string
		maxIncrease      string
	)
	start := &cobra.Command{
		Use:     "start SERVICE --to VERSION",
		Short:   "Start a canary; the control plane's leader steps it",
		Example: "  griddle canary start feed --to v2 --steps 5,25,50,100 --interval 1m --max-error-rate 1% --max-p99 50ms",
		Long: "Start moves every rule that sends traffic to the old version (a pin by header, cookie or query\n" +
			"that sends everything to it is left, and the answer says so). Each step is judged on what the new\n" +
			"version's sidecars, the edges and the calling sidecars saw, against absolute bounds and against the\n" +
			"old version over the same step. A version with no live instance is refused.",
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completeServices(&o),
		RunE: withExitCodes(func(cmd *cobra.Command, args []string) error {
			rate, err := parsePercent(maxErrorRate)
			if err != nil {
				return usageError(fmt.Errorf("--max-error-rate: %w", err))
			}
			inc, err := parsePercent(maxIncrease)
			if err != nil {
				return usageError(fmt.Errorf("--max-error-rate-increase: %w", err))
			}
			if spec.To == "" {
				return usageError(errors.New("--to: the new version is required"))
			}
			spec.Service, spec.Steps, spec.MaxErrorRate, spec.MaxErrorRateIncrease = args[0], steps, rate, inc
			spec.Interval, spec.MaxP99 = routing.Duration(interval), routing.Duration(maxP99)
			if err := spec.Validate(); err != nil {
				return err
			}
			c, err := o.client()
			if err != nil {
				return err
			}
			k, err := c.StartCanary(cmd.Context(), spec)
			if err != nil {
				return err
			}
			return o.print(cmd.OutOrStdout(), k, func(w io.Writer) { printCanary(w, k) })
		}),
	}
	f := start.Flags()
	f.StringVar(&spec.To, "to", "", "the new version (required)")
	f.StringVar(&spec.From, "from", "", "the version traffic moves from (default: the main version of the catch-all rule)")
	f.IntSliceVar(&steps, "steps", []int{5, 25, 50, 100}, "the new version's weights in percent, ending at 100")
	f.DurationVar(&interval, "interval", time.Minute, "how long each step runs before it is judged")
	f.StringVar(&maxErrorRate, "max-error-rate", "1%", "largest tolerated share of 5xx answers")
	f.DurationVar(&maxP99, "max-p99", 0, "largest tolerated p99 latency (0: not checked)")
	f.IntVar(&spec.MinRequests, "min-requests", canary.DefaultMinRequests, "fewest requests a step is judged on")
	f.StringVar(&maxIncrease, "max-error-rate-increase", "1%", "how far the new version's error rate may exceed the old version's over the same step (100% turns the comparison off)")
	f.Float64Var(&spec.MaxP99Ratio, "max-p99-ratio", 0, "how many times the old version's p99 the new version's may be, beyond 5ms (0: not compared)")
	_ = start.RegisterFlagCompletionFunc("to", completeVersions(&o))
	_ = start.RegisterFlagCompletionFunc("from", completeVersions(&o))

	var (
		wait        bool
		waitTimeout time.Duration
	)
	status := &cobra.Command{
		Use:   "status [SERVICE]",
		Short: "Show a canary (all canaries without SERVICE); --wait waits for it to end",
		Long: "With --wait, status follows SERVICE's canary until it ends, printing each new decision, and exits\n" +
			"0 when it was promoted, 4 when it was rolled back or aborted, 1 if --timeout passes first.",
		Args:              cobra.MaximumNArgs(1),
		ValidArgsFunction: completeServices(&o),
		RunE: withExitCodes(func(cmd *cobra.Command, args []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			if wait {
				if len(args) == 0 {
					return usageError(errors.New("--wait needs SERVICE"))
				}
				return waitCanary(cmd, c, &o, args[0], waitTimeout)
			}
			if len(args) == 0 {
				all, err := c.Canaries(cmd.Context())
				if err != nil {
					return err
				}
				return o.print(cmd.OutOrStdout(), all, func(w io.Writer) {
					if len(all) == 0 {
						fmt.Fprintln(w, "no canaries")
					}
					for _, k := range all {
						printCanary(w, k)
					}
				})
			}
			k, err := c.Canary(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return o.print(cmd.OutOrStdout(), k, func(w io.Writer) { printCanary(w, k) })
		}),
	}

	status.Flags().BoolVar(&wait, "wait", false, "wait until the canary ends; the exit status says how")
	status.Flags().DurationVar(&waitTimeout, "timeout", 0, "longest --wait (0: no limit)")

	action := func(use, short string, do func(*client.Client, context.Context, string) (canary.Canary, error)) *cobra.Command {
		return &cobra.Command{
			Use: use + " SERVICE", Short: short, Args: cobra.ExactArgs(1), ValidArgsFunction: completeServices(&o),
			RunE: withExitCodes(func(cmd *cobra.Command, args []string) error {
				c, err := o.client()
				if err != nil {
					return err
				}
				k, err := do(c, cmd.Context(), args[0])
				if err != nil {
					return err
				}
				return o.print(cmd.OutOrStdout(), k, func(w io.Writer) { printCanary(w, k) })
			}),
		}
	}
	cmd.AddCommand(start, status,
		action("promote", "Send all traffic to the new version now", (*client.Client).Promote),
		action("abort", "Send all traffic back to the old version and stop", (*client.Client).Abort))
	return cmd
}

// waitCanary follows service's canary until it ends: exit 0 promoted,
// exitRollback rolled back or aborted.
func waitCanary(cmd *cobra.Command, c *client.Client, o *opsFlags, service string, timeout time.Duration) error {
	ctx := cmd.Context()
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	seen := 0
	for {
		k, err := c.Canary(ctx, service)
		if err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("%s: the canary did not end within --timeout %v", service, timeout)
			}
			return err
		}
		if o.output == "text" {
			if seen == 0 {
				fmt.Fprintf(cmd.OutOrStdout(), "%s: %s → %s, steps %v every %v\n", k.Service, k.From, k.To, k.Steps, time.Duration(k.Interval))
			}
			for _, e := range k.History[min(seen, len(k.History)):] {
				fmt.Fprintf(cmd.OutOrStdout(), "  %s  %-8s %3d%%  %s\n", e.At.Format(time.RFC3339), e.Action, e.Weight, e.Reason)
			}
			seen = len(k.History)
		}
		if k.State != canary.Running {
			if o.output != "text" {
				if err := o.print(cmd.OutOrStdout(), k, nil); err != nil {
					return err
				}
			}
			if k.State == canary.Promoted {
				if o.output == "text" {
					fmt.Fprintf(cmd.OutOrStdout(), "%s: promoted: %s\n", k.Service, k.Reason)
				}
				return nil
			}
			return &exitError{exitRollback, fmt.Errorf("%s: the canary %s: %s", k.Service, k.State, k.Reason)}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: the canary did not end within --timeout %v (still %s at %d%%)", service, timeout, k.State, k.Weight())
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// parsePercent reads "1%" or "0.01" as 0.01.
func parsePercent(s string) (float64, error) {
	p, pct := strings.CutSuffix(strings.TrimSpace(s), "%")
	v, err := strconv.ParseFloat(p, 64)
	if err != nil {
		return 0, fmt.Errorf("%q is not a rate such as 1%% or 0.01", s)
	}
	if pct {
		v /= 100
	}
	return v, nil
}

func printCanary(w io.Writer, k canary.Canary) {
	fmt.Fprintf(w, "%s: %s → %s, %s at %d%% (steps %v, every %v)\n", k.Service, k.From, k.To, k.State, k.Weight(), k.Steps, time.Duration(k.Interval))
	if k.Reason != "" {
		fmt.Fprintf(w, "  %s\n", k.Reason)
	}
	if k.State == canary.Running {
		fmt.Fprintf(w, "  next decision at %s\n", k.NextAt.Format(time.RFC3339))
	}
	if len(k.Kept) > 0 {
		fmt.Fprintf(w, "  rules left as they are: %v (pins to %s)\n", k.Kept, k.From)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  AT\tACTION\tWEIGHT\tREQUESTS\tERRORS\tP99\tREVISION\tWHY")
	for _, e := range k.History {
		req, errs, p99 := "-", "-", "-"
		if m := e.Metrics; m != nil {
			req, errs, p99 = fmt.Sprint(m.Requests), fmt.Sprintf("%.2f%%", 100*m.ErrorRate), time.Duration(m.P99).String()
		}
		rev := "-"
		if e.RuleRevision > 0 {
			rev = strconv.FormatInt(e.RuleRevision, 10)
		}
		fmt.Fprintf(tw, "  %s\t%s\t%d%%\t%s\t%s\t%s\t%s\t%s\n", e.At.Format(time.RFC3339), e.Action, e.Weight, req, errs, p99, rev, e.Reason)
	}
	tw.Flush()
}

func statusCmd(g *globals) *cobra.Command {
	var o opsFlags
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show services, versions, instances and edges, and which rules revision each runs",
		Args:  cobra.NoArgs,
		RunE: withExitCodes(func(cmd *cobra.Command, _ []string) error {
			c, err := o.client()
			if err != nil {
				return err
			}
			st, err := c.Services(cmd.Context())
			if err != nil {
				return err
			}
			return o.print(cmd.OutOrStdout(), st, func(w io.Writer) { printStatus(w, st) })
		}),
	}
	o.add(cmd)
	return cmd
}

func printStatus(w io.Writer, st api.Services) {
	leader := st.Leader
	if leader == "" {
		leader = "none"
	}
	fmt.Fprintf(w, "control plane leader: %s\n\n", leader)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SERVICE\tVERSION\tINSTANCE\tADDRESS\tUP\tRULES")
	behind := 0
	for _, s := range st.Services {
		rules := "no rules"
		if s.RuleRevision > 0 {
			rules = fmt.Sprintf("revision %d: %s", s.RuleRevision, weights(s.Weights))
		}
		if s.Canary != nil {
			rules += fmt.Sprintf("; canary → %s %s at %d%%", s.Canary.To, s.Canary.State, s.Canary.Weight())
		}
		fmt.Fprintf(tw, "%s\t\t\t\t\t%s\n", s.Name, rules)
		for _, v := range s.Versions {
			for _, in := range v.Instances {
				mark := ""
				if in.Behind {
					mark, behind = " (behind)", behind+1
				}
				fmt.Fprintf(tw, "\t%s\t%s\t%s\t%s\t%d%s\n", v.Name, in.ID, in.Address, upFor(in.Started), in.RuleRevision, mark)
			}
		}
	}
	tw.Flush()
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "EDGE\tADDRESS\tUP\tRULES")
	for _, e := range st.Edges {
		mark := ""
		if e.Behind {
			mark, behind = " (behind)", behind+1
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d%s\n", e.ID, e.Address, upFor(e.Started), e.RuleRevision, mark)
	}
	if len(st.Edges) == 0 {
		fmt.Fprintln(tw, "(none registered)")
	}
	tw.Flush()
	if behind > 0 {
		fmt.Fprintf(w, "\n%d instance(s) or edge(s) still run older rules\n", behind)
	}
}

func upFor(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return time.Since(t).Round(time.Second).String()
}
