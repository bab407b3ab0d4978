package systemdtest

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// How long the tests give an action mirrord queued to take effect, and how
// long "systemctl enable --now" may take: the issue asks for "within
// seconds", and a deadlock would last until the unit's start timeout.
const (
	settleTimeout = 15 * time.Second
	enableBound   = 15 * time.Second
)

func TestLiveChange(t *testing.T) {
	t.Parallel()
	// mirrord.service is not enabled, so the machine boots with Debian's
	// config.toml, which has no config_path.
	m := bootMachine(t, machineOptions{})
	if conf := m.readFile(configToml); strings.Contains(conf, "config_path") {
		t.Fatalf("%s has a config_path before mirrord ran:\n%s", configToml, conf)
	}
	runtimes := m.runtimeState()

	t.Run("config_toml_and_docker_mirrors", func(t *testing.T) {
		m := m.in(t)
		m.setMirrors("docker.io=" + mirrorA)
		m.restartApply()

		runtimes.wantRestarted(m, containerd)
		runtimes.wantReloaded(m, docker)
		m.assertContainerdMirror(mirrorA)
		m.assertCRI()
		m.assertDaemonJSON(mirrorA)
		m.assertDockerMirrors(mirrorA)
		runtimes = m.runtimeState()
	})

	t.Run("docker_mirror_changed", func(t *testing.T) {
		m := m.in(t)
		m.setMirrors("docker.io=" + mirrorB)
		m.restartApply()

		runtimes.wantUntouched(m, containerd)
		runtimes.wantReloaded(m, docker)
		m.assertContainerdMirror(mirrorB)
		m.assertDaemonJSON(mirrorB)
		m.assertDockerMirrors(mirrorB)
		runtimes = m.runtimeState()
	})

	t.Run("hosts_toml_only", func(t *testing.T) {
		m := m.in(t)
		daemon := m.readFile(daemonJSON)
		m.setMirrors("docker.io=" + mirrorB + ";quay.io=" + mirrorA)
		m.restartApply()

		runtimes.wantUntouched(m, containerd)
		runtimes.wantUntouched(m, docker)
		quay := m.readFile(certsDir + "/quay.io/hosts.toml")
		if !strings.Contains(quay, `[host."`+mirrorA+`"]`) {
			t.Errorf("quay.io hosts.toml has no [host.%q]:\n%s", mirrorA, quay)
		}
		if diff := cmp.Diff(daemon, m.readFile(daemonJSON)); diff != "" {
			t.Errorf("%s changed for a registry dockerd cannot mirror (-old +new):\n%s",
				daemonJSON, diff)
		}
	})

	t.Logf("systemctl status %s:\n%s", applyUnit, m.output("systemctl", "status", applyUnit))
}

func TestEnableNowNoDeadlock(t *testing.T) {
	t.Parallel()
	m := bootMachine(t, machineOptions{mirrors: "docker.io=" + mirrorA})
	runtimes := m.runtimeState()
	for unit := range runtimes {
		if s := m.prop(unit, "ActiveState"); s != "active" {
			t.Fatalf("%s is %s before enable --now, want active", unit, s)
		}
	}

	start := time.Now()
	// timeout(1) ends a deadlocked systemctl first, so that the test can
	// show the jobs waiting on each other.
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	out, err := m.exec(ctx, "", "timeout", "30", "systemctl", "enable", "--now", applyUnit)
	cancel()
	took := time.Since(start)
	t.Logf("systemctl enable --now %s took %v", applyUnit, took.Round(time.Millisecond))
	if err != nil {
		t.Fatalf("systemctl enable --now %s: %v\n%s\njobs:\n%s", applyUnit, err, out,
			m.output("systemctl", "list-jobs"))
	}
	if took > enableBound {
		t.Errorf("systemctl enable --now %s took %v, want less than %v", applyUnit, took,
			enableBound)
	}

	runtimes.wantRestarted(m, containerd)
	runtimes.wantReloaded(m, docker)
	m.assertContainerdMirror(mirrorA)
	if dump := m.run("containerd", "config", "dump"); !configPathLine.MatchString(dump) {
		t.Errorf("containerd config dump after restart: no config_path = %q:\n%s", certsDir,
			dump)
	}
	m.assertCRI()
	m.assertDockerMirrors(mirrorA)

	got := m.props(applyUnit, "ActiveState", "SubState", "Result", "UnitFileState")
	want := map[string]string{"ActiveState": "active", "SubState": "exited",
		"Result": "success", "UnitFileState": "enabled"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("%s state (-want +got):\n%s", applyUnit, diff)
	}
	t.Logf("systemctl status %s:\n%s", applyUnit, m.output("systemctl", "status", applyUnit))
}

// in returns a copy of the machine that reports to t, for subtests.
func (m *machine) in(t *testing.T) *machine {
	c := *m
	c.t = t
	return &c
}

// setMirrors writes /etc/default/mirrord in the running machine.
func (m *machine) setMirrors(spec string) {
	m.t.Helper()

	m.writeFile(defaultsFile, "MIRRORD_MIRRORS="+strconv.Quote(spec)+"\n")
}

// restartApply runs "systemctl restart mirrord" as an operator would after
// changing the spec, then waits until systemd has no jobs left, so that
// whatever mirrord queued has run.
func (m *machine) restartApply() {
	m.t.Helper()

	start := time.Now()
	m.run("systemctl", "restart", applyUnit)
	m.t.Logf("systemctl restart %s took %v", applyUnit, time.Since(start).Round(time.Millisecond))
	m.waitIdle()
}

// waitIdle waits until systemd's job queue is empty.
func (m *machine) waitIdle() {
	m.t.Helper()

	m.eventually(settleTimeout, "systemd's job queue to empty", func() (bool, string) {
		jobs := m.run("systemctl", "list-jobs", "--no-legend")
		return strings.TrimSpace(jobs) == "", jobs
	})
}

// eventually polls cond every 50 ms until it holds, failing the test with
// what the last poll saw once timeout has passed.
func (m *machine) eventually(timeout time.Duration, what string, cond func() (bool, string)) {
	m.t.Helper()

	deadline := time.Now().Add(timeout)
	for {
		ok, seen := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			m.t.Fatalf("waited %v for %s; last saw:\n%s", timeout, what, seen)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// runState is where a runtime unit stood at one moment: its main PID and
// how many times systemd started and reloaded it so far.
type runState struct {
	MainPID string
	Starts  int
	Reloads int
}

// runtimes maps runtime units to their state.
type runtimes map[string]runState

// runtimeState returns the state of both runtimes, which must be active.
func (m *machine) runtimeState() runtimes {
	m.t.Helper()

	return m.unitStates(containerd, docker)
}

// wantRestarted checks that unit was restarted exactly once since r, under
// a new main PID, and is active.
func (r runtimes) wantRestarted(m *machine, unit string) {
	m.t.Helper()

	m.eventually(settleTimeout, unit+" to be restarted", func() (bool, string) {
		p := m.props(unit, "MainPID", "ActiveState")
		ok := p["MainPID"] != r[unit].MainPID && p["ActiveState"] == "active"
		return ok, "MainPID=" + p["MainPID"] + " ActiveState=" + p["ActiveState"]
	})
	if n := m.starts(unit) - r[unit].Starts; n != 1 {
		m.t.Errorf("%s started %d times, want 1:\n%s", unit, n, m.journal(unit))
	}
}

// wantReloaded checks that unit was reloaded exactly once since r, under
// the same main PID.
func (r runtimes) wantReloaded(m *machine, unit string) {
	m.t.Helper()

	m.eventually(settleTimeout, unit+" to be reloaded", func() (bool, string) {
		n := m.reloads(unit) - r[unit].Reloads
		return n > 0, strconv.Itoa(n) + " reloads"
	})
	got := runState{MainPID: m.prop(unit, "MainPID"), Starts: m.starts(unit),
		Reloads: m.reloads(unit)}
	want := r[unit]
	want.Reloads++
	if diff := cmp.Diff(want, got); diff != "" {
		m.t.Errorf("%s, want one reload and nothing else (-want +got):\n%s\n%s", unit, diff,
			m.journal(unit))
	}
}

// wantUntouched checks that unit was neither restarted nor reloaded since
// r.
func (r runtimes) wantUntouched(m *machine, unit string) {
	m.t.Helper()

	got := runState{MainPID: m.prop(unit, "MainPID"), Starts: m.starts(unit),
		Reloads: m.reloads(unit)}
	if diff := cmp.Diff(r[unit], got); diff != "" {
		m.t.Errorf("%s, want untouched (-want +got):\n%s\n%s", unit, diff, m.journal(unit))
	}
}
