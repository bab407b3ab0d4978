package main

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mirrord/mirrord/internal/kubelettest"
	"github.com/mirrord/mirrord/internal/logging"
)

// newVolume lays files out in dir as kubelet lays out a ConfigMap volume.
func newVolume(t *testing.T, dir string, files map[string]string) *kubelettest.Volume {
	t.Helper()
	v, err := kubelettest.New(dir, files)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

const (
	podSpecA = "[registries.\"docker.io\"]\nmirrors = [\"https://mirror-a.example.net\"]\n"
	podSpecB = "[registries.\"docker.io\"]\nmirrors = [\"https://mirror-b.example.net\"]\n"
)

// TestWatchInPod runs the watch as the DaemonSet does: the spec is a
// ConfigMap volume laid out as kubelet does (internal/kubelettest),
// MIRRORD_CONFIG names its file, and the heartbeat and revert-on-stop files are set. An update of the volume
// is a new spec, applied with no restart; health reads the heartbeat; an
// armed revert-on-stop puts the node back when the watch stops.
func TestWatchInPod(t *testing.T) {
	clearEnv(t)
	root := node(t)
	origConfig := read(t, filepath.Join(root, "etc/containerd/config.toml"))
	cm := filepath.Join(t.TempDir(), "config")
	vol := newVolume(t, cm, map[string]string{"mirrord.toml": podSpecA})
	beat := filepath.Join(t.TempDir(), "heartbeat")
	t.Setenv(heartbeatEnv, beat)
	t.Setenv(revertOnStopEnv, filepath.Join(cm, "revert-on-stop"))

	var logs syncBuffer
	log := logging.New(&logs, slog.LevelDebug, false)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- watchCmd(ctx, options{root: root, config: filepath.Join(cm, "mirrord.toml"),
			noReload: true}, nil, log)
	}()
	defer func() {
		if t.Failed() {
			t.Logf("log:\n%s", logs.String())
		}
	}()

	hosts := filepath.Join(root, "etc/containerd/certs.d/docker.io/hosts.toml")
	eventually(t, "spec A applied", func() bool {
		return strings.Contains(read(t, hosts), "mirror-a.example.net")
	})

	t.Run("health", func(t *testing.T) {
		eventually(t, "heartbeat written", func() bool { return read(t, beat) != "" })
		var out strings.Builder
		if err := healthCmd(&out, time.Minute, time.Now()); err != nil {
			t.Fatalf("health: %v", err)
		}
		for _, want := range []string{"alive: heartbeat", "status: in sync",
			"revert on stop: not armed"} {
			if !strings.Contains(out.String(), want) {
				t.Errorf("health printed no %q:\n%s", want, out.String())
			}
		}
	})

	t.Run("configmap_update", func(t *testing.T) {
		began := time.Now()
		if err := vol.Update(map[string]string{"mirrord.toml": podSpecB}); err != nil {
			t.Fatal(err)
		}
		eventually(t, "spec B applied", func() bool {
			return strings.Contains(read(t, hosts), "mirror-b.example.net")
		})
		t.Logf("applied %v after the ..data swap", time.Since(began).Round(time.Millisecond))
	})

	t.Run("revert_on_stop", func(t *testing.T) {
		err := vol.Update(map[string]string{"mirrord.toml": podSpecB, "revert-on-stop": "true\n"})
		if err != nil {
			t.Fatal(err)
		}
		eventually(t, "armed", func() bool {
			var out strings.Builder
			return healthCmd(&out, time.Minute, time.Now()) == nil &&
				strings.Contains(out.String(), "revert on stop: ARMED")
		})
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("watch: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("watch did not stop 10s after cancel")
		}
		if _, err := os.Stat(hosts); !os.IsNotExist(err) {
			t.Errorf("%s still there after the revert on stop: %v", hosts, err)
		}
		if got := read(t, filepath.Join(root, "etc/containerd/config.toml")); got != origConfig {
			t.Errorf("config.toml not put back byte for byte:\n%s", got)
		}
	})
}

// TestWatchInPodNotArmed: without the file holding "true", a stop leaves
// the node as it is.
func TestWatchInPodNotArmed(t *testing.T) {
	clearEnv(t)
	root := node(t)
	cm := filepath.Join(t.TempDir(), "config")
	newVolume(t, cm, map[string]string{"mirrord.toml": podSpecA,
		"revert-on-stop": "yes please\n"})
	t.Setenv(revertOnStopEnv, filepath.Join(cm, "revert-on-stop"))

	var logs syncBuffer
	log := logging.New(&logs, slog.LevelDebug, false)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- watchCmd(ctx, options{root: root, config: filepath.Join(cm, "mirrord.toml"),
			noReload: true}, nil, log)
	}()

	hosts := filepath.Join(root, "etc/containerd/certs.d/docker.io/hosts.toml")
	eventually(t, "spec applied", func() bool {
		return strings.Contains(read(t, hosts), "mirror-a.example.net")
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("watch: %v", err)
	}
	if !strings.Contains(read(t, hosts), "mirror-a.example.net") {
		t.Errorf("the node changed on a stop that was not armed")
	}
	if !strings.Contains(logs.String(), `holds \"yes please\", not true`) {
		t.Errorf("the log does not say why the node was left:\n%s", logs.String())
	}
}

func TestHealth(t *testing.T) {
	clearEnv(t)
	beat := filepath.Join(t.TempDir(), "heartbeat")
	now := time.Date(2026, 12, 4, 3, 50, 0, 0, time.UTC)

	if err := healthCmd(nil, time.Minute, now); err == nil ||
		!strings.Contains(err.Error(), heartbeatEnv) {
		t.Errorf("health with no %s: %v, want an error naming it", heartbeatEnv, err)
	}
	t.Setenv(heartbeatEnv, beat)
	if err := healthCmd(nil, time.Minute, now); err == nil ||
		!strings.Contains(err.Error(), "first pass") {
		t.Errorf("health with no heartbeat: %v, want an error", err)
	}

	h := &heartbeat{path: beat, log: logging.Discard(), now: func() time.Time {
		return now.Add(-90 * time.Second)
	}}
	h.notify("STATUS=in sync; containerd 1 registry")
	h.notify("WATCHDOG=1")
	if read(t, beat) != "" {
		t.Fatal("heartbeat written before READY=1")
	}
	h.notify("READY=1")

	err := healthCmd(nil, time.Minute, now)
	if err == nil || !strings.Contains(err.Error(), "1m30s old") ||
		!strings.Contains(err.Error(), "in sync; containerd 1 registry") {
		t.Errorf("health of a stale heartbeat: %v, want an error with its age and status", err)
	}
	var out strings.Builder
	if err := healthCmd(&out, 2*time.Minute, now); err != nil {
		t.Errorf("health with --max-age 2m: %v", err)
	}
	want := "alive: heartbeat 1m30s old\nstatus: in sync; containerd 1 registry\n"
	if out.String() != want {
		t.Errorf("health printed %q, want %q", out.String(), want)
	}
}
