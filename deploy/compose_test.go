package deploy_test

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"
)

const composeFile = "compose/compose.yaml"

// loadCompose loads a compose file with the compose specification's own
// loader: schema validation (unknown keys fail), interpolation, anchors and
// merges, then the consistency checks (depends_on, volumes, secrets).
func loadCompose(t *testing.T, path string, data []byte) (*types.Project, error) {
	t.Helper()
	abs, err := filepath.Abs(path)
	if err != nil {
		t.Fatal(err)
	}
	return loader.LoadWithContext(t.Context(), types.ConfigDetails{
		WorkingDir:  filepath.Dir(abs),
		ConfigFiles: []types.ConfigFile{{Filename: abs, Content: data}},
		Environment: types.Mapping{"GRIDDLE_TOKEN": "test-token"},
	}, func(o *loader.Options) { o.SetProjectName("griddle", true) })
}

func TestComposeLoads(t *testing.T) {
	data, err := os.ReadFile(composeFile)
	if err != nil {
		t.Fatal(err)
	}
	p, err := loadCompose(t, composeFile, data)
	if err != nil {
		t.Fatalf("compose loader: %v", err)
	}
	var etcd, edges []string
	for name, s := range p.Services {
		switch {
		case strings.HasPrefix(name, "etcd-"):
			etcd = append(etcd, name)
			if v := s.Environment["ETCD_INITIAL_CLUSTER"]; v == nil || !strings.Contains(*v, "etcd-3=http://etcd-3:2380") {
				t.Errorf("%s: ETCD_INITIAL_CLUSTER does not list the three members", name)
			}
		case strings.HasPrefix(name, "edge-"):
			edges = append(edges, name)
		}
		if b := s.Build; b != nil {
			df := filepath.Join(b.Context, b.Dockerfile)
			if _, err := os.Stat(df); err != nil {
				t.Errorf("%s: build.dockerfile: %v", name, err)
			}
			if _, err := os.Stat(filepath.Join(b.Context, "go.mod")); err != nil {
				t.Errorf("%s: build.context %s is not the repository's root: %v", name, b.Context, err)
			}
		}
	}
	if len(etcd) != 3 {
		t.Errorf("etcd services %v, want 3", etcd)
	}
	if len(edges) != 2 {
		t.Errorf("edge services %v, want 2", edges)
	}
	if fdb, ok := p.Services["fdb"]; !ok || !strings.HasPrefix(fdb.Image, "foundationdb/foundationdb:7.3.") {
		t.Errorf("service fdb: want the official foundationdb/foundationdb:7.3.x image, got %+v", fdb.Image)
	}
	for _, svc := range []string{"control", "hello", "profiles", "messages", "feed"} {
		s, ok := p.Services[svc]
		if !ok {
			t.Errorf("no service %s", svc)
			continue
		}
		if svc == "control" {
			continue
		}
		cmd := strings.Join(s.Command, " ")
		for _, flag := range []string{"--service " + svc, "--advertise tcp://" + svc + ":7001", "--events-listen tcp://" + svc + ":7002", "--etcd etcd-1:2379,etcd-2:2379,etcd-3:2379"} {
			if !strings.Contains(cmd, flag) {
				t.Errorf("service %s: command %q lacks %q", svc, cmd, flag)
			}
		}
		if svc != "hello" && !strings.Contains(cmd, "--store fdb:/etc/foundationdb/fdb.cluster") {
			t.Errorf("service %s: command %q does not use FoundationDB", svc, cmd)
		}
		if !s.ReadOnly || s.User == "" || s.User == "0" || s.User == "root" {
			t.Errorf("service %s: want read_only and a non-root user, got read_only %v user %q", svc, s.ReadOnly, s.User)
		}
		if !slices.ContainsFunc(s.Volumes, func(v types.ServiceVolumeConfig) bool { return v.Target == "/etc/foundationdb" && v.ReadOnly }) {
			t.Errorf("service %s: the cluster file volume is not mounted read-only at /etc/foundationdb", svc)
		}
	}
}

// TestComposeRejects shows the loader fails on what it should.
func TestComposeRejects(t *testing.T) {
	for _, c := range []struct{ name, doc string }{
		{"unknown key", "services:\n  a:\n    image: x\n    imagee: y\n"},
		{"missing dependency", "services:\n  a:\n    image: x\n    depends_on: [b]\n"},
		{"undeclared volume", "services:\n  a:\n    image: x\n    volumes: [data:/d]\n"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if _, err := loadCompose(t, filepath.Join(t.TempDir(), "compose.yaml"), []byte(c.doc)); err == nil {
				t.Error("compose loader accepted it, want an error")
			}
		})
	}
}
