package apply

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/mirrord/mirrord/internal/config"
	"github.com/mirrord/mirrord/internal/logging"
	"github.com/mirrord/mirrord/internal/spec"
)

// testNode makes a root with the given files and returns it.
func testNode(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for p, content := range files {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func testConfig(t *testing.T, root, mirrors string, runtimes ...config.Runtime) config.Config {
	t.Helper()
	s, err := spec.ParseCompact(mirrors, spec.Source{Layer: spec.LayerEnv, Name: "test"})
	if err != nil {
		t.Fatal(err)
	}
	return config.Config{Root: root, Spec: s, Runtimes: runtimes}
}

func mode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

// failingActor fails every call, counting the actions it was given.
type failingActor struct{ calls [][]Action }

func (f *failingActor) Act(_ context.Context, actions []Action) error {
	f.calls = append(f.calls, actions)
	return errors.New("restart containerd.service: job result \"failed\"")
}

func TestModesAndOriginals(t *testing.T) {
	root := testNode(t, map[string]string{
		"etc/containerd/config.toml": "version = 2\n",
	})
	cfgPath := filepath.Join(root, "etc/containerd/config.toml")
	if err := os.Chmod(cfgPath, 0o640); err != nil {
		t.Fatal(err)
	}
	log := logging.Discard()

	_, err := Apply(context.Background(), testConfig(t, root, "docker.io=https://m.example.net",
		config.Containerd), ReportOnly{}, log)
	if err != nil {
		t.Fatal(err)
	}

	if got := mode(t, cfgPath); got != 0o640 {
		t.Errorf("config.toml mode %v, want 0640 kept", got)
	}
	hosts := filepath.Join(root, "etc/containerd/certs.d/docker.io/hosts.toml")
	if got := mode(t, hosts); got != 0o644 {
		t.Errorf("new hosts.toml mode %v, want 0644", got)
	}
	for _, p := range []string{"state.json", "originals/etc/containerd/config.toml"} {
		if got := mode(t, filepath.Join(root, StateDir, p)); got != 0o600 {
			t.Errorf("%s mode %v, want 0600", p, got)
		}
	}
	orig, err := os.ReadFile(filepath.Join(root, StateDir, "originals/etc/containerd/config.toml"))
	if err != nil || string(orig) != "version = 2\n" {
		t.Errorf("original kept as %q (%v)", orig, err)
	}
	leftovers, _ := filepath.Glob(filepath.Join(root, "etc/containerd/.*mirrord-*"))
	if len(leftovers) > 0 {
		t.Errorf("temporary files left: %v", leftovers)
	}

	if _, err := RevertNode(context.Background(), root, ReportOnly{}, log); err != nil {
		t.Fatal(err)
	}
	if got := mode(t, cfgPath); got != 0o640 {
		t.Errorf("restored config.toml mode %v, want 0640", got)
	}
	if _, err := os.Stat(filepath.Join(root, "etc/containerd/certs.d")); err == nil {
		t.Error("certs.d, created by mirrord, survived revert")
	}
}

func TestMinimalConfigWhenMissing(t *testing.T) {
	root := testNode(t, map[string]string{"etc/containerd/.keep": ""})
	cfg := testConfig(t, root, "quay.io=https://q.example.net", config.Containerd)

	p, err := Apply(context.Background(), cfg, ReportOnly{}, logging.Discard())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(strings.Join(p.Warnings, "\n"), "no /etc/containerd/config.toml") {
		t.Errorf("no warning about the missing config.toml: %q", p.Warnings)
	}
	data, err := os.ReadFile(filepath.Join(root, "etc/containerd/config.toml"))
	if err != nil || !strings.Contains(string(data), `config_path = "/etc/containerd/certs.d"`) {
		t.Fatalf("minimal config.toml: %q (%v)", data, err)
	}

	if _, err := RevertNode(context.Background(), root, ReportOnly{}, logging.Discard()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "etc/containerd/config.toml")); err == nil {
		t.Error("config.toml that mirrord created survived revert")
	}
}

func TestFailedActionsStayPending(t *testing.T) {
	root := testNode(t, map[string]string{"etc/containerd/config.toml": "version = 2\n"})
	cfg := testConfig(t, root, "docker.io=https://m.example.net", config.Containerd)
	actor := &failingActor{}

	if _, err := Apply(context.Background(), cfg, actor, logging.Discard()); err == nil {
		t.Fatal("Apply succeeded with a failing actor")
	}

	// Nothing left to write, but the restart is still owed.
	p, err := Apply(context.Background(), cfg, actor, logging.Discard())
	if err == nil {
		t.Fatal("second Apply succeeded with a failing actor")
	}
	if len(p.Changes) != 0 {
		t.Errorf("second Apply changed files: %v", p.Changes)
	}
	want := []Action{{Runtime: config.Containerd, Unit: "containerd.service", Verb: Restart,
		Reason: "config.toml changed, pending from an earlier run"}}
	if diff := cmp.Diff(want, actor.calls[1]); diff != "" {
		t.Errorf("retried actions (-want +got):\n%s", diff)
	}

	st, err := ReadStatus(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if st.InSync || !strings.Contains(st.String(), "action(s) failed and are pending") {
		t.Errorf("status does not show the pending action:\n%s", st)
	}

	if _, err := Apply(context.Background(), cfg, ReportOnly{}, logging.Discard()); err != nil {
		t.Fatal(err)
	}
	st, _ = ReadStatus(cfg, nil)
	if !st.InSync {
		t.Errorf("still out of sync after the action went through:\n%s", st)
	}
}

func TestLockExcludes(t *testing.T) {
	root := t.TempDir()
	l, err := AcquireLock(root)
	if err != nil {
		t.Fatal(err)
	}

	f, err := os.Open(filepath.Join(root, StateDir, "lock"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err == nil {
		t.Fatal("a second holder got the lock")
	}

	if err := l.Release(); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		t.Fatalf("lock not free after Release: %v", err)
	}
}

func TestUnparsableStateIsAnError(t *testing.T) {
	root := testNode(t, map[string]string{"var/lib/mirrord/state.json": "{"})
	_, err := Build(testConfig(t, root, "docker.io=https://m.example.net"), logging.Discard())
	if err == nil || !strings.Contains(err.Error(), "parse state") {
		t.Errorf("err = %v, want a parse state error", err)
	}
}
