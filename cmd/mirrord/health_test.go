package main

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mirrord/mirrord/internal/logging"
)

// toggleRegistry is basicRegistry that answers 503 while down is set.
type toggleRegistry struct {
	basicRegistry
	down atomic.Bool
}

func (r *toggleRegistry) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if r.down.Load() {
		http.Error(w, "down", http.StatusServiceUnavailable)
		return
	}
	r.basicRegistry.ServeHTTP(w, req)
}

// hostsOrder returns the mirror URLs of a hosts.toml in file order.
func hostsOrder(t *testing.T, path string) []string {
	t.Helper()
	var out []string
	for _, line := range strings.Split(read(t, path), "\n") {
		if u, ok := strings.CutPrefix(line, `[host."`); ok {
			out = append(out, strings.TrimSuffix(u, `"]`))
		}
	}
	return out
}

// TestWatchHealthOrder fails the first of two mirrors under a running
// watch: it moves behind the second in hosts.toml with no action, status
// names it, and it comes back when it answers again.
func TestWatchHealthOrder(t *testing.T) {
	clearEnv(t)
	root := node(t)
	first, second := &toggleRegistry{}, &toggleRegistry{}
	srv1, srv2 := httptest.NewServer(first), httptest.NewServer(second)
	t.Cleanup(srv1.Close)
	t.Cleanup(srv2.Close)
	spec := `[registries."docker.io"]
mirrors = ["` + srv1.URL + `", "` + srv2.URL + `"]
`
	if err := os.WriteFile(filepath.Join(root, "etc/mirrord/mirrord.toml"), []byte(spec),
		0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("MIRRORD_PROBE_INTERVAL", "200ms")
	t.Setenv("MIRRORD_PROBE_TIMEOUT", "500ms")

	var logs syncBuffer
	log := logging.New(&logs, slog.LevelDebug, false)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- watchCmd(ctx, options{root: root, noReload: true}, nil, log) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("watch: %v", err)
		}
		if t.Failed() {
			t.Logf("log:\n%s", logs.String())
		}
	}()

	hosts := filepath.Join(root, "etc/containerd/certs.d/docker.io/hosts.toml")
	inOrder := []string{srv1.URL, srv2.URL}
	eventually(t, "hosts.toml in spec order", func() bool {
		return strings.Join(hostsOrder(t, hosts), " ") == strings.Join(inOrder, " ")
	})
	eventually(t, "first probes", func() bool {
		return strings.Contains(logs.String(), "mirrors probed")
	})

	first.down.Store(true)
	began := time.Now()
	eventually(t, "failing mirror moved last", func() bool {
		return strings.Join(hostsOrder(t, hosts), " ") == srv2.URL+" "+srv1.URL
	})
	t.Logf("moved last %v after it failed", time.Since(began))
	if !strings.Contains(logs.String(), `msg="mirror failing; moved behind the healthy `+
		`mirrors in hosts.toml" registry=docker.io mirror=`+srv1.URL+" failures=3") {
		t.Errorf("no log line for the move:\n%s", logs.String())
	}
	if strings.Contains(logs.String(), "restart containerd") {
		t.Error("the health order asked for a restart")
	}

	// status, a separate command, agrees with the watch and names it.
	code, out, errOut := mirrord(t, "status", "--root", root)
	if code != 0 || !strings.Contains(out, "node:     in sync") ||
		!strings.Contains(out, "demoted:  docker.io "+srv1.URL) {
		t.Errorf("status with a demoted mirror: exit %d\n%s%s", code, out, errOut)
	}

	first.down.Store(false)
	eventually(t, "mirror back in its place", func() bool {
		return strings.Join(hostsOrder(t, hosts), " ") == strings.Join(inOrder, " ")
	})
	if !strings.Contains(logs.String(), "mirror healthy again") {
		t.Errorf("no log line for the return:\n%s", logs.String())
	}
}
