package runtimeenv

import (
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestWanted: the setting is made only where the runtime's first trace is
// more than an hour away.
func TestWanted(t *testing.T) {
	up, ok := monotonic()
	if !ok {
		t.Skip("no monotonic clock reading on this system")
	}
	if got, want := wanted(), up < period-time.Hour; got != want {
		t.Fatalf("wanted() = %v at an uptime of %v, want %v", got, up, want)
	}
	if !wanted() && !slices.Equal(With([]string{"A=1"}), []string{"A=1"}) {
		t.Fatal("With changed the environment on a host where the setting is not made")
	}
}

func TestWith(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  []string
		want []string
	}{
		{"no GODEBUG", []string{"A=1"}, []string{"A=1", "GODEBUG=" + Setting}},
		{"empty GODEBUG", []string{"GODEBUG="}, []string{"GODEBUG=" + Setting}},
		{"other settings kept", []string{"GODEBUG=http2client=0", "B=2"}, []string{"GODEBUG=http2client=0," + Setting, "B=2"}},
		{"operator's schedtrace kept", []string{"GODEBUG=schedtrace=0"}, []string{"GODEBUG=schedtrace=0"}},
		{"operator's schedtrace among others", []string{"GODEBUG=gctrace=1, schedtrace=1000"}, []string{"GODEBUG=gctrace=1, schedtrace=1000"}},
		{"a name that only contains it", []string{"GODEBUG=xschedtrace=1"}, []string{"GODEBUG=xschedtrace=1," + Setting}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := slices.Clone(tc.env)
			got := with(tc.env)
			if !slices.Equal(got, tc.want) {
				t.Fatalf("with(%q) = %q, want %q", tc.env, got, tc.want)
			}
			if !slices.Equal(in, tc.env) {
				t.Fatalf("with modified its argument: %q", tc.env)
			}
		})
	}
}

// TestReexec runs this test binary as a child that calls Reexec and
// reports the GODEBUG it ends up with: the exec must put Setting in and
// happen once, and an operator's schedtrace must be left alone.
func TestReexec(t *testing.T) {
	if !wanted() {
		t.Skip("this host has been up too long for the setting: Reexec leaves the environment as it is")
	}
	if os.Getenv("RUNTIMEENV_CHILD") == "1" {
		if err := Reexec(); err != nil {
			os.Stdout.WriteString("error: " + err.Error())
			os.Exit(1)
		}
		os.Stdout.WriteString("GODEBUG=" + os.Getenv("GODEBUG"))
		os.Exit(0)
	}
	for _, tc := range []struct{ godebug, want string }{
		{"", "GODEBUG=" + Setting},
		{"gctrace=0", "GODEBUG=gctrace=0," + Setting},
		{"schedtrace=0", "GODEBUG=schedtrace=0"},
	} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestReexec$")
		cmd.Env = append(slices.DeleteFunc(os.Environ(), func(kv string) bool {
			return strings.HasPrefix(kv, "GODEBUG=")
		}), "RUNTIMEENV_CHILD=1", "GODEBUG="+tc.godebug)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("GODEBUG=%q: child: %v: %s", tc.godebug, err, out)
		}
		if string(out) != tc.want {
			t.Errorf("GODEBUG=%q: child ran with %q, want %q", tc.godebug, out, tc.want)
		}
	}
}
