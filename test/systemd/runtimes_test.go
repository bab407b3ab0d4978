package systemdtest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The units of the runtimes beyond containerd and dockerd, and the files
// mirrord writes for them.
const (
	crio          = "crio.service"
	k3s           = "k3s.service"
	crioDropIn    = "/etc/containers/registries.conf.d/90-mirrord.conf"
	k3sRegistries = "/etc/rancher/k3s/registries.yaml"
)

// crioVersion is the CRI-O release scripts/install-test-deps.sh builds.
const crioVersion = "v1.34.0"

// crioConfig runs CRI-O with what the machine has: vfs storage, cgroupfs,
// runc and Debian's conmon. pinns, a small C helper of CRI-O's that the
// module proxy cannot build, is needed only to create pods, which the test
// never does; its validation at start is satisfied by /bin/true.
const crioConfig = `[crio]
storage_driver = "vfs"

[crio.runtime]
cgroup_manager = "cgroupfs"
conmon_cgroup = "pod"
default_runtime = "runc"
pinns_path = "/bin/true"

[crio.runtime.runtimes.runc]
runtime_path = "/usr/sbin/runc"
`

// crioUnit is CRI-O's unit as its packages ship it, cut to what matters:
// it tells systemd when it is ready and reloads its registries on SIGHUP.
const crioUnit = `[Unit]
Description=CRI-O (mirrord test)
After=network-online.target

[Service]
Type=notify
ExecStart=/usr/local/bin/crio
ExecReload=/bin/kill -s HUP $MAINPID
Restart=on-failure
`

// k3sUnit stands in for k3s, which cannot be installed here: it is not in
// Debian and the module proxy does not serve it. Its process is a second
// containerd on the socket where k3s runs its embedded one, so mirrord's
// proof after the restart (the CRI answers there) is real; what it shows of
// k3s itself is only that mirrord restarts k3s.service through D-Bus when,
// and only when, registries.yaml changed.
const k3sUnit = `[Unit]
Description=k3s stand-in: a containerd on k3s's socket (mirrord test)

[Service]
ExecStart=/usr/bin/containerd --config /etc/k3s-standin/config.toml
KillMode=process
`

// k3sContainerd is the stand-in's containerd configuration: its own
// directories and socket, beside the machine's containerd.
const k3sContainerd = `version = 2
root = "/var/lib/k3s-standin"
state = "/run/k3s/containerd"
[grpc]
  address = "/run/k3s/containerd/containerd.sock"
`

// TestOtherRuntimesActions runs mirrord apply on a machine where CRI-O and
// a k3s stand-in run next to containerd and dockerd: each runtime gets the
// action its own files need, through D-Bus, and mirrord proves each took
// it. CRI-O is the real daemon: its log shows the registries it loaded.
func TestOtherRuntimesActions(t *testing.T) {
	t.Parallel()
	m := bootMachine(t, machineOptions{})
	m.installCRIOAndK3s(t)
	units := []string{containerd, docker, crio, k3s}
	before := m.unitStates(units...)

	t.Run("first_apply", func(t *testing.T) {
		m := m.in(t)
		out := m.apply("docker.io=" + mirrorA + ";quay.io=" + mirrorB)
		t.Logf("mirrord apply:\n%s", out)

		before.wantRestarted(m, containerd)
		before.wantReloaded(m, docker)
		before.wantReloaded(m, crio)
		before.wantRestarted(m, k3s)

		dropIn := m.readFile(crioDropIn)
		for _, want := range []string{`location = "127.0.0.1:5000"`,
			`location = "127.0.0.1:5001"`, `prefix = "quay.io"`} {
			if !strings.Contains(dropIn, want) {
				t.Errorf("%s has no %s:\n%s", crioDropIn, want, dropIn)
			}
		}
		m.eventually(settleTimeout, "CRI-O to log the registries it loaded",
			func() (bool, string) {
				j := m.journal(crio)
				return strings.Contains(j, "Applied new registry configuration") &&
					strings.Contains(j, "127.0.0.1:5001"), j
			})
		if y := m.readFile(k3sRegistries); !strings.Contains(y, mirrorB) {
			t.Errorf("%s has no %s:\n%s", k3sRegistries, mirrorB, y)
		}
	})

	t.Run("second_apply_is_a_noop", func(t *testing.T) {
		m := m.in(t)
		now := m.unitStates(units...)
		m.apply("docker.io=" + mirrorA + ";quay.io=" + mirrorB)
		for _, u := range units {
			now.wantUntouched(m, u)
		}
	})

	t.Run("wildcard_only_reaches_k3s_and_containerd_files", func(t *testing.T) {
		// registries.conf cannot say "every registry": CRI-O's drop-in stays
		// as it was and CRI-O is left alone; k3s reads "*" and is restarted;
		// containerd reads _default/hosts.toml on every pull.
		m := m.in(t)
		now := m.unitStates(units...)
		dropIn := m.readFile(crioDropIn)
		out := m.apply("docker.io=" + mirrorA + ";quay.io=" + mirrorB + ";*=" + mirrorA)
		t.Logf("mirrord apply:\n%s", out)

		now.wantUntouched(m, containerd)
		now.wantUntouched(m, docker)
		now.wantUntouched(m, crio)
		now.wantRestarted(m, k3s)
		if got := m.readFile(crioDropIn); got != dropIn {
			t.Errorf("%s changed for the wildcard registry:\n%s", crioDropIn, got)
		}
		if !strings.Contains(out, "registry *: cannot be expressed") {
			t.Errorf("apply did not say that * cannot go to CRI-O and podman:\n%s", out)
		}
	})

	t.Logf("mirrord status:\n%s", m.run("env", "MIRRORD_MIRRORS=docker.io="+mirrorA+
		";quay.io="+mirrorB+";*="+mirrorA, "mirrord", "status"))
}

// installCRIOAndK3s puts CRI-O (the build of scripts/install-test-deps.sh)
// and the k3s stand-in into the running machine and starts both.
func (m *machine) installCRIOAndK3s(t *testing.T) {
	t.Helper()

	bin := filepath.Join(toolsDir(), "crio-"+crioVersion, "bin", "crio")
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatalf("CRI-O: %v; run scripts/install-test-deps.sh as root", err)
	}
	files := []struct {
		path string
		data string
		mode os.FileMode
	}{
		{"/usr/local/bin/crio", string(data), 0o755},
		{"/etc/crio/crio.conf", crioConfig, 0o644},
		{"/etc/containers/registries.conf", "unqualified-search-registries = []\n", 0o644},
		{"/etc/containers/policy.json",
			`{"default": [{"type": "insecureAcceptAnything"}]}` + "\n", 0o644},
		{"/etc/systemd/system/" + crio, crioUnit, 0o644},
		{"/etc/systemd/system/" + k3s, k3sUnit, 0o644},
		{"/etc/k3s-standin/config.toml", k3sContainerd, 0o644},
	}
	for _, f := range files {
		p := m.hostPath(f.path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(f.data), f.mode); err != nil {
			t.Fatal(err)
		}
	}

	m.run("systemctl", "daemon-reload")
	m.run("systemctl", "start", crio, k3s)
}

// apply runs mirrord apply in the machine from a shell, as an operator
// would: outside any unit, so it waits for each job and proves each
// runtime took its files. It returns what apply printed and fails the test
// if apply fails.
func (m *machine) apply(mirrors string) string {
	m.t.Helper()

	return m.run("env", "MIRRORD_MIRRORS="+mirrors, "mirrord", "apply")
}

// unitStates returns the state of each unit, which must be active.
func (m *machine) unitStates(units ...string) runtimes {
	m.t.Helper()

	r := runtimes{}
	for _, unit := range units {
		p := m.props(unit, "MainPID", "ActiveState")
		if p["ActiveState"] != "active" {
			m.t.Fatalf("%s is %s, want active:\n%s", unit, p["ActiveState"], m.journal(unit))
		}
		r[unit] = runState{MainPID: p["MainPID"], Starts: m.starts(unit),
			Reloads: m.reloads(unit)}
	}
	return r
}

// toolsDir is where scripts/install-test-deps.sh puts the tools it builds.
func toolsDir() string {
	if d := os.Getenv("MIRRORD_TOOLS_DIR"); d != "" {
		return d
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return filepath.Join(".cache", "mirrord-tools")
	}
	return filepath.Join(home, ".cache", "mirrord-tools")
}
