package systemdtest

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"
)

// What the drift test allows mirrord-watch: to put a file back within
// repairBound, and at most restartBudget restarts of a runtime in its
// window (mirrord's default: 3 in 10 minutes, longer than this test). A
// writer flips config_path for flipFor; once it stops, the watch has
// fightTimeout to end its backoff and put the file back.
const (
	repairBound   = time.Second
	restartBudget = 3
	flipFor       = 10 * time.Second
	fightTimeout  = 30 * time.Second
	// settle is how long the test gives a repair's action (the watch
	// debounces events by 20 ms) before counting restarts.
	settle = time.Second
)

func TestWatchRepairsDrift(t *testing.T) {
	t.Parallel()
	m := bootMachine(t, machineOptions{
		mirrors: "docker.io=" + mirrorA,
		enable:  []string{watchUnit},
	})
	got := m.props(watchUnit, "ActiveState", "SubState", "StatusText")
	if got["ActiveState"] != "active" || got["SubState"] != "running" {
		t.Fatalf("%s is %s (%s), want active (running):\n%s", watchUnit, got["ActiveState"],
			got["SubState"], m.journal(watchUnit))
	}
	if !strings.Contains(got["StatusText"], "in sync") {
		t.Errorf("%s status %q, want it to say the node is in sync", watchUnit,
			got["StatusText"])
	}
	m.logWatchStatus("after boot")

	m.assertContainerdMirror(mirrorA)
	hosts, conf := m.readFile(dockerHosts), m.readFile(configToml)
	runtimes := m.runtimeState()

	t.Run("hosts_toml", func(t *testing.T) {
		m := m.in(t)
		m.writeFile(dockerHosts, "server = \"https://registry-1.docker.io\"\n\n"+
			"[host.\"http://127.0.0.1:6000\"]\n  capabilities = [\"pull\", \"resolve\"]\n")
		m.waitRepaired(dockerHosts, hosts)

		time.Sleep(settle)
		m.waitIdle()
		runtimes.wantUntouched(m, containerd)
		runtimes = m.runtimeState()
	})

	t.Run("config_path", func(t *testing.T) {
		m := m.in(t)
		m.writeFile(configToml, retargetConfigPath(conf, "/etc/containerd/elsewhere"))
		m.waitRepaired(configToml, conf)

		time.Sleep(settle)
		m.waitIdle()
		if n := m.starts(containerd) - runtimes[containerd].Starts; n > 1 {
			t.Errorf("containerd started %d times after one foreign edit, want at most 1:\n%s",
				n, m.journal(containerd))
		}
		if s := m.prop(containerd, "ActiveState"); s != "active" {
			t.Errorf("containerd is %s after the repair, want active", s)
		}
		m.assertCRI()
	})

	t.Run("flip_loop", func(t *testing.T) {
		m := m.in(t)
		// A foreign tool that insists: it flips config_path every 200 ms,
		// as a rename like its package manager or sed -i would.
		script := fmt.Sprintf(`end=$(($(date +%%s) + %d)); n=0
while [ "$(date +%%s)" -lt "$end" ]; do
	sed -Ei 's#^([[:space:]]*config_path *=).*#\1 "/etc/containerd/elsewhere"#' %s
	n=$((n + 1)); sleep 0.2
done
echo $n`, int(flipFor/time.Second), configToml)
		flips := strings.TrimSpace(m.sh(script))
		t.Logf("the writer flipped config_path %s times in %v", flips, flipFor)
		m.logWatchStatus("when the writer stopped")

		// Once the writer gives up, the watch puts the file back when its
		// backoff ends.
		start := time.Now()
		m.eventually(fightTimeout, configToml+" to be put back after the fight",
			func() (bool, string) {
				got := m.readFile(configToml)
				return got == conf, got
			})
		t.Logf("%s put back %v after the writer stopped", configToml,
			time.Since(start).Round(time.Millisecond))

		// Restarts of containerd in this boot besides the first start; the
		// whole test runs well inside the budget's window.
		time.Sleep(settle)
		m.waitIdle()
		if n := m.starts(containerd) - 1; n > restartBudget {
			t.Errorf("containerd restarted %d times in this boot, budget %d:\n%s", n,
				restartBudget, m.journal(containerd))
		}
		if s := m.prop(containerd, "ActiveState"); s != "active" {
			t.Errorf("containerd is %s after the flip loop, want active", s)
		}
		if s := m.prop(watchUnit, "ActiveState"); s != "active" {
			t.Errorf("%s is %s after the flip loop, want active:\n%s", watchUnit, s,
				m.journal(watchUnit))
		}
		m.logWatchStatus("after the flip loop")
	})

	if n := m.prop(watchUnit, "NRestarts"); n != "0" {
		t.Errorf("%s NRestarts = %s, want 0:\n%s", watchUnit, n, m.journal(watchUnit))
	}
	t.Logf("journal of %s:\n%s", watchUnit, m.journal(watchUnit))
}

// waitRepaired polls a file until it has the content want again, and fails
// the test if that takes longer than repairBound.
func (m *machine) waitRepaired(path, want string) {
	m.t.Helper()

	start := time.Now()
	var got string
	for time.Since(start) < 5*repairBound {
		got = m.readFile(path)
		if got == want {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}

	took := time.Since(start)
	switch {
	case got != want:
		m.t.Fatalf("%s not put back after %v; it holds:\n%s", path, took, got)
	case took > repairBound:
		m.t.Errorf("%s put back after %v, want within %v", path, took, repairBound)
	default:
		m.t.Logf("%s put back after %v", path, took.Round(time.Millisecond))
	}
}

// logWatchStatus logs "systemctl status" of the watch unit, whose Status:
// line is mirrord's STATUS= text.
func (m *machine) logWatchStatus(when string) {
	m.t.Helper()

	m.t.Logf("systemctl status %s, %s:\n%s", watchUnit, when,
		m.output("systemctl", "status", "-n", "0", watchUnit))
}

// configPathValue matches the value of config_path lines.
var configPathValue = regexp.MustCompile(`(?m)^(\s*config_path\s*=\s*).*$`)

// retargetConfigPath returns conf with every config_path set to dir, as an
// administrator's edit would.
func retargetConfigPath(conf, dir string) string {
	return configPathValue.ReplaceAllString(conf, `${1}"`+dir+`"`)
}
