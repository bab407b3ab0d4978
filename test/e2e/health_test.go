package e2e

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The watch's probe settings in TestHealthOrder: a probe a second, each
// bounded by a second.
const (
	healthInterval = time.Second
	healthTimeout  = time.Second
)

// TestHealthOrder runs mirrord watch beside containerd 1.6 with two
// mirrors. Stopping the first one (SIGSTOP: it still accepts connections
// and never answers, the case where order matters most) moves it last in
// hosts.toml within a few probe intervals, with no action, and a pull then
// succeeds through the second mirror without waiting on the stopped one;
// starting it again (SIGCONT) puts it back first.
func TestHealthOrder(t *testing.T) {
	requireE2E(t)
	t.Parallel()

	bin := lookTool(t, "containerd")
	if line, major := toolVersion(t, bin); major != "1" {
		t.Fatalf("containerd in PATH is %q, want 1.x; %s", line, installHint)
	}
	cc := containerdCase{bin: bin, ctr: lookTool(t, "ctr"), crictl: crictl(t)}

	ns := newNetns(t)
	first := startRegistry(t, ns, 5400)
	second := startRegistry(t, ns, 5401)
	t.Cleanup(func() { _ = syscall.Kill(first.d.pid(), syscall.SIGCONT) })

	root := t.TempDir()
	mustWrite(t, filepath.Join(root, "etc/containerd/config.toml"), cc.config(t))
	mustWrite(t, filepath.Join(root, "etc/mirrord/mirrord.toml"), []byte(fmt.Sprintf(`
[registries."docker.io"]
canary = "library/%s:%s"
mirrors = ["http://%s", "http://%s"]
`, imageName, imageTag, first.addr, second.addr)))

	// The watch writes the files before containerd starts, as at boot.
	dir := t.TempDir()
	watch := &daemon{name: "mirrord watch", log: filepath.Join(dir, "watch.log")}
	startDaemon(t, watch, ns.argv("env", "MIRRORD_RUNTIMES=containerd", "MIRRORD_METADATA=none",
		"MIRRORD_PROBE_INTERVAL="+healthInterval.String(),
		"MIRRORD_PROBE_TIMEOUT="+healthTimeout.String(),
		mirrordBin, "watch", "--root", root, "--no-reload"))
	hosts := filepath.Join(root, hostsTOML)
	inOrder := "http://" + first.addr + " http://" + second.addr
	waitOrder(t, watch, hosts, inOrder, 10*time.Second)

	ctrd := startContainerd(t, ns, cc, root)
	ctrd.crictl(t, "pull", imageRef)
	first.requireRequest(t, "HEAD", manifestPath("ns=docker.io"), "containerd/")

	// Stopped: moved last within a few intervals.
	if err := syscall.Kill(first.d.pid(), syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	waitOrder(t, watch, hosts, "http://"+second.addr+" http://"+first.addr,
		6*(healthInterval+healthTimeout))
	t.Logf("hosts.toml reordered %v after the first mirror stopped",
		time.Since(stopped).Round(10*time.Millisecond))

	seen := len(second.requests(t))
	ctrd.crictl(t, "rmi", imageRef)
	pullStart := time.Now()
	ctrd.crictl(t, "pull", imageRef)
	took := time.Since(pullStart)
	t.Logf("pull with the first mirror stopped took %v", took.Round(time.Millisecond))
	if late := second.requests(t)[seen:]; len(matching(late, "HEAD",
		manifestPath("ns=docker.io"), "containerd/")) == 0 {
		t.Errorf("second mirror did not serve the pull; requests %+v", late)
	}
	if took > 5*time.Second {
		t.Errorf("pull took %v: it waited on the stopped mirror", took)
	}

	// Started again: back in its place.
	if err := syscall.Kill(first.d.pid(), syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	resumed := time.Now()
	waitOrder(t, watch, hosts, inOrder, 6*(healthInterval+healthTimeout))
	t.Logf("hosts.toml back in spec order %v after the first mirror started again",
		time.Since(resumed).Round(10*time.Millisecond))

	log, err := os.ReadFile(watch.log)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"mirror failing; moved behind the healthy mirrors",
		"mirror healthy again; back in its place"} {
		if !bytes.Contains(log, []byte(want)) {
			t.Errorf("watch log lacks %q", want)
		}
	}
	if bytes.Contains(log, []byte("restart containerd")) {
		t.Errorf("the health order asked for a restart:\n%s", log)
	}
}

// hostsMirrors returns the [host."..."] URLs of a hosts.toml in order.
func hostsMirrors(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		if u, ok := strings.CutPrefix(line, `[host."`); ok {
			out = append(out, strings.TrimSuffix(u, `"]`))
		}
	}
	return strings.Join(out, " ")
}

// waitOrder waits until the hosts.toml at path lists want, failing the
// test after timeout.
func waitOrder(t *testing.T, watch *daemon, path, want string, timeout time.Duration) {
	t.Helper()

	watch.waitFor(t, "hosts.toml order "+want, timeout, func() error {
		if got := hostsMirrors(path); got != want {
			return fmt.Errorf("order is %q", got)
		}
		return nil
	})
}
