package multihost

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestLab checks the test's own network: a host reaches another through
// the switch, not after its link is cut, again once it is back, and through
// an impaired link; every namespace is gone afterwards. It needs root and
// ip, and runs in the ordinary suite (a second or two).
func TestLab(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("network lab: needs root to make network namespaces and links")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("network lab: ip is not installed (apt-get install iproute2)")
	}
	const prefix = "gml-"
	t.Run("links", func(t *testing.T) {
		l := newLab(t, prefix, "10.78.0")
		a, b := l.add("a", 1), l.add("b", 2)
		ln, err := listenIn(b.ns, b.ip+":7000")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go func() {
					defer c.Close()
					line, _ := bufio.NewReader(c).ReadString('\n')
					fmt.Fprint(c, "echo "+line)
				}()
			}
		}()
		d, err := newNSDialer(t.Context(), a.ns, 1)
		if err != nil {
			t.Fatal(err)
		}
		echo := func() error {
			ctx, cancel := context.WithTimeout(t.Context(), time.Second)
			defer cancel()
			c, err := d.DialContext(ctx, "tcp", b.ip+":7000")
			if err != nil {
				return err
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(time.Second))
			fmt.Fprint(c, "hi\n")
			got, err := bufio.NewReader(c).ReadString('\n')
			if err != nil {
				return err
			}
			if got != "echo hi\n" {
				return fmt.Errorf("got %q, want %q", got, "echo hi\n")
			}
			return nil
		}
		if err := echo(); err != nil {
			t.Fatalf("a → b: %v", err)
		}
		if err := l.cut(b, true); err != nil {
			t.Fatal(err)
		}
		if err := echo(); err == nil {
			t.Error("a → b with b's link cut: answered, want no connection")
		}
		if err := l.cut(b, false); err != nil {
			t.Fatal(err)
		}
		// A's neighbour entry for b failed while the link was cut, and a
		// SYN lost to it is sent again only a second later: the link is
		// back when an echo gets through within a few seconds.
		var back error
		for deadline := time.Now().Add(5 * time.Second); ; {
			if back = echo(); back == nil || time.Now().After(deadline) {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		if back != nil {
			t.Errorf("a → b with b's link back: %v", back)
		}
		if _, err := exec.LookPath("tc"); err == nil {
			how, err := impair(b)
			if err != nil {
				t.Fatalf("impair: %v", err)
			}
			t.Logf("impaired b's link: %s", how)
			if err := repair(b); err != nil {
				t.Errorf("repair: %v", err)
			}
		}
	})
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), prefix) {
		t.Errorf("namespaces left after the lab's cleanup:\n%s", out)
	}
}
