package deploy_test

import (
	"fmt"
	"regexp"
	"slices"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// fdbCluster mirrors the fields of the FoundationDB operator's
// apps.foundationdb.org/v1beta2 FoundationDBCluster that deploy/ uses, with
// the operator's JSON names and enums. The operator's Go module is not on
// the module proxy, so its types cannot be imported; strict decoding into
// this mirror still fails on a misspelt or misplaced field, and the pod and
// volume claim templates inside decode into the real Kubernetes types. A
// field the manifest starts using must be added here from the operator's
// API reference (docs/cluster_spec.md of fdb-kubernetes-operator).
type fdbCluster struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              fdbClusterSpec `json:"spec"`
}

type fdbClusterSpec struct {
	Version                       string                        `json:"version"`
	ImageType                     string                        `json:"imageType,omitempty"`
	DatabaseConfiguration         fdbDatabaseConfiguration      `json:"databaseConfiguration,omitempty"`
	Processes                     map[string]fdbProcessSettings `json:"processes,omitempty"`
	ProcessCounts                 map[string]int                `json:"processCounts,omitempty"`
	FaultDomain                   fdbFaultDomain                `json:"faultDomain,omitempty"`
	AutomationOptions             fdbAutomationOptions          `json:"automationOptions,omitempty"`
	Routing                       fdbRouting                    `json:"routing,omitempty"`
	MinimumUptimeSecondsForBounce int                           `json:"minimumUptimeSecondsForBounce,omitempty"`
	StorageServersPerPod          int                           `json:"storageServersPerPod,omitempty"`
}

type fdbDatabaseConfiguration struct {
	RedundancyMode string `json:"redundancy_mode,omitempty"`
	StorageEngine  string `json:"storage_engine,omitempty"`
	UsableRegions  int    `json:"usable_regions,omitempty"`
	// RoleCounts, inlined by the operator.
	Storage       int `json:"storage,omitempty"`
	Logs          int `json:"logs,omitempty"`
	Proxies       int `json:"proxies,omitempty"`
	CommitProxies int `json:"commit_proxies,omitempty"`
	GrvProxies    int `json:"grv_proxies,omitempty"`
	Resolvers     int `json:"resolvers,omitempty"`
}

type fdbProcessSettings struct {
	PodTemplate         *corev1.PodTemplateSpec       `json:"podTemplate,omitempty"`
	VolumeClaimTemplate *corev1.PersistentVolumeClaim `json:"volumeClaimTemplate,omitempty"`
	CustomParameters    []string                      `json:"customParameters,omitempty"`
}

type fdbFaultDomain struct {
	Key       string `json:"key,omitempty"`
	Value     string `json:"value,omitempty"`
	ValueFrom string `json:"valueFrom,omitempty"`
}

type fdbAutomationOptions struct {
	Replacements struct {
		Enabled *bool `json:"enabled,omitempty"`
	} `json:"replacements,omitempty"`
}

type fdbRouting struct {
	HeadlessService     *bool `json:"headlessService,omitempty"`
	UseDNSInClusterFile *bool `json:"useDNSInClusterFile,omitempty"`
}

var fdbVersion = regexp.MustCompile(`^(\d+)\.(\d+)\.(\d+)$`)

// validate applies the operator's enums and patterns to the fields above.
func (c *fdbCluster) validate() error {
	s := c.Spec
	if !fdbVersion.MatchString(s.Version) {
		return fmt.Errorf("spec.version %q: want MAJOR.MINOR.PATCH", s.Version)
	}
	if r := s.DatabaseConfiguration.RedundancyMode; r != "" && !slices.Contains([]string{"single", "double", "triple", "three_data_hall"}, r) {
		return fmt.Errorf("spec.databaseConfiguration.redundancy_mode %q: want single, double, triple or three_data_hall", r)
	}
	engines := []string{"ssd", "ssd-1", "ssd-2", "memory", "memory-1", "memory-2", "ssd-redwood-1-experimental", "ssd-redwood-1",
		"ssd-rocksdb-experimental", "ssd-rocksdb-v1", "ssd-sharded-rocksdb", "memory-radixtree-beta", "custom"}
	if e := s.DatabaseConfiguration.StorageEngine; e != "" && !slices.Contains(engines, e) {
		return fmt.Errorf("spec.databaseConfiguration.storage_engine %q: not one of the operator's engines", e)
	}
	if t := s.ImageType; t != "" && t != "split" && t != "unified" {
		return fmt.Errorf("spec.imageType %q: want split or unified", t)
	}
	classes := []string{"storage", "log", "transaction", "stateless", "cluster_controller", "commit_proxy", "grv_proxy",
		"proxy", "resolution", "resolver", "master", "ratekeeper", "data_distributor", "coordinator", "test"}
	for class := range s.ProcessCounts {
		if !slices.Contains(classes, class) {
			return fmt.Errorf("spec.processCounts.%s: not a process class", class)
		}
	}
	for class := range s.Processes {
		if class != "general" && !slices.Contains(classes, class) {
			return fmt.Errorf("spec.processes.%s: not general or a process class", class)
		}
	}
	return nil
}
