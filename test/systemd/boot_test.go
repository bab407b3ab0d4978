package systemdtest

import (
	"encoding/json"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// Paths mirrord manages in the machine, and the config_path it sets.
const (
	configToml   = "/etc/containerd/config.toml"
	certsDir     = "/etc/containerd/certs.d"
	dockerHosts  = certsDir + "/docker.io/hosts.toml"
	daemonJSON   = "/etc/docker/daemon.json"
	defaultsFile = "/etc/default/mirrord"
)

// The units under test and the runtimes they act on.
const (
	applyUnit  = "mirrord.service"
	watchUnit  = "mirrord-watch.service"
	containerd = "containerd.service"
	docker     = "docker.service"
)

// A mirror that is only configuration: nothing listens there, and the
// machines have no network beyond loopback anyway.
const (
	mirrorA = "http://127.0.0.1:5000"
	mirrorB = "http://127.0.0.1:5001"
)

// configPathLine matches the config_path line mirrord writes.
var configPathLine = regexp.MustCompile(`(?m)^\s*config_path\s*=\s*"` +
	regexp.QuoteMeta(certsDir) + `"\s*$`)

func TestBootAppliesBeforeRuntimes(t *testing.T) {
	t.Parallel()
	m := bootMachine(t, machineOptions{
		mirrors: "docker.io=" + mirrorA,
		enable:  []string{applyUnit},
	})
	before := m.identities(containerd, docker)
	t.Logf("systemctl status %s:\n%s", applyUnit, m.output("systemctl", "status", applyUnit))

	// mirrord ran once and succeeded.
	got := m.props(applyUnit, "ActiveState", "SubState", "Result")
	want := map[string]string{"ActiveState": "active", "SubState": "exited", "Result": "success"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("%s state (-want +got):\n%s", applyUnit, diff)
	}

	// The files are in place, and containerd reads them.
	m.assertContainerdMirror(mirrorA)
	if dump := m.run("containerd", "config", "dump"); !configPathLine.MatchString(dump) {
		t.Errorf("containerd config dump: no config_path = %q:\n%s", certsDir, dump)
	}
	m.assertCRI()
	m.assertDaemonJSON(mirrorA)

	// Both runtimes started after mirrord had exited.
	applied := m.uintProp(applyUnit, "ExecMainExitTimestampMonotonic")
	for _, unit := range []string{containerd, docker} {
		started := m.uintProp(unit, "ExecMainStartTimestampMonotonic")
		if started <= applied {
			t.Errorf("%s started at %d µs, not after %s exited at %d µs", unit, started,
				applyUnit, applied)
		}
	}

	// dockerd took the mirror at start-up.
	m.assertDockerMirrors(mirrorA)

	// Neither runtime was restarted: one start each, the same invocation
	// and main PID as when the boot finished.
	for _, unit := range []string{containerd, docker} {
		if n := m.prop(unit, "NRestarts"); n != "0" {
			t.Errorf("%s NRestarts = %s, want 0", unit, n)
		}
		if n := m.starts(unit); n != 1 {
			t.Errorf("%s started %d times, want 1:\n%s", unit, n, m.journal(unit))
		}
	}
	if diff := cmp.Diff(before, m.identities(containerd, docker)); diff != "" {
		t.Errorf("runtime invocations changed after boot (-before +after):\n%s", diff)
	}
}

// identity says which run of a unit is current.
type identity struct {
	InvocationID string
	MainPID      string
}

// identities returns the current run of each unit.
func (m *machine) identities(units ...string) map[string]identity {
	m.t.Helper()

	ids := map[string]identity{}
	for _, u := range units {
		p := m.props(u, "InvocationID", "MainPID")
		ids[u] = identity{InvocationID: p["InvocationID"], MainPID: p["MainPID"]}
	}
	return ids
}

// starts counts the times systemd started a unit in this boot, from its
// journal: NRestarts counts only the restarts systemd did on its own.
func (m *machine) starts(unit string) int {
	m.t.Helper()

	return m.unitEvents(unit, "Started ")
}

// reloads counts the times systemd reloaded a unit in this boot.
func (m *machine) reloads(unit string) int {
	m.t.Helper()

	return m.unitEvents(unit, "Reloaded ")
}

// unitEvents counts the messages of systemd about a unit in this boot that
// start with prefix, such as "Started " or "Reloaded ".
func (m *machine) unitEvents(unit, prefix string) int {
	m.t.Helper()

	out := m.run("journalctl", "-b", "-q", "--no-pager", "-o", "cat", "_PID=1", "UNIT="+unit)
	n := 0
	for line := range strings.Lines(out) {
		if strings.HasPrefix(line, prefix+unit) {
			n++
		}
	}
	return n
}

// assertContainerdMirror checks that docker.io's hosts.toml lists mirror and
// that config.toml points containerd at the certs.d directory.
func (m *machine) assertContainerdMirror(mirror string) {
	m.t.Helper()

	hosts := m.readFile(dockerHosts)
	if !strings.Contains(hosts, `[host."`+mirror+`"]`) {
		m.t.Errorf("%s has no [host.%q]:\n%s", dockerHosts, mirror, hosts)
	}
	if conf := m.readFile(configToml); !configPathLine.MatchString(conf) {
		m.t.Errorf("%s has no config_path = %q:\n%s", configToml, certsDir, conf)
	}
}

// assertCRI checks that containerd's CRI plugin loaded: with a config it
// rejects, containerd still runs and answers, and only the plugin's status
// shows the failure (FACTS.md §2.3).
func (m *machine) assertCRI() {
	m.t.Helper()

	out := m.run("ctr", "plugins", "ls")
	for line := range strings.Lines(out) {
		f := strings.Fields(line)
		if len(f) >= 3 && f[0] == "io.containerd.grpc.v1" && f[1] == "cri" {
			if f[len(f)-1] != "ok" {
				m.t.Errorf("containerd's CRI plugin: status %s, want ok:\n%s", f[len(f)-1], out)
			}
			return
		}
	}
	m.t.Errorf("ctr plugins ls: no io.containerd.grpc.v1 cri plugin:\n%s", out)
}

// assertDaemonJSON checks that daemon.json lists exactly mirrors under
// registry-mirrors.
func (m *machine) assertDaemonJSON(mirrors ...string) {
	m.t.Helper()

	var d struct {
		Mirrors []string `json:"registry-mirrors"`
	}
	raw := m.readFile(daemonJSON)
	if err := json.Unmarshal([]byte(raw), &d); err != nil {
		m.t.Errorf("%s: %v:\n%s", daemonJSON, err, raw)
		return
	}
	if diff := cmp.Diff(mirrors, trimSlashes(d.Mirrors)); diff != "" {
		m.t.Errorf("%s registry-mirrors (-want +got):\n%s", daemonJSON, diff)
	}
}

// assertDockerMirrors checks that the running dockerd reports exactly
// mirrors, through its API.
func (m *machine) assertDockerMirrors(mirrors ...string) {
	m.t.Helper()

	if diff := cmp.Diff(mirrors, m.dockerMirrors()); diff != "" {
		m.t.Errorf("docker info: registry mirrors (-want +got):\n%s", diff)
	}
}

// dockerMirrors returns the registry mirrors the running dockerd reports.
func (m *machine) dockerMirrors() []string {
	m.t.Helper()

	out := m.run("docker", "info", "--format", "{{json .RegistryConfig.Mirrors}}")
	var got []string
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		m.t.Fatalf("docker info: mirrors %q: %v", out, err)
	}
	return trimSlashes(got)
}

// trimSlashes drops the trailing slash dockerd adds to mirror URLs.
func trimSlashes(urls []string) []string {
	out := slices.Clone(urls)
	for i, u := range out {
		out[i] = strings.TrimSuffix(u, "/")
	}
	return out
}
