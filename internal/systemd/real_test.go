package systemd

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mirrord/mirrord/internal/apply"
	"github.com/mirrord/mirrord/internal/config"
)

// The tests below need a booted systemd running containerd.service and
// docker.service, e.g. Debian 12 in systemd-nspawn (FACTS.md §8.2), and
// change its daemon.json. MIRRORD_TEST_SYSTEMD_ROOT names its root: "/" from
// inside, /proc/$LEADER/root from the host.
const realRootEnv = "MIRRORD_TEST_SYSTEMD_ROOT"

func realRoot(t *testing.T) string {
	t.Helper()
	root := os.Getenv(realRootEnv)
	if root == "" {
		t.Skip("set " + realRootEnv + " to the root of a booted systemd with containerd " +
			"and docker (FACTS.md §8.2)")
	}
	return root
}

func realManager(t *testing.T, root string, logs *bytes.Buffer) *Manager {
	t.Helper()
	m, err := New(t.Context(), Options{Root: root, Log: textLogger(logs),
		CheckTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return m
}

func mainPID(t *testing.T, m *Manager, unit string) uint32 {
	t.Helper()
	conn, err := m.bus.(*dbusBus).get(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	p, err := conn.GetServicePropertyContext(t.Context(), unit, "MainPID")
	if err != nil {
		t.Fatal(err)
	}
	return p.Value.Value().(uint32)
}

func TestRealSystemd(t *testing.T) {
	root := realRoot(t)
	var logs bytes.Buffer
	m := realManager(t, root, &logs)
	t.Cleanup(func() { t.Logf("log:\n%s", logs.String()) })

	t.Run("unit_states", func(t *testing.T) {
		st, err := m.bus.unit(t.Context(), "containerd.service")
		if err != nil || !st.running() {
			t.Fatalf("containerd.service: %+v, %v; want it active", st, err)
		}
		st, err = m.bus.unit(t.Context(), "no-such-runtime.service")
		if err != nil || !st.missing() {
			t.Fatalf("no-such-runtime.service: %+v, %v; want not-found", st, err)
		}
		// Outside the container's PID namespace our PID is not its
		// process: this must fail (and must not crash systemd).
		own, err := m.bus.unitByPID(t.Context(), os.Getpid())
		t.Logf("unit of PID %d: %q, %v", os.Getpid(), own, err)
	})

	t.Run("restart_containerd", func(t *testing.T) {
		before := mainPID(t, m, "containerd.service")
		if err := m.Act(t.Context(), []apply.Action{containerdAction}); err != nil {
			t.Fatal(err)
		}
		if after := mainPID(t, m, "containerd.service"); after == before {
			t.Errorf("MainPID still %d after the restart", after)
		}
	})

	daemonJSON := filepath.Join(root, "etc/docker/daemon.json")
	orig, err := os.ReadFile(daemonJSON)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// A missing key keeps dockerd's mirrors (FACTS.md §3.1): empty
		// the list first.
		_ = os.WriteFile(daemonJSON, []byte(`{"registry-mirrors": []}`), 0o644)
		_ = m.Act(context.Background(), []apply.Action{dockerAction})
		if orig == nil {
			_ = os.Remove(daemonJSON)
		} else {
			_ = os.WriteFile(daemonJSON, orig, 0o644)
		}
	})

	t.Run("reload_docker", func(t *testing.T) {
		writeFile(t, daemonJSON, `{"registry-mirrors": ["https://mirror.example.net"]}`)
		before := mainPID(t, m, "docker.service")
		if err := m.Act(t.Context(), []apply.Action{dockerAction}); err != nil {
			t.Fatal(err)
		}
		if after := mainPID(t, m, "docker.service"); after != before {
			t.Errorf("MainPID %d -> %d: a reload must keep dockerd", before, after)
		}
		if err := m.Verify(t.Context(), []config.Runtime{config.Containerd,
			config.Docker}); err != nil {
			t.Error(err)
		}
	})

	t.Run("reload_docker_rejected", func(t *testing.T) {
		// dockerd refuses the scheme, logs it and keeps its mirrors; the
		// reload job still reports done.
		writeFile(t, daemonJSON, `{"registry-mirrors": ["ftp://mirror.example.net"]}`)
		err := m.Act(t.Context(), []apply.Action{dockerAction})
		want := "reload docker.service: dockerd did not take daemon.json: it reports " +
			"mirrors [https://mirror.example.net/]"
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("error %v, want one with %q", err, want)
		}
	})
}

// TestRealPrivateSocket reaches systemd through its private socket when the
// root has no bus socket.
func TestRealPrivateSocket(t *testing.T) {
	root := realRoot(t)
	if os.Geteuid() != 0 {
		t.Skip("the private socket is root's only")
	}
	fake := t.TempDir()
	link := filepath.Join(fake, privateSocket)
	if err := os.MkdirAll(filepath.Dir(link), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(root, privateSocket), link); err != nil {
		t.Fatal(err)
	}

	// systemd hangs up on a process of another PID namespace there.
	ours, _ := os.Readlink("/proc/self/ns/pid")
	theirs, _ := os.Readlink(filepath.Join(root, "proc/1/ns/pid"))
	if ours != theirs {
		_, err := New(t.Context(), Options{Root: fake})
		if !errors.Is(err, ErrNoSystemd) || !strings.Contains(err.Error(), "reset") {
			t.Fatalf("from another PID namespace: got %v, want ErrNoSystemd", err)
		}
		t.Logf("from another PID namespace: %v", err)
		return
	}

	var logs bytes.Buffer
	m := realManager(t, fake, &logs)
	if got := m.bus.(*dbusBus).socket; got != link {
		t.Errorf("connected through %s, want %s", got, link)
	}
	st, err := m.bus.unit(t.Context(), "docker.service")
	if err != nil || !st.running() {
		t.Fatalf("docker.service: %+v, %v; want it active", st, err)
	}
}

// TestRealOwnStartJob runs as ExecStart of a oneshot ordered before
// containerd.service, started while containerd is up (as `systemctl enable
// --now` does): Act must queue the restart and return at once. The caller
// checks that containerd restarts once the oneshot ended.
func TestRealOwnStartJob(t *testing.T) {
	root := realRoot(t)
	if os.Getenv("MIRRORD_TEST_OWN_START_JOB") == "" {
		t.Skip("set MIRRORD_TEST_OWN_START_JOB=1 in a oneshot ordered before containerd")
	}
	var logs bytes.Buffer
	m := realManager(t, root, &logs)
	defer func() { t.Logf("log:\n%s", logs.String()) }()

	start := time.Now()
	if err := m.Act(t.Context(), []apply.Action{containerdAction}); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Act took %s inside its own start job", d)
	}
	if !strings.Contains(logs.String(), "queued; not waiting") {
		t.Error("the restart was waited for")
	}
}
