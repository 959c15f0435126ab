package bench

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/griddle-mesh/griddle/edge"
)

// profileSlack is how long a profile may take beyond its own length before
// its fetch is abandoned.
const profileSlack = 30 * time.Second

// startProfiles starts fetching a CPU profile of each of t's profilers,
// each covering d (whole seconds, at least one), to run alongside one run.
// label names the run in the files' names. The returned wait must be
// called: it returns once every fetch has ended, with the files written;
// fetches that failed are logged and left out.
func (s *session) startProfiles(ctx context.Context, t *target, label string, d time.Duration) (wait func() []string) {
	if s.cfg.CPUProfileDir == "" || len(t.profilers) == 0 {
		return func() []string { return nil }
	}
	if t.edgeAdmin != "" {
		t.profilers = append(t.profilers, handlerProfilers(ctx, t.edgeAdmin, s.log)...)
		t.edgeAdmin = ""
	}
	secs := max(1, int(math.Round(d.Seconds())))
	ctx, cancel := context.WithTimeout(ctx, time.Duration(secs)*time.Second+profileSlack)
	client := &http.Client{}
	files := make([]string, len(t.profilers))
	errs := make([]error, len(t.profilers))
	var wg sync.WaitGroup
	for i, p := range t.profilers {
		wg.Go(func() {
			path := filepath.Join(s.cfg.CPUProfileDir, fmt.Sprintf("%s-%s-%s.pprof", t.name, p.name, label))
			url := "http://" + p.admin + cmp.Or(p.route, "/debug/pprof/profile") + "?seconds=" + strconv.Itoa(secs)
			if errs[i] = fetchProfile(ctx, client, url, path); errs[i] == nil {
				files[i] = path
			}
		})
	}
	return func() []string {
		wg.Wait()
		cancel()
		var out []string
		for i, f := range files {
			if errs[i] != nil {
				s.log.Warn("bench: CPU profile not saved", "target", t.name, "component", t.profilers[i].name, "err", errs[i])
				continue
			}
			out = append(out, f)
		}
		return out
	}
}

// fetchProfile saves what url answers to path; a partial file is removed.
func fetchProfile(ctx context.Context, client *http.Client, url, path string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 256))
		return fmt.Errorf("%s: %s: %s", url, resp.Status, msg)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		os.Remove(path)
		return fmt.Errorf("%s: %w", url, err)
	}
	return f.Close()
}

// handlerProfilers are the profilers of the handlers of the instances
// the edge at admin lists in its /status; none when it cannot be read.
func handlerProfilers(ctx context.Context, admin string, log *slog.Logger) []profiler {
	st, err := edgeStatus(ctx, admin)
	if err != nil {
		log.Warn("bench: no CPU profiles of the handlers", "err", err)
		return nil
	}
	var out []profiler
	for _, svc := range slices.Sorted(maps.Keys(st.Instances)) {
		for _, in := range st.Instances[svc] {
			if in.Admin != "" {
				out = append(out, handlerProfiler(in.ID, in.Admin))
			}
		}
	}
	return out
}

// edgeStatus reads the /status of the edge at admin.
func edgeStatus(ctx context.Context, admin string) (edge.Status, error) {
	var st edge.Status
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+admin+"/status", nil)
	if err != nil {
		return st, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("edge /status: %s", resp.Status)
	}
	return st, json.NewDecoder(resp.Body).Decode(&st)
}
