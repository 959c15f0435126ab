package deploy_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	yamlv3 "go.yaml.in/yaml/v3"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

const kustomizeBase = "kubernetes/base"

// external are objects the manifests refer to that the cluster's operator
// or the FoundationDB operator creates, not the base.
var external = map[string]string{
	"Secret/griddle-control-token": "created by hand: the control plane's write token",
	"ConfigMap/griddle-fdb-config": "written by the FoundationDB operator for FoundationDBCluster griddle-fdb",
}

// object is one decoded Kubernetes object.
type object struct {
	kind, name string
	value      any // *appsv1.Deployment, …
}

// decodeStrict decodes one object into the Go type of its apiVersion and
// kind, failing on fields the type does not have.
func decodeStrict(doc []byte) (object, error) {
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal(doc, &tm); err != nil {
		return object{}, err
	}
	var v any
	switch tm.APIVersion + " " + tm.Kind {
	case "v1 Namespace":
		v = new(corev1.Namespace)
	case "v1 Service":
		v = new(corev1.Service)
	case "v1 ConfigMap":
		v = new(corev1.ConfigMap)
	case "v1 Secret":
		v = new(corev1.Secret)
	case "apps/v1 Deployment":
		v = new(appsv1.Deployment)
	case "apps/v1 StatefulSet":
		v = new(appsv1.StatefulSet)
	case "policy/v1 PodDisruptionBudget":
		v = new(policyv1.PodDisruptionBudget)
	case "apps.foundationdb.org/v1beta2 FoundationDBCluster":
		v = new(fdbCluster)
	default:
		return object{}, fmt.Errorf("apiVersion %q kind %q: not a type this test knows; add it", tm.APIVersion, tm.Kind)
	}
	if err := yaml.UnmarshalStrict(doc, v); err != nil {
		return object{}, fmt.Errorf("%s: %w", tm.Kind, err)
	}
	var meta struct {
		Metadata metav1.ObjectMeta `json:"metadata"`
	}
	if err := yaml.Unmarshal(doc, &meta); err != nil {
		return object{}, err
	}
	if meta.Metadata.Name == "" {
		return object{}, fmt.Errorf("%s: metadata.name is empty", tm.Kind)
	}
	if f, ok := v.(*fdbCluster); ok {
		if err := f.validate(); err != nil {
			return object{}, fmt.Errorf("FoundationDBCluster %s: %w", meta.Metadata.Name, err)
		}
	}
	return object{kind: tm.Kind, name: meta.Metadata.Name, value: v}, nil
}

// splitYAML returns the documents of a multi-document YAML stream,
// re-encoded one by one.
func splitYAML(data []byte) ([][]byte, error) {
	dec := yamlv3.NewDecoder(bytes.NewReader(data))
	var docs [][]byte
	for {
		var n yamlv3.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return nil, err
		}
		b, err := yamlv3.Marshal(&n)
		if err != nil {
			return nil, err
		}
		docs = append(docs, b)
	}
}

// TestManifestFilesDecodeStrictly decodes every object of every YAML file
// under kubernetes/, as written (before kustomize).
func TestManifestFilesDecodeStrictly(t *testing.T) {
	var files []string
	err := filepath.WalkDir("kubernetes", func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && (strings.HasSuffix(path, ".yaml") || strings.HasSuffix(path, ".yml")) && d.Name() != "kustomization.yaml" {
			files = append(files, path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 5 {
		t.Fatalf("found %d manifest files under kubernetes/, want at least 5", len(files))
	}
	for _, f := range files {
		t.Run(f, func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			docs, err := splitYAML(data)
			if err != nil {
				t.Fatal(err)
			}
			if len(docs) == 0 {
				t.Fatal("no objects")
			}
			for i, doc := range docs {
				if _, err := decodeStrict(doc); err != nil {
					t.Errorf("object %d: %v", i, err)
				}
			}
		})
	}
}

// render runs kustomize on dir as `kubectl apply -k` would.
func render(t *testing.T, dir string) [][]byte {
	t.Helper()
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	m, err := k.Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	var docs [][]byte
	for _, r := range m.Resources() {
		b, err := r.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		docs = append(docs, b)
	}
	return docs
}

func TestKustomizeBaseRenders(t *testing.T) {
	objs := renderObjects(t, kustomizeBase)
	for _, want := range []string{
		"Namespace/griddle", "StatefulSet/etcd", "Service/etcd", "PodDisruptionBudget/etcd",
		"FoundationDBCluster/griddle-fdb",
		"Deployment/control", "Service/control", "PodDisruptionBudget/control",
		"Deployment/edge", "Service/edge", "PodDisruptionBudget/edge",
		"Deployment/hello", "Deployment/profiles", "Deployment/messages", "Deployment/feed",
		"PodDisruptionBudget/profiles",
	} {
		if _, ok := objs[want]; !ok {
			t.Errorf("the rendered base has no %s", want)
		}
	}
	if ss, ok := objs["StatefulSet/etcd"].value.(*appsv1.StatefulSet); ok && (ss.Spec.Replicas == nil || *ss.Spec.Replicas != 3) {
		t.Errorf("etcd replicas = %v, want 3", ss.Spec.Replicas)
	}
	checkWorkloads(t, objs)
}

// TestKustomizeOverlaysRender renders every overlay and checks it as the
// base; the seed-target overlay must scale edges and profiles.
func TestKustomizeOverlaysRender(t *testing.T) {
	dirs, err := filepath.Glob("kubernetes/overlays/*/kustomization.yaml")
	if err != nil || len(dirs) == 0 {
		t.Fatalf("no overlays found (%v)", err)
	}
	for _, k := range dirs {
		dir := filepath.Dir(k)
		t.Run(dir, func(t *testing.T) {
			objs := renderObjects(t, dir)
			checkWorkloads(t, objs)
			if filepath.Base(dir) != "seed-target" {
				return
			}
			for name, want := range map[string]int32{"edge": 12, "profiles": 27} {
				d, ok := objs["Deployment/"+name].value.(*appsv1.Deployment)
				if !ok || d.Spec.Replicas == nil || *d.Spec.Replicas != want {
					t.Errorf("Deployment %s: replicas %v, want %d", name, d.Spec.Replicas, want)
				}
			}
		})
	}
}

// renderObjects renders dir and decodes each object strictly, by kind/name.
func renderObjects(t *testing.T, dir string) map[string]object {
	t.Helper()
	objs := map[string]object{}
	for i, doc := range render(t, dir) {
		o, err := decodeStrict(doc)
		if err != nil {
			t.Errorf("rendered object %d: %v", i, err)
			continue
		}
		objs[o.kind+"/"+o.name] = o
	}
	return objs
}

// workload is what checkWorkloads needs of a Deployment or StatefulSet.
type workload struct {
	id       string
	selector *metav1.LabelSelector
	template corev1.PodTemplateSpec
}

// checkWorkloads checks what strict decoding cannot: selectors that match,
// resources and hardening on every container, references that resolve.
func checkWorkloads(t *testing.T, objs map[string]object) {
	var ws []workload
	for id, o := range objs {
		switch v := o.value.(type) {
		case *appsv1.Deployment:
			ws = append(ws, workload{id, v.Spec.Selector, v.Spec.Template})
		case *appsv1.StatefulSet:
			ws = append(ws, workload{id, v.Spec.Selector, v.Spec.Template})
		}
		if ns := namespaceOf(o); o.kind != "Namespace" && ns != "griddle" {
			t.Errorf("%s: namespace %q, want griddle", id, ns)
		}
	}
	slices.SortFunc(ws, func(a, b workload) int { return strings.Compare(a.id, b.id) })
	matches := func(sel *metav1.LabelSelector) (n int) {
		s, err := metav1.LabelSelectorAsSelector(sel)
		if err != nil {
			t.Errorf("selector %v: %v", sel, err)
			return 0
		}
		for _, w := range ws {
			if s.Matches(labels.Set(w.template.Labels)) {
				n++
			}
		}
		return n
	}
	for _, w := range ws {
		s, err := metav1.LabelSelectorAsSelector(w.selector)
		if err != nil || s.Empty() || !s.Matches(labels.Set(w.template.Labels)) {
			t.Errorf("%s: selector %v does not match its pod labels %v", w.id, w.selector, w.template.Labels)
		}
		pod := w.template.Spec
		if pod.SecurityContext == nil || pod.SecurityContext.RunAsNonRoot == nil || !*pod.SecurityContext.RunAsNonRoot {
			t.Errorf("%s: pod securityContext.runAsNonRoot is not true", w.id)
		}
		for _, c := range slices.Concat(pod.InitContainers, pod.Containers) {
			cid := w.id + " container " + c.Name
			if c.Image == "" || !strings.Contains(c.Image, "/") {
				t.Errorf("%s: image %q is not a registry reference (kustomize images: not applied?)", cid, c.Image)
			}
			if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() {
				t.Errorf("%s: no cpu and memory requests", cid)
			}
			if c.Resources.Limits.Memory().IsZero() {
				t.Errorf("%s: no memory limit", cid)
			}
			sc := c.SecurityContext
			if sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
				sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
				sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
				t.Errorf("%s: securityContext wants allowPrivilegeEscalation false, readOnlyRootFilesystem true, capabilities drop ALL", cid)
			}
			if c.ReadinessProbe == nil {
				t.Errorf("%s: no readinessProbe", cid)
			}
			ports := map[string]bool{}
			for _, p := range c.Ports {
				ports[p.Name] = true
			}
			for _, pr := range []*corev1.Probe{c.ReadinessProbe, c.LivenessProbe} {
				if pr == nil {
					continue
				}
				if h := pr.HTTPGet; h != nil && h.Port.StrVal != "" && !ports[h.Port.StrVal] {
					t.Errorf("%s: probe port %q is not a port of the container", cid, h.Port.StrVal)
				}
			}
			mounted := map[string]bool{}
			for _, m := range c.VolumeMounts {
				mounted[m.Name] = true
			}
			for _, v := range pod.Volumes {
				if !mounted[v.Name] {
					continue
				}
				if v.Secret != nil {
					requireObject(t, objs, cid, "Secret/"+v.Secret.SecretName)
				}
				if v.ConfigMap != nil {
					requireObject(t, objs, cid, "ConfigMap/"+v.ConfigMap.Name)
				}
			}
		}
		if pod.TerminationGracePeriodSeconds != nil && strings.HasPrefix(w.id, "Deployment/") {
			for _, c := range pod.Containers {
				for _, a := range c.Args {
					if d, ok := strings.CutPrefix(a, "--drain-timeout="); ok && d != "10s" {
						t.Errorf("%s: --drain-timeout %s: keep it under terminationGracePeriodSeconds %d", w.id, d, *pod.TerminationGracePeriodSeconds)
					}
				}
			}
		}
	}
	for id, o := range objs {
		switch v := o.value.(type) {
		case *policyv1.PodDisruptionBudget:
			if n := matches(v.Spec.Selector); n != 1 {
				t.Errorf("%s: selects %d workloads, want 1", id, n)
			}
		case *corev1.Service:
			if n := matches(&metav1.LabelSelector{MatchLabels: v.Spec.Selector}); n != 1 {
				t.Errorf("%s: selector %v selects %d workloads, want 1", id, v.Spec.Selector, n)
			}
		}
	}
}

func requireObject(t *testing.T, objs map[string]object, from, id string) {
	t.Helper()
	if _, ok := objs[id]; ok {
		return
	}
	if _, ok := external[id]; !ok {
		t.Errorf("%s: refers to %s, which the base does not create and which is not listed as external", from, id)
	}
}

func namespaceOf(o object) string {
	b, _ := json.Marshal(o.value)
	var m struct {
		Metadata struct {
			Namespace string `json:"namespace"`
		} `json:"metadata"`
	}
	_ = json.Unmarshal(b, &m)
	return m.Metadata.Namespace
}

// TestDecodeStrictRejects shows the checks can fail: a misspelt field, an
// unknown kind and a FoundationDB setting outside the operator's enum.
func TestDecodeStrictRejects(t *testing.T) {
	for _, c := range []struct{ name, doc, want string }{
		{"unknown field", "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec: {replica: 3}\n", "unknown field"},
		{"unknown field in metadata", "apiVersion: v1\nkind: Namespace\nmetadata: {name: x, label: {a: b}}\n", "unknown field"},
		{"unknown kind", "apiVersion: v1\nkind: Pod\nmetadata: {name: x}\n", "not a type this test knows"},
		{"no name", "apiVersion: v1\nkind: Namespace\nmetadata: {}\n", "metadata.name is empty"},
		{"fdb unknown field", "apiVersion: apps.foundationdb.org/v1beta2\nkind: FoundationDBCluster\nmetadata: {name: x}\nspec: {version: 7.3.63, replicas: 3}\n", "unknown field"},
		{"fdb redundancy", "apiVersion: apps.foundationdb.org/v1beta2\nkind: FoundationDBCluster\nmetadata: {name: x}\nspec: {version: 7.3.63, databaseConfiguration: {redundancy_mode: quadruple}}\n", "redundancy_mode"},
		{"fdb version", "apiVersion: apps.foundationdb.org/v1beta2\nkind: FoundationDBCluster\nmetadata: {name: x}\nspec: {version: latest}\n", "version"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := decodeStrict([]byte(c.doc))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("decodeStrict = %v, want an error containing %q", err, c.want)
			}
		})
	}
}
