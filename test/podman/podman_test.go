package podmantest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mirrord/mirrord/internal/registries"
)

// enabled is true when the environment asks for the end-to-end tests.
var enabled = os.Getenv("MIRRORD_E2E") == "1"

// The images the test pulls, and the repositories the mirrors serve them as.
const (
	hubRepo  = "library/mirrord-podman-hello"
	quayRepo = "mirrord-e2e/hello"
	tag      = "v1"
	hubImage = "docker.io/" + hubRepo
)

// requireE2E skips the test unless MIRRORD_E2E=1, fails it when not root,
// and fails it when a tool is missing.
func requireE2E(t *testing.T) {
	t.Helper()

	if !enabled {
		t.Skip("end-to-end test: set MIRRORD_E2E=1 and run as root")
	}
	if os.Geteuid() != 0 {
		t.Fatal("MIRRORD_E2E=1 needs root: the test makes namespaces and runs podman rootful")
	}
	for _, tool := range []string{"podman", "skopeo", "docker-registry", "ip", "nsenter",
		"unshare", "mount"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("tool %s not found: %v; run scripts/install-test-deps.sh as root", tool, err)
		}
	}
}

// podmanEnv is the private world one podman command runs in: its own
// /etc/containers, storage, run root and temporary directory.
type podmanEnv struct {
	ns      *netns
	etc     string // bound over /etc/containers
	root    string // --root
	runroot string // --runroot
	tmp     string // --tmpdir and TMPDIR
}

// newPodmanEnv makes the directories of a podmanEnv in ns, with an empty
// main registries.conf, an accept-anything policy.json and dropIn as
// registries.conf.d/90-mirrord.conf.
func newPodmanEnv(t *testing.T, ns *netns, dropIn []byte) *podmanEnv {
	t.Helper()

	// Not t.TempDir: podman refuses a run root longer than 50 characters.
	dir, err := os.MkdirTemp("", "mirrord-podman-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("remove %s: %v", dir, err)
		}
	})
	e := &podmanEnv{
		ns:      ns,
		etc:     filepath.Join(dir, "etc-containers"),
		root:    filepath.Join(dir, "storage"),
		runroot: filepath.Join(dir, "run"),
		tmp:     filepath.Join(dir, "tmp"),
	}
	files := map[string]string{
		"registries.conf": "# Empty: the test's mirrors come from mirrord's drop-in only.\n",
		"policy.json":     `{"default": [{"type": "insecureAcceptAnything"}]}` + "\n",
		filepath.Join("registries.conf.d", filepath.Base(registries.DropIn)): string(dropIn),
	}
	for name, data := range files {
		if err := writeFile(filepath.Join(e.etc, name), []byte(data)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(e.tmp, 0o755); err != nil {
		t.Fatal(err)
	}
	return e
}

// podman runs podman with args in the namespace and in a private mount
// namespace where e.etc is bound over /etc/containers, and returns its
// output.
func (e *podmanEnv) podman(t *testing.T, args ...string) string {
	t.Helper()

	script := `mount --bind "$1" /etc/containers && shift && exec "$@"`
	argv := []string{"unshare", "--mount", "--propagation", "private", "--",
		"sh", "-c", script, "sh", e.etc,
		"podman", "--root", e.root, "--runroot", e.runroot, "--tmpdir", e.tmp,
		"--storage-driver", "vfs", "--cgroup-manager", "cgroupfs", "--events-backend", "none"}
	return e.ns.run(t, []string{"TMPDIR=" + e.tmp}, append(argv, args...)...)
}

// TestPodmanPullsThroughMirrors pulls by tag from Docker Hub and quay.io and
// by digest from Docker Hub, each through the mirrors that mirrord's drop-in
// names and nothing else, and reads the mirrors' access logs.
func TestPodmanPullsThroughMirrors(t *testing.T) {
	requireE2E(t)
	out, _ := exec.Command("podman", "--version").CombinedOutput()
	t.Logf("%s", strings.TrimSpace(string(out)))
	_, varLibErr := os.Stat("/var/lib/containers")

	layout := filepath.Join(t.TempDir(), "image")
	if err := writeImageLayout(layout, tag); err != nil {
		t.Fatalf("write image layout: %v", err)
	}

	ns := newNetns(t)
	hub := startRegistry(t, ns, 5000)
	quay := startRegistry(t, ns, 5001)
	digestOnly := startRegistry(t, ns, 5002)
	digest := hub.push(t, layout, tag, hubRepo)
	if d := digestOnly.push(t, layout, tag, hubRepo); d != digest {
		t.Fatalf("the two hub mirrors hold different digests: %s and %s", digest, d)
	}
	quay.push(t, layout, tag, quayRepo)
	seeded := map[*registry]int{}
	for _, r := range []*registry{hub, quay, digestOnly} {
		seeded[r] = len(r.requests(t))
	}
	since := func(r *registry) []request { return r.requests(t)[seeded[r]:] }

	// mirrord writes the drop-in, as apply does on a node with podman; the
	// capabilities of the first Hub mirror need the file form of the spec.
	spec := fmt.Sprintf(`runtimes = ["podman"]

[registries."docker.io"]
mirrors = [{ url = "http://%s", capabilities = ["pull"] }, "http://%s"]

[registries."quay.io"]
mirrors = ["http://%s"]
`, digestOnly.addr, hub.addr, quay.addr)
	dropIn, applyOut := mirrordDropIn(t, spec)
	if strings.Contains(applyOut, "warning") {
		t.Fatalf("mirrord apply warned:\n%s", applyOut)
	}
	t.Logf("drop-in:\n%s", dropIn)

	t.Run("hub_by_tag", func(t *testing.T) {
		e := newPodmanEnv(t, ns, dropIn)
		e.podman(t, "pull", "--quiet", hubImage+":"+tag)

		got := manifestRequests(since(hub), hubRepo, tag)
		requireServed(t, hub, got)
		if n := len(manifestRequests(since(digestOnly), hubRepo, tag)); n > 0 {
			t.Errorf("the digest-only mirror %s was asked for the tag %d times", digestOnly.addr, n)
		}
	})

	t.Run("quay_by_tag", func(t *testing.T) {
		e := newPodmanEnv(t, ns, dropIn)
		e.podman(t, "pull", "--quiet", "quay.io/"+quayRepo+":"+tag)

		requireServed(t, quay, manifestRequests(since(quay), quayRepo, tag))
	})

	t.Run("hub_by_digest", func(t *testing.T) {
		e := newPodmanEnv(t, ns, dropIn)
		e.podman(t, "pull", "--quiet", hubImage+"@"+digest)

		requireServed(t, digestOnly, manifestRequests(since(digestOnly), hubRepo, digest))
	})

	if _, err := os.Stat("/var/lib/containers"); varLibErr != nil && err == nil {
		t.Errorf("podman created the host's /var/lib/containers")
	}
	if _, err := os.Stat(registries.DropIn); err == nil {
		t.Errorf("the host has %s; the test's drop-in must stay in its mount namespace",
			registries.DropIn)
	}
}

// requireServed fails the test unless got holds a successful manifest
// request from containers/image (podman's user agent), and logs them.
func requireServed(t *testing.T, r *registry, got []request) {
	t.Helper()

	ok := false
	for _, q := range got {
		t.Logf("mirror %s served %s %s: %d %q", r.addr, q.Method, q.Path, q.Status, q.Agent)
		if q.Status == 200 && strings.HasPrefix(q.Agent, "containers/") {
			ok = true
		}
	}
	if !ok {
		var b strings.Builder
		for _, q := range r.requests(t) {
			b.WriteString("\n  " + q.Method + " " + q.Path + " " + q.Agent)
		}
		t.Fatalf("mirror %s served no manifest to podman; its requests:%s", r.addr, b.String())
	}
}

// mirrordDropIn builds mirrord, runs "mirrord apply --no-reload" on an
// empty node whose config file is spec, and returns the drop-in it wrote and
// what it printed.
func mirrordDropIn(t *testing.T, spec string) ([]byte, string) {
	t.Helper()

	dir := t.TempDir()
	bin := filepath.Join(dir, "mirrord")
	build := exec.Command("go", "build", "-o", bin, "../../cmd/mirrord")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build mirrord: %v\n%s", err, out)
	}

	root := filepath.Join(dir, "node")
	if err := writeFile(filepath.Join(root, "etc/mirrord/mirrord.toml"), []byte(spec)); err != nil {
		t.Fatal(err)
	}
	apply := exec.Command(bin, "apply", "--no-reload", "--root", root)
	apply.Env = []string{"PATH=" + os.Getenv("PATH"), "MIRRORD_METADATA=none"}
	out, err := apply.CombinedOutput()
	if err != nil {
		t.Fatalf("mirrord apply: %v\n%s", err, out)
	}
	t.Logf("mirrord apply:\n%s", out)

	dropIn, err := os.ReadFile(filepath.Join(root, registries.DropIn))
	if err != nil {
		t.Fatalf("mirrord apply wrote no drop-in: %v", err)
	}
	return dropIn, string(out)
}
