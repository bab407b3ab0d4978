// Package kubernetes holds the manifests of mirrord's DaemonSet and, here,
// their validation offline: schemas cannot be downloaded where the tests
// run, so each document is decoded strictly into the k8s.io/api type of its
// kind (an unknown or misspelt field fails), and the DaemonSet is checked
// against what mirrord needs of it. Only this test imports k8s.io/api; the
// mirrord binary does not (TestBinaryDependencies).
package kubernetes

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/mirrord/mirrord/internal/apply"
	"github.com/mirrord/mirrord/internal/config"
)

// kustomization is the part of kustomize's Kustomization these manifests
// use; decoding it strictly refuses any other field.
type kustomization struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Namespace  string   `json:"namespace"`
	Resources  []string `json:"resources"`
	Images     []struct {
		Name    string `json:"name"`
		NewName string `json:"newName"`
		NewTag  string `json:"newTag"`
	} `json:"images"`
}

// objects are the manifests, decoded.
type objects struct {
	kust       kustomization
	namespaces []corev1.Namespace
	accounts   []corev1.ServiceAccount
	configMaps []corev1.ConfigMap
	daemonSets []appsv1.DaemonSet
}

// load decodes the kustomization and every resource it lists, strictly.
func load(t *testing.T) objects {
	t.Helper()

	var o objects
	data, err := os.ReadFile("kustomization.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict(data, &o.kust); err != nil {
		t.Fatalf("kustomization.yaml: %v", err)
	}
	if o.kust.APIVersion != "kustomize.config.k8s.io/v1beta1" || o.kust.Kind != "Kustomization" {
		t.Errorf("kustomization.yaml: %s %s, want kustomize.config.k8s.io/v1beta1 Kustomization",
			o.kust.APIVersion, o.kust.Kind)
	}

	files, err := filepath.Glob("*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	files = slices.DeleteFunc(files, func(f string) bool { return f == "kustomization.yaml" })
	if got := slices.Sorted(slices.Values(o.kust.Resources)); !slices.Equal(got, files) {
		t.Errorf("kustomization.yaml resources %v, want every manifest here: %v", got, files)
	}

	for _, f := range o.kust.Resources {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for i, doc := range documents(data) {
			if err := o.add(doc); err != nil {
				t.Errorf("%s, document %d: %v", f, i+1, err)
			}
		}
	}
	return o
}

// documents splits a multi-document YAML file, dropping empty documents.
func documents(data []byte) [][]byte {
	var docs [][]byte
	for _, d := range bytes.Split(data, []byte("\n---")) {
		if len(bytes.TrimSpace(stripComments(d))) > 0 {
			docs = append(docs, d)
		}
	}
	return docs
}

func stripComments(d []byte) []byte {
	var out []byte
	for line := range bytes.Lines(d) {
		if !bytes.HasPrefix(bytes.TrimSpace(line), []byte("#")) {
			out = append(out, line...)
		}
	}
	return out
}

// add decodes one document strictly into the type of its kind.
func (o *objects) add(doc []byte) error {
	var head struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
	}
	if err := yaml.Unmarshal(doc, &head); err != nil {
		return err
	}

	var target any
	switch head.APIVersion + " " + head.Kind {
	case "v1 Namespace":
		o.namespaces = append(o.namespaces, corev1.Namespace{})
		target = &o.namespaces[len(o.namespaces)-1]
	case "v1 ServiceAccount":
		o.accounts = append(o.accounts, corev1.ServiceAccount{})
		target = &o.accounts[len(o.accounts)-1]
	case "v1 ConfigMap":
		o.configMaps = append(o.configMaps, corev1.ConfigMap{})
		target = &o.configMaps[len(o.configMaps)-1]
	case "apps/v1 DaemonSet":
		o.daemonSets = append(o.daemonSets, appsv1.DaemonSet{})
		target = &o.daemonSets[len(o.daemonSets)-1]
	default:
		return fmt.Errorf("kind %q of %q: not one this test knows", head.Kind, head.APIVersion)
	}
	if err := yaml.UnmarshalStrict(doc, target); err != nil {
		return fmt.Errorf("%s: %w", head.Kind, err)
	}
	return nil
}

// TestManifestsDecodeStrictly fails on a field the API types do not have.
func TestManifestsDecodeStrictly(t *testing.T) {
	o := load(t)
	if len(o.namespaces) != 1 || len(o.accounts) != 1 || len(o.configMaps) != 1 ||
		len(o.daemonSets) != 1 {
		t.Fatalf("want one Namespace, ServiceAccount, ConfigMap and DaemonSet; have %d, %d, "+
			"%d, %d", len(o.namespaces), len(o.accounts), len(o.configMaps), len(o.daemonSets))
	}

	// The check itself must catch a misspelt field.
	bad := []byte("apiVersion: apps/v1\nkind: DaemonSet\nspec:\n  template:\n    spec:\n" +
		"      tolerations:\n        - operater: Exists\n")
	if err := (&objects{}).add(bad); err == nil || !strings.Contains(err.Error(), "operater") {
		t.Errorf("a misspelt field decoded without error (%v)", err)
	}
}

// TestNamespaces: one namespace for everything, admitting host mounts.
func TestNamespaces(t *testing.T) {
	o := load(t)
	ns := o.namespaces[0]
	if ns.Name != o.kust.Namespace {
		t.Errorf("Namespace %q, kustomization namespace %q", ns.Name, o.kust.Namespace)
	}
	if got := ns.Labels["pod-security.kubernetes.io/enforce"]; got != "privileged" {
		t.Errorf("namespace enforces pod security %q; hostPath volumes need privileged", got)
	}
	for _, m := range []string{o.accounts[0].Namespace, o.configMaps[0].Namespace,
		o.daemonSets[0].Namespace} {
		if m != ns.Name {
			t.Errorf("an object in namespace %q, want %q", m, ns.Name)
		}
	}
	if a := o.accounts[0]; a.AutomountServiceAccountToken == nil ||
		*a.AutomountServiceAccountToken {
		t.Errorf("ServiceAccount %s mounts its token; mirrord needs none", a.Name)
	}
}

// TestConfigMapSpecParses reads the ConfigMap's mirrord.toml with mirrord's
// own loader.
func TestConfigMapSpecParses(t *testing.T) {
	o := load(t)
	spec, ok := o.configMaps[0].Data["mirrord.toml"]
	if !ok {
		t.Fatalf("ConfigMap %s has no mirrord.toml", o.configMaps[0].Name)
	}
	file := filepath.Join(t.TempDir(), "mirrord.toml")
	if err := os.WriteFile(file, []byte(spec), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, kv := range os.Environ() {
		if name, _, _ := strings.Cut(kv, "="); strings.HasPrefix(name, "MIRRORD_") {
			t.Setenv(name, "")
			os.Unsetenv(name)
		}
	}
	cfg, err := config.Load(config.Options{Root: t.TempDir(), File: file})
	if err != nil {
		t.Fatalf("ConfigMap mirrord.toml: %v", err)
	}
	if len(cfg.Spec.Registries) == 0 {
		t.Errorf("ConfigMap mirrord.toml names no registry")
	}
	if _, ok := o.configMaps[0].Data["revert-on-stop"]; ok {
		t.Errorf("the ConfigMap arms revert-on-stop; it must be off until the operator asks")
	}
}

// mount is a volume mount with the volume it mounts.
type mount struct {
	corev1.VolumeMount
	vol corev1.Volume
}

// pod returns the DaemonSet's container and its mounts by mount path.
func pod(t *testing.T, o objects) (corev1.PodSpec, corev1.Container, map[string]mount) {
	t.Helper()

	ps := o.daemonSets[0].Spec.Template.Spec
	if len(ps.Containers) != 1 || len(ps.InitContainers) != 0 {
		t.Fatalf("want one container, have %d (and %d init)", len(ps.Containers),
			len(ps.InitContainers))
	}
	c := ps.Containers[0]
	mounts := map[string]mount{}
	for _, vm := range c.VolumeMounts {
		i := slices.IndexFunc(ps.Volumes, func(v corev1.Volume) bool { return v.Name == vm.Name })
		if i < 0 {
			t.Errorf("volume mount %s: no volume %q", vm.MountPath, vm.Name)
			continue
		}
		mounts[vm.MountPath] = mount{vm, ps.Volumes[i]}
	}
	for _, v := range ps.Volumes {
		if !slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool {
			return m.Name == v.Name
		}) {
			t.Errorf("volume %s is mounted nowhere", v.Name)
		}
	}
	return ps, c, mounts
}

func env(c corev1.Container, name string) string {
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value
		}
	}
	return ""
}

// hostRoot is the --root of the DaemonSet: every host path is mounted at
// the same path under it.
const hostRoot = "/host"

// TestDaemonSetMounts: each host path is at its own path under /host, so
// that mirrord with --root /host sees the node as it is; what mirrord
// writes is writable, what it only reads is read-only; the bus socket and
// the runtimes' sockets are reachable; the spec is the ConfigMap, mounted
// so that kubelet updates it.
func TestDaemonSetMounts(t *testing.T) {
	o := load(t)
	_, c, mounts := pod(t, o)

	if want := []string{"watch", "--root", hostRoot}; !slices.Equal(c.Args, want) ||
		len(c.Command) != 0 {
		t.Errorf("command %q args %q, want the image's entrypoint with args %q", c.Command,
			c.Args, want)
	}

	for p, m := range mounts {
		hp := m.vol.HostPath
		if hp == nil {
			continue
		}
		if want := path.Join(hostRoot, hp.Path); p != want {
			t.Errorf("host path %s mounted at %s, want %s", hp.Path, p, want)
		}
		if m.SubPath != "" {
			t.Errorf("host path %s mounted with subPath", hp.Path)
		}
	}

	writes := []string{"/etc/containerd", "/etc/docker", "/etc/containers", "/etc/rancher",
		apply.StateDir}
	for _, p := range writes {
		m, ok := mounts[path.Join(hostRoot, p)]
		switch {
		case !ok || m.vol.HostPath == nil:
			t.Errorf("%s: not mounted from the host; mirrord writes there", p)
		case m.ReadOnly:
			t.Errorf("%s: mounted read-only; mirrord writes there", p)
		case m.vol.HostPath.Type == nil || *m.vol.HostPath.Type != corev1.HostPathDirectoryOrCreate:
			t.Errorf("%s: hostPath type %v, want DirectoryOrCreate (not every node has it)",
				p, m.vol.HostPath.Type)
		}
	}
	for p, m := range mounts {
		if m.vol.HostPath != nil && !m.ReadOnly &&
			!slices.Contains(writes, strings.TrimPrefix(p, hostRoot)) {
			t.Errorf("%s: writable, but mirrord only reads there", p)
		}
	}

	// The sockets mirrord dials live in /run; their daemons make them anew
	// on restart, so the directory is mounted, following the host's mounts.
	run, ok := mounts[path.Join(hostRoot, "/run")]
	if !ok || !run.ReadOnly || run.MountPropagation == nil ||
		*run.MountPropagation != corev1.MountPropagationHostToContainer {
		t.Errorf("/run: want a read-only host mount with HostToContainer propagation; "+
			"have %+v", run.VolumeMount)
	}

	file := env(c, "MIRRORD_CONFIG")
	cm, ok := mounts[path.Dir(file)]
	switch {
	case file == "":
		t.Errorf("MIRRORD_CONFIG not set; the spec would be the host's file")
	case !ok || cm.vol.ConfigMap == nil:
		t.Errorf("MIRRORD_CONFIG %s: its directory is not a ConfigMap volume", file)
	case cm.vol.ConfigMap.Name != o.configMaps[0].Name:
		t.Errorf("ConfigMap volume of %q, the ConfigMap is %q", cm.vol.ConfigMap.Name,
			o.configMaps[0].Name)
	case cm.SubPath != "":
		t.Errorf("the ConfigMap is mounted with subPath; kubelet never updates those")
	case len(cm.vol.ConfigMap.Items) != 0:
		t.Errorf("the ConfigMap volume selects items; revert-on-stop must appear when set")
	}
	if f := env(c, "MIRRORD_REVERT_ON_STOP"); path.Dir(f) != path.Dir(file) {
		t.Errorf("MIRRORD_REVERT_ON_STOP %q is not a file of the ConfigMap", f)
	}
	if env(c, "MIRRORD_METADATA") != "none" {
		t.Errorf("MIRRORD_METADATA is not none; the ConfigMap is the spec")
	}
}

// TestDaemonSetPrivileges: root without any capability, nothing else.
func TestDaemonSetPrivileges(t *testing.T) {
	o := load(t)
	ps, c, _ := pod(t, o)

	if ps.HostPID || ps.HostNetwork || ps.HostIPC {
		t.Errorf("hostPID %v, hostNetwork %v, hostIPC %v; mirrord needs none", ps.HostPID,
			ps.HostNetwork, ps.HostIPC)
	}
	if ps.AutomountServiceAccountToken == nil || *ps.AutomountServiceAccountToken {
		t.Errorf("the pod mounts a service account token; mirrord needs none")
	}
	sc := c.SecurityContext
	if sc == nil || sc.Capabilities == nil {
		t.Fatalf("no securityContext with capabilities")
	}
	if !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) ||
		len(sc.Capabilities.Add) != 0 {
		t.Errorf("capabilities drop %v add %v, want drop ALL and add none",
			sc.Capabilities.Drop, sc.Capabilities.Add)
	}
	for name, v := range map[string]*bool{"privileged": sc.Privileged,
		"allowPrivilegeEscalation": sc.AllowPrivilegeEscalation} {
		if v == nil || *v {
			t.Errorf("%s is not false", name)
		}
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Errorf("root filesystem not read-only")
	}
	if sc.RunAsUser == nil || *sc.RunAsUser != 0 {
		t.Errorf("runAsUser %v, want 0: systemd lets only UID 0 (or polkit) manage units",
			sc.RunAsUser)
	}
	if sp := sc.SeccompProfile; sp == nil || sp.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("seccomp profile %v, want RuntimeDefault", sc.SeccompProfile)
	}
}

// TestDaemonSetEveryNode: the pods tolerate every taint.
func TestDaemonSetEveryNode(t *testing.T) {
	o := load(t)
	ps, _, _ := pod(t, o)

	if !slices.ContainsFunc(ps.Tolerations, func(tl corev1.Toleration) bool {
		return tl.Key == "" && tl.Operator == corev1.TolerationOpExists && tl.Effect == ""
	}) {
		t.Errorf("tolerations %+v: none tolerates every taint (operator Exists, no key)",
			ps.Tolerations)
	}
	if len(ps.NodeSelector) != 0 || ps.Affinity != nil {
		t.Errorf("a node selector or affinity keeps the pods off some nodes")
	}
}

// TestDaemonSetHealthAndResources: probes run mirrord health on a writable
// heartbeat; memory is bounded; the grace period covers a revert on stop.
func TestDaemonSetHealthAndResources(t *testing.T) {
	o := load(t)
	ps, c, mounts := pod(t, o)

	for name, p := range map[string]*corev1.Probe{"liveness": c.LivenessProbe,
		"startup": c.StartupProbe} {
		if p == nil || p.Exec == nil ||
			!slices.Equal(p.Exec.Command, []string{"/mirrord", "health"}) {
			t.Errorf("%s probe %+v, want exec /mirrord health", name, p)
		}
	}
	beat := env(c, "MIRRORD_HEARTBEAT")
	if m, ok := mounts[path.Dir(beat)]; !ok || m.vol.EmptyDir == nil || m.ReadOnly {
		t.Errorf("MIRRORD_HEARTBEAT %q is not on a writable emptyDir", beat)
	}

	req, lim := c.Resources.Requests.Memory(), c.Resources.Limits.Memory()
	if req.IsZero() || lim.IsZero() || req.Cmp(*lim) > 0 {
		t.Errorf("memory request %s, limit %s: want both, request <= limit", req, lim)
	}
	// bench/watch.sh measures the watch's peak RSS near 11 MiB.
	if lim.Value() < 32<<20 {
		t.Errorf("memory limit %s leaves too little above the watch's ~11 MiB", lim)
	}
	if c.Resources.Requests.Cpu().IsZero() {
		t.Errorf("no CPU request")
	}

	// cmd/mirrord bounds a revert on stop at 60 s.
	if g := ps.TerminationGracePeriodSeconds; g == nil || *g <= 60 {
		t.Errorf("terminationGracePeriodSeconds %v, want more than the 60 s of a revert", g)
	}
}

// TestImage: the container's image is the one kustomize sets, and the
// default names no registry of someone else.
func TestImage(t *testing.T) {
	o := load(t)
	_, c, _ := pod(t, o)

	i := slices.IndexFunc(o.kust.Images, func(im struct {
		Name    string `json:"name"`
		NewName string `json:"newName"`
		NewTag  string `json:"newTag"`
	}) bool {
		return im.Name == c.Image
	})
	if i < 0 {
		t.Fatalf("image %q: no images entry of the kustomization sets it", c.Image)
	}
	host, _, _ := strings.Cut(o.kust.Images[i].NewName, "/")
	if !strings.HasSuffix(host, ".example.net") {
		t.Errorf("default image %s: want a placeholder registry (example.net) the operator "+
			"replaces, never a real one", o.kust.Images[i].NewName)
	}
}

// TestBinaryDependencies keeps k8s.io, sigs.k8s.io and go-containerregistry
// out of the mirrord binary: only tests and hack/imagebuild use them.
func TestBinaryDependencies(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "../../cmd/mirrord").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	for dep := range strings.Lines(string(out)) {
		dep = strings.TrimSpace(dep)
		for _, banned := range []string{"k8s.io/", "sigs.k8s.io/",
			"github.com/google/go-containerregistry"} {
			if strings.HasPrefix(dep, banned) {
				t.Errorf("mirrord depends on %s", dep)
			}
		}
	}
}
