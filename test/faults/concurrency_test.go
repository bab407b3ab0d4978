package faults

import (
	"bytes"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// rounds is how many times the concurrency test starts its three runs.
const rounds = 20

func TestConcurrentApplyAndWatch(t *testing.T) {
	t.Parallel()

	done := copyNode(t)
	if r := runMirrord(t, mirrordBin, nil, "apply", "--root", done, "--no-reload"); r.err != nil {
		t.Fatalf("apply: %v\n%s", r.err, r.stderr)
	}
	final := readTree(t, done, "/etc")

	for round := range rounds {
		root := copyNode(t)
		notify, ready := notifySocket(t)

		// The watch and two applies, started together.
		watch := exec.Command(mirrordBin, "watch", "--root", root, "--no-reload")
		// No probes: the sample node's mirrors are not on loopback.
		watch.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "NOTIFY_SOCKET=" + notify,
			"MIRRORD_PROBE_INTERVAL=off"}
		var watchErr bytes.Buffer
		watch.Stderr = &watchErr
		if err := watch.Start(); err != nil {
			t.Fatal(err)
		}

		var wg sync.WaitGroup
		applies := make([]result, 2)
		for i := range applies {
			wg.Go(func() {
				applies[i] = runMirrord(t, mirrordBin, nil, "apply", "--root", root,
					"--no-reload")
			})
		}
		wg.Wait()

		select {
		case <-ready:
		case <-time.After(30 * time.Second):
			watch.Process.Kill()
			watch.Wait()
			t.Fatalf("round %d: the watch sent no READY=1 in 30s:\n%s", round, watchErr.String())
		}
		watch.Process.Signal(syscall.SIGTERM)
		if err := watch.Wait(); err != nil {
			t.Fatalf("round %d: watch after SIGTERM: %v\n%s", round, err, watchErr.String())
		}

		// Every run ended well, one of them wrote and decided the actions.
		logs := []string{watchErr.String()}
		for i, r := range applies {
			if r.err != nil {
				t.Fatalf("round %d: apply %d: %v\n%s", round, i, r.err, r.stderr)
			}
			logs = append(logs, r.stderr)
		}
		// The watch under --no-reload logs no actions; an apply reports
		// them on stdout. Only the run that wrote may decide a restart.
		writers, applyWrote := 0, false
		for i, l := range logs {
			if strings.Contains(l, `msg="file `) {
				writers++
				applyWrote = applyWrote || i > 0
			}
		}
		restarts := 0
		for _, r := range applies {
			restarts += strings.Count(r.stdout, "containerd: restart containerd.service")
		}
		if writers != 1 {
			t.Errorf("round %d: %d runs wrote files, want 1:\n%s", round, writers,
				strings.Join(logs, "\n--\n"))
		}
		if want := map[bool]int{true: 1, false: 0}[applyWrote]; restarts != want {
			t.Errorf("round %d: the applies decided containerd's restart %d times, want %d:"+
				"\n%s\n%s", round, restarts, want, applies[0].stdout, applies[1].stdout)
		}

		// No torn or left-over file.
		if diff := treeDiff(final, readTree(t, root, "/etc")); diff != "" {
			t.Errorf("round %d: files after the concurrent runs:\n%s", round, diff)
		}
		if left := temps(readTree(t, root, "/")); len(left) > 0 {
			t.Errorf("round %d: temporary files left: %v", round, left)
		}
	}
}

// notifySocket listens on a datagram socket as systemd's notify socket and
// returns its path and a channel closed at the first READY=1.
func notifySocket(t *testing.T) (string, <-chan struct{}) {
	t.Helper()

	path := filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })

	ready := make(chan struct{})
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			for line := range strings.Lines(string(buf[:n])) {
				if strings.TrimSpace(line) == "READY=1" {
					close(ready)
					return
				}
			}
		}
	}()
	return path, ready
}
