package main

// What mirrord watch needs in a pod (deploy/kubernetes) beyond what the
// systemd unit gives it: a heartbeat file for the liveness probe, read by
// "mirrord health", and a revert when the pod stops, if the operator asked.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
)

// The environment of a watch in a pod.
const (
	// heartbeatEnv names the file the watch keeps fresh while its loop is
	// healthy; "mirrord health" reads it.
	heartbeatEnv = "MIRRORD_HEARTBEAT"
	// revertOnStopEnv names a file; when it holds "true" as the watch
	// stops on SIGTERM or SIGINT, the watch reverts the node.
	revertOnStopEnv = "MIRRORD_REVERT_ON_STOP"
)

// Heartbeat timing: with no systemd watchdog, the watch pings every
// heartbeatEvery (half the interval given to the loop), and health takes a
// heartbeat older than defaultMaxAge as a hung or dead watch.
const (
	heartbeatEvery = 10 * time.Second
	defaultMaxAge  = 60 * time.Second
	revertTimeout  = 60 * time.Second
)

// heartbeat writes the watch's liveness to a file: the time of the last
// watchdog ping and the last STATUS= line. The loop pings only while no
// pass has hung (watch.Options.PassTimeout), so a stale file means what a
// missed systemd watchdog means. It writes nothing before READY=1, the end
// of the first pass. A nil *heartbeat does nothing.
type heartbeat struct {
	path string
	log  *slog.Logger
	now  func() time.Time

	mu     sync.Mutex
	ready  bool
	status string
	failed bool // a write failed; logged once until one succeeds
}

// newHeartbeat returns the heartbeat heartbeatEnv asks for, or nil.
func newHeartbeat(log *slog.Logger) *heartbeat {
	path := os.Getenv(heartbeatEnv)
	if path == "" {
		return nil
	}
	return &heartbeat{path: path, log: log, now: time.Now}
}

// watchdog is the interval to give watch.Options.Watchdog: zero (systemd's
// own, or none) unless a heartbeat is wanted and systemd set no watchdog.
func (h *heartbeat) watchdog() time.Duration {
	if h == nil {
		return 0
	}
	if wd, err := daemon.SdWatchdogEnabled(false); err == nil && wd > 0 {
		return 0
	}
	return 2 * heartbeatEvery
}

// notify takes one sd_notify state of the watch loop.
func (h *heartbeat) notify(state string) {
	if h == nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()

	switch {
	case strings.HasPrefix(state, "STATUS="):
		h.status = strings.TrimPrefix(state, "STATUS=")
		if !h.ready {
			return
		}
	case state == daemon.SdNotifyReady:
		h.ready = true
	case state == daemon.SdNotifyWatchdog:
		if !h.ready {
			return
		}
	default:
		return
	}
	h.write()
}

// write replaces the file atomically: the time, then the status line.
func (h *heartbeat) write() {
	data := h.now().UTC().Format(time.RFC3339Nano) + "\n" + h.status + "\n"
	tmp := filepath.Join(filepath.Dir(h.path), "."+filepath.Base(h.path)+".tmp")
	err := os.WriteFile(tmp, []byte(data), 0o644)
	if err == nil {
		err = os.Rename(tmp, h.path)
	}
	switch {
	case err != nil && !h.failed:
		h.log.Error("heartbeat not written; the liveness probe will fail", "path", h.path,
			"err", err)
		h.failed = true
	case err == nil && h.failed:
		h.log.Info("heartbeat written again", "path", h.path)
		h.failed = false
	}
}

// healthCmd checks the watch's heartbeat: it prints its age and the watch's
// last status line and returns nil when the heartbeat is younger than
// maxAge, an error saying why not otherwise.
func healthCmd(stdout io.Writer, maxAge time.Duration, now time.Time) error {
	path := os.Getenv(heartbeatEnv)
	if path == "" {
		return fmt.Errorf("env %s is not set: it names the heartbeat file of the watch "+
			"to check", heartbeatEnv)
	}
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("no heartbeat at %s: the watch has not finished its first pass, "+
			"or is not running", path)
	}
	if err != nil {
		return fmt.Errorf("read heartbeat: %w", err)
	}

	stamp, status, _ := strings.Cut(string(data), "\n")
	status = strings.TrimSpace(status)
	at, err := time.Parse(time.RFC3339Nano, stamp)
	if err != nil {
		return fmt.Errorf("heartbeat %s: no time on its first line: %q", path, stamp)
	}
	age := now.Sub(at).Round(time.Second)
	if age > maxAge {
		return fmt.Errorf("heartbeat %s is %s old, more than %s: the watch is hung or gone; "+
			"its last status: %s", path, age, maxAge, status)
	}

	fmt.Fprintf(stdout, "alive: heartbeat %s old\nstatus: %s\n", max(age, 0), status)
	if file := os.Getenv(revertOnStopEnv); file != "" {
		armed, why := revertArmed(file)
		word := "not armed"
		if armed {
			word = "ARMED"
		}
		fmt.Fprintf(stdout, "revert on stop: %s (%s)\n", word, why)
	}
	return nil
}

// revertArmed reads the file revertOnStopEnv names: armed when it holds
// "true". why says what was found, for the log and health.
func revertArmed(file string) (armed bool, why string) {
	data, err := os.ReadFile(file)
	if errors.Is(err, fs.ErrNotExist) {
		return false, "no " + file
	}
	if err != nil {
		return false, fmt.Sprintf("%s unreadable: %v", file, err)
	}
	v := strings.ToLower(strings.TrimSpace(string(data)))
	if v != "true" {
		return false, fmt.Sprintf("%s holds %q, not true", file, clip(v))
	}
	return true, file + " holds true"
}

// revertOnStop runs after the watch stopped on a signal: when
// revertOnStopEnv names a file holding "true", it reverts the node as
// "mirrord revert" does, bounded by revertTimeout; otherwise it leaves the
// node as it is. The watch's own context has ended, so the revert gets a
// context of its own.
func revertOnStop(ctx context.Context, root string, stdout io.Writer, log *slog.Logger) error {
	file := os.Getenv(revertOnStopEnv)
	if file == "" {
		return nil
	}
	armed, why := revertArmed(file)
	if !armed {
		log.Info("stopped; node left as it is", "revert_on_stop", why)
		return nil
	}

	if stdout == nil {
		stdout = io.Discard
	}
	log.Warn("stopped; reverting the node as asked", "revert_on_stop", why)
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), revertTimeout)
	defer cancel()
	if err := revert(rctx, root, stdout, log); err != nil {
		return fmt.Errorf("revert on stop: %w", err)
	}
	log.Info("node reverted")
	return nil
}
