package main

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/griddle-mesh/griddle/internal/routing"
)

// readPinKeys reads the HMAC keys of signed pins, one per file (the
// file's bytes with surrounding white space trimmed).
func readPinKeys(flag string, files []string) ([][]byte, error) {
	var keys [][]byte
	for i, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("%s[%d]: %w", flag, i, err)
		}
		k := bytes.TrimSpace(b)
		if len(k) < routing.MinPinKeyBytes {
			return nil, fmt.Errorf("%s[%d]: %s holds %d bytes, want at least %d (e.g. openssl rand -hex 32 > %s)", flag, i, f, len(k), routing.MinPinKeyBytes, f)
		}
		keys = append(keys, k)
	}
	return keys, nil
}

// parseCIDRs parses the values of a repeatable CIDR flag.
func parseCIDRs(flag string, vs []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for i, v := range vs {
		p, err := netip.ParsePrefix(v)
		if err != nil {
			return nil, fmt.Errorf("%s[%d]: %q: want a CIDR such as 10.0.0.0/8", flag, i, v)
		}
		out = append(out, p)
	}
	return out, nil
}

func pinCmd() *cobra.Command {
	var (
		keyFile string
		ttl     time.Duration
	)
	cmd := &cobra.Command{
		Use:   "pin SERVICE=VERSION[,SERVICE=VERSION...]",
		Short: "Sign version pins for testers: a token edges given the same --pin-key-file honour from any client",
		Long: "Prints a signed pin token. Send it as the X-Griddle-Pin header or the griddle-pin cookie;\n" +
			"an edge started with the same --pin-key-file honours it until it expires, and only to versions with live instances.",
		Example: "  griddle pin --key-file /etc/griddle/pin.key --ttl 1h feed=v2,profiles=v3\n" +
			"  curl -H \"X-Griddle-Pin: $(griddle pin --key-file pin.key feed=v2)\" http://edge/feed/42",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if keyFile == "" {
				return fmt.Errorf("pin: --key-file: required")
			}
			if ttl <= 0 {
				return fmt.Errorf("pin: --ttl: %v must be positive", ttl)
			}
			keys, err := readPinKeys("--key-file", []string{keyFile})
			if err != nil {
				return fmt.Errorf("pin: %w", err)
			}
			tok, err := routing.SignPins(keys[0], args[0], time.Now().Add(ttl))
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), tok)
			return nil
		},
	}
	cmd.Flags().StringVar(&keyFile, "key-file", "", "file holding the HMAC key (at least 16 bytes), the edges' --pin-key-file")
	cmd.Flags().DurationVar(&ttl, "ttl", time.Hour, "how long the token is honoured")
	return cmd
}
