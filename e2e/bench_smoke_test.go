package e2e

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestBenchSmoke runs griddle bench briefly — a few hundred requests per
// target, static scenario, direct and mesh, and nginx where it is installed —
// and checks that it runs and writes its files. It checks no speed: the
// numbers of a shared CI machine mean nothing.
func TestBenchSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the mesh and its baselines")
	}
	targets := "direct,mesh"
	if _, err := exec.LookPath("nginx"); err == nil {
		targets += ",nginx"
	} else {
		t.Log("nginx is not installed: the nginx target is left out")
	}
	out := t.TempDir()
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin.Griddle, "bench", "run", "--log-level", "warn",
		"--scenario", "static", "--targets", targets, "--rates", "100", "--duration", "2s", "--warmup", "500ms",
		"--handlers", filepath.Dir(bin.Handlers["hello"]), "--out", out)
	cmd.WaitDelay = 15 * time.Second
	stdout, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("griddle bench run: %v\n%s", err, stdout)
	}
	if !strings.Contains(string(stdout), "p99 ms") {
		t.Errorf("no table on stdout:\n%s", stdout)
	}

	b, err := os.ReadFile(filepath.Join(out, "results.json"))
	if err != nil {
		t.Fatal(err)
	}
	var res struct {
		Machine struct {
			NumCPU int `json:"nproc"`
		} `json:"machine"`
		Targets []string   `json:"targets"`
		Runs    []benchRun `json:"runs"`
	}
	if err := json.Unmarshal(b, &res); err != nil {
		t.Fatalf("results.json: %v\n%s", err, b)
	}
	if res.Machine.NumCPU < 1 {
		t.Errorf("results.json: nproc %d, want 1 or more", res.Machine.NumCPU)
	}
	want := strings.Split(targets, ",")
	if slices.Compare(res.Targets, want) != 0 {
		t.Errorf("results.json: targets %v, want %v", res.Targets, want)
	}
	for _, name := range want {
		i := slices.IndexFunc(res.Runs, func(r benchRun) bool { return r.Target == name && r.Kept })
		if i < 0 {
			t.Errorf("results.json: no kept run of %s", name)
		} else if r := res.Runs[i]; r.Requests == 0 || r.Offered != 100 {
			t.Errorf("results.json: %s: %d requests at %g/s, want some at 100/s", name, r.Requests, r.Offered)
		}
	}

	svg, err := os.ReadFile(filepath.Join(out, "latency.svg"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(svg), "<svg") || !strings.Contains(string(svg), "</svg>") {
		t.Errorf("latency.svg is not an SVG document:\n%.200s", svg)
	}
}

// benchRun is what TestBenchSmoke reads of a run in results.json.
type benchRun struct {
	Target   string  `json:"target"`
	Requests int     `json:"requests"`
	Offered  float64 `json:"offered_rps"`
	Kept     bool    `json:"kept"`
}
