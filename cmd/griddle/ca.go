package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/griddle-mesh/griddle/internal/ca"
	"github.com/griddle-mesh/griddle/internal/meshtls"
)

func caCmd(*globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "ca",
		Short: "The mesh's certificate authority: make one, issue workload certificates with their identity",
		Args:  cobra.NoArgs,
	}
	var dir string
	cmd.PersistentFlags().StringVar(&dir, "dir", ".griddle/ca", "directory of the CA's certificate and private key")

	var validity time.Duration
	initCmd := &cobra.Command{
		Use:   "init",
		Short: "Make a new CA in --dir (refused if one is there)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if _, err := ca.Init(dir, validity); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "CA made in %s: give every process --tls-ca %s/%s; keep %s/%s where only issuing runs\n",
				dir, dir, ca.CertFile, dir, ca.KeyFile)
			return nil
		},
	}
	initCmd.Flags().DurationVar(&validity, "validity", 5*365*24*time.Hour, "how long the CA's certificate is valid")

	var (
		req  ca.Request
		edge bool
		out  string
	)
	issueCmd := &cobra.Command{
		Use:   "issue",
		Short: "Issue a short-lived certificate with a workload's identity into --out (cert.pem, key.pem, ca.pem); run it again before expiry to rotate",
		Long: `Issue a certificate whose URI SAN is the workload's identity:
spiffe://griddle/SERVICE/VERSION for a sidecar (--service, --version), spiffe://griddle/edge for an
edge (--edge). Files in --out are replaced atomically; the processes that use them pick the new
certificate up within a second and keep the connections they have, so a rotation drops no request.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if edge {
				if req.Identity.Service != "" || req.Identity.Version != "" {
					return usageError(fmt.Errorf("--edge: not with --service or --version"))
				}
				req.Identity = meshtls.Edge
			} else if req.Identity.Service == "" || req.Identity.Version == "" {
				return usageError(fmt.Errorf("--service and --version (or --edge): required"))
			}
			if err := req.Validate(); err != nil {
				return usageError(err)
			}
			authority, err := ca.Load(dir)
			if err != nil {
				return err
			}
			is, err := authority.Issue(req)
			if err != nil {
				return err
			}
			f, err := is.Write(out)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s until %s: --tls-cert %s --tls-key %s --tls-ca %s\n",
				req.Identity, is.Leaf.NotAfter.UTC().Format(time.RFC3339), f.Cert, f.Key, f.CA)
			return nil
		},
	}
	fl := issueCmd.Flags()
	fl.StringVar(&req.Identity.Service, "service", "", "the sidecar's service")
	fl.StringVar(&req.Identity.Version, "version", "", "the sidecar's version")
	fl.BoolVar(&edge, "edge", false, "a certificate for an edge instead of a sidecar")
	fl.DurationVar(&req.TTL, "ttl", ca.DefaultTTL, "how long the certificate is valid (at most 90 days)")
	fl.StringArrayVar(&req.Hosts, "host", nil, "DNS name or IP address to add, for peers that check addresses (repeatable)")
	fl.StringVar(&out, "out", "", "directory to write cert.pem, key.pem and ca.pem into (required)")
	_ = issueCmd.MarkFlagRequired("out")

	cmd.AddCommand(initCmd, issueCmd)
	return cmd
}
