package main

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/mirrord/mirrord/internal/config"
	"github.com/mirrord/mirrord/internal/logging"
	"github.com/mirrord/mirrord/internal/metadata"
)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// eventually polls cond every 10ms for up to 3s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); {
		if cond() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("not within 3s: %s", what)
}

func read(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	return string(data)
}

// TestWatch runs the watch on the sample node and plays the foreign writer:
// drift of mirrord's parts is put back, edits of other keys stay, and the
// spec is re-read when its file changes or on SIGHUP.
func TestWatch(t *testing.T) {
	clearEnv(t)
	root := node(t)
	var logs syncBuffer
	log := logging.New(&logs, slog.LevelDebug, false)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- watchCmd(ctx, options{root: root, noReload: true, logLevel: "debug"}, nil, log)
	}()
	defer func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("watch: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("watch did not stop 5s after cancel")
		}
		if t.Failed() {
			t.Logf("log:\n%s", logs.String())
		}
	}()

	hosts := filepath.Join(root, "etc/containerd/certs.d/docker.io/hosts.toml")
	eventually(t, "first pass wrote "+hosts, func() bool {
		return strings.Contains(logs.String(), "pass found nothing to do")
	})
	want := read(t, hosts)

	t.Run("hosts_toml", func(t *testing.T) {
		if err := os.WriteFile(hosts, []byte("server = \"https://elsewhere\"\n"),
			0o644); err != nil {
			t.Fatal(err)
		}
		began := time.Now()
		eventually(t, "hosts.toml put back", func() bool { return read(t, hosts) == want })
		t.Logf("put back after %v", time.Since(began))
	})

	t.Run("config_path", func(t *testing.T) {
		cfgFile := filepath.Join(root, "etc/containerd/config.toml")
		orig := read(t, cfgFile)
		edited := strings.Replace(orig, `config_path = "/etc/containerd/certs.d"`,
			`config_path = "/etc/containerd/certs.d:/etc/docker/certs.d"`, 1)
		if edited == orig {
			t.Fatalf("config_path not found in\n%s", orig)
		}
		if err := os.WriteFile(cfgFile, []byte(edited), 0o644); err != nil {
			t.Fatal(err)
		}
		eventually(t, "config_path put back", func() bool { return read(t, cfgFile) == orig })
	})

	t.Run("keys_not_mirrords", func(t *testing.T) {
		daemonJSON := filepath.Join(root, "etc/docker/daemon.json")
		edited := strings.Replace(read(t, daemonJSON), `"max-file": "3"`,
			`"max-file": "5"`, 1)
		if err := os.WriteFile(daemonJSON, []byte(edited), 0o644); err != nil {
			t.Fatal(err)
		}
		time.Sleep(300 * time.Millisecond)
		if got := read(t, daemonJSON); got != edited {
			t.Errorf("daemon.json changed after an edit of a key mirrord does not own "+
				"(-edited +got):\n%s", cmp.Diff(edited, got))
		}
	})

	spec := filepath.Join(root, "etc/mirrord/mirrord.toml")
	orig := read(t, spec)
	ghcr := filepath.Join(root, "etc/containerd/certs.d/ghcr.io/hosts.toml")

	t.Run("bad_spec", func(t *testing.T) {
		if err := os.WriteFile(spec, []byte(orig+"\n[registries.\"ghcr.io\"]\nmirrors = "+
			"[\"ftp://x\"]\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		eventually(t, "the error is logged", func() bool {
			return strings.Contains(logs.String(), "pass failed")
		})
		if read(t, hosts) != want || read(t, ghcr) != "" {
			t.Errorf("a bad spec changed the node")
		}
	})

	t.Run("spec_change", func(t *testing.T) {
		if err := os.WriteFile(spec, []byte(orig+"\n[registries.\"ghcr.io\"]\nmirrors = "+
			"[\"https://ghcr-cache.example.net\"]\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		eventually(t, "ghcr.io/hosts.toml written", func() bool {
			return strings.Contains(read(t, ghcr), "ghcr-cache.example.net")
		})
	})

	t.Run("sighup", func(t *testing.T) {
		if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		eventually(t, "reload pass", func() bool {
			return strings.Contains(logs.String(), "reason=reload")
		})
	})
}

func TestParseFight(t *testing.T) {
	tests := []struct {
		name   string
		in     string
		limit  int
		window time.Duration
		err    bool
	}{
		{"default", "", 0, 0, false},
		{"off", "off", math.MaxInt, 0, false},
		{"set", "10/1m", 10, time.Minute, false},
		{"no_window", "10", 0, 0, true},
		{"zero", "0/30s", 0, 0, true},
		{"bad_duration", "5/30", 0, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			limit, window, err := parseFight(tt.in)
			if (err != nil) != tt.err {
				t.Fatalf("parseFight(%q) error %v; want error %v", tt.in, err, tt.err)
			}
			if err != nil {
				if !strings.Contains(err.Error(), fightEnv) ||
					!strings.Contains(err.Error(), "5/30s") {
					t.Errorf("error %q names neither the variable nor a valid value", err)
				}
				return
			}
			if limit != tt.limit || window != tt.window {
				t.Errorf("parseFight(%q) = %d, %v; want %d, %v", tt.in, limit, window,
					tt.limit, tt.window)
			}
		})
	}
}

func TestStatusLine(t *testing.T) {
	clearEnv(t)
	root := node(t)
	if code, _, stderr := mirrord(t, "apply", "--root", root, "--no-reload"); code != 0 {
		t.Fatalf("apply: %d %s", code, stderr)
	}
	cfg, err := config.Load(config.Options{Root: root})
	if err != nil {
		t.Fatal(err)
	}

	got := statusLine(cfg, nil, nil)
	want := "in sync; containerd 3 registries, docker 1; last: apply "
	if !strings.HasPrefix(got, want) ||
		!strings.HasSuffix(got, ", restart containerd.service, reload docker.service") {
		t.Errorf("status line %q; want %q...", got, want)
	}

	got = statusLine(cfg, errors.New("config file mirrord.toml: bad"),
		errors.New("dockerd shows no mirrors"))
	want = "NOT APPLIED: config file mirrord.toml: bad; PROOF FAILED: dockerd shows no " +
		"mirrors; containerd 3 registries, docker 1; last: apply "
	if !strings.HasPrefix(got, want) {
		t.Errorf("status line %q; want %q...", got, want)
	}
}

func TestWatchDirs(t *testing.T) {
	root := node(t)
	if err := os.MkdirAll(filepath.Join(root, "etc/containerd/certs.d/quay.io"),
		0o755); err != nil {
		t.Fatal(err)
	}
	got := watchDirs(root, filepath.Join(root, config.DefaultFile))
	for i := range got {
		got[i] = strings.TrimPrefix(got[i], root)
	}
	want := []string{"/etc/containerd", "/etc/docker", "/etc/containers/registries.conf.d",
		"/etc/rancher/k3s", "/etc/rancher/rke2", "/etc/mirrord", "/etc/mirrord/conf.d",
		"/etc/containerd/certs.d", "/etc/containerd/certs.d/quay.io", "/etc/docker/certs.d"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("watched directories (-want +got):\n%s", diff)
	}
}

// TestWatchMetadata runs the watch with GCE metadata emulated on loopback
// and changes the attribute under it: a change re-applies, an invalid value
// is logged and leaves the files, removing the key releases its registry.
func TestWatchMetadata(t *testing.T) {
	clearEnv(t)
	root := node(t)
	set := serveMetadata(t, metadata.GCE, map[string]string{
		metadata.KeyMirrors: "ghcr.io=https://ghcr-md.example.net",
	})
	var logs syncBuffer
	log := logging.New(&logs, slog.LevelDebug, false)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- watchCmd(ctx, options{root: root, noReload: true, logLevel: "debug"}, nil, log)
	}()
	defer func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("watch: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("watch did not stop 5s after cancel")
		}
		if t.Failed() {
			t.Logf("log:\n%s", logs.String())
		}
	}()

	ghcr := filepath.Join(root, "etc/containerd/certs.d/ghcr.io/hosts.toml")
	eventually(t, "first pass wrote "+ghcr, func() bool {
		return strings.Contains(read(t, ghcr), "https://ghcr-md.example.net")
	})
	eventually(t, "the follower started", func() bool {
		return strings.Contains(logs.String(), "following instance metadata")
	})

	t.Run("change", func(t *testing.T) {
		set(metadata.KeyMirrors, "ghcr.io=https://ghcr-md2.example.net")
		eventually(t, "ghcr.io/hosts.toml re-applied", func() bool {
			return strings.Contains(read(t, ghcr), "https://ghcr-md2.example.net")
		})
		// The file is in place a moment before its log line.
		eventually(t, "a pass with reason metadata in the log", func() bool {
			return strings.Contains(logs.String(), "pass=metadata")
		})
	})

	t.Run("invalid", func(t *testing.T) {
		want := read(t, ghcr)
		set(metadata.KeyMirrors, "ghcr.io=ftp://ghcr-md3.example.net")
		eventually(t, "the error is logged", func() bool {
			return strings.Contains(logs.String(), "pass failed") &&
				strings.Contains(logs.String(), "metadata gce instance attribute "+
					"mirrord-mirrors: value")
		})
		if read(t, ghcr) != want {
			t.Errorf("an invalid value changed the node")
		}
	})

	t.Run("removed", func(t *testing.T) {
		set(metadata.KeyMirrors, "")
		eventually(t, "ghcr.io/hosts.toml released", func() bool {
			_, err := os.Stat(ghcr)
			return errors.Is(err, os.ErrNotExist)
		})
	})
}

func TestReloadReason(t *testing.T) {
	tests := []struct {
		hup, md bool
		want    string
	}{
		{false, false, "reload"},
		{true, false, "reload"},
		{false, true, "metadata"},
		{true, true, "reload and metadata"},
	}
	for _, tt := range tests {
		var hup, md atomic.Bool
		hup.Store(tt.hup)
		md.Store(tt.md)
		if got := reloadReason(&hup, &md); got != tt.want {
			t.Errorf("reloadReason(hup %v, metadata %v) = %q, want %q", tt.hup, tt.md, got,
				tt.want)
		}
		if hup.Load() || md.Load() {
			t.Errorf("reloadReason left a mark set")
		}
	}
}
