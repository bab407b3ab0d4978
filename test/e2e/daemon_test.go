package e2e

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// How long a daemon gets to exit after SIGTERM, then after SIGKILL.
const (
	stopGrace = 10 * time.Second
	killGrace = 5 * time.Second
)

// maxLogDump bounds how much of a daemon's log a failed test prints: the
// end of the log, where the failure is.
const maxLogDump = 64 << 10

// daemon is a long-running program started for one test, in a session of
// its own, with its output in log files.
type daemon struct {
	name   string // for messages
	log    string // stderr, and stdout unless stdout is set
	stdout string // a separate file for stdout, or ""

	cmd    *exec.Cmd
	exited chan struct{} // closed when the process has been waited for
	err    error         // cmd.Wait's result, set before exited closes
}

// startDaemon starts argv with setsid semantics (a new session, so signals
// to the test's terminal do not reach it) and registers a cleanup that
// stops it by PID and, if the test failed, prints its logs. The test fails
// at once if the program cannot be started.
func startDaemon(t *testing.T, d *daemon, argv []string) {
	t.Helper()

	if d.name == "" {
		d.name = argv[0]
	}
	d.cmd = exec.Command(argv[0], argv[1:]...)
	d.cmd.Env = cleanEnv()
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}

	logFile, err := os.Create(d.log)
	if err != nil {
		t.Fatalf("start %s: %v", d.name, err)
	}
	defer logFile.Close()
	d.cmd.Stderr = logFile
	d.cmd.Stdout = logFile

	if d.stdout != "" {
		out, err := os.Create(d.stdout)
		if err != nil {
			t.Fatalf("start %s: %v", d.name, err)
		}
		defer out.Close()
		d.cmd.Stdout = out
	}

	if err := d.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", d.name, err)
	}
	d.exited = make(chan struct{})
	go func() {
		d.err = d.cmd.Wait()
		close(d.exited)
	}()

	t.Cleanup(func() {
		d.stop(t)
		if t.Failed() {
			d.dumpLogs(t)
		}
	})
}

// pid is the daemon's process ID.
func (d *daemon) pid() int { return d.cmd.Process.Pid }

// running reports whether the daemon has not exited.
func (d *daemon) running() bool {
	select {
	case <-d.exited:
		return false
	default:
		return true
	}
}

// exitErr describes how the daemon ended, for a test that found it gone.
func (d *daemon) exitErr() error {
	<-d.exited
	if d.err == nil {
		return fmt.Errorf("%s exited with status 0", d.name)
	}
	return fmt.Errorf("%s exited: %w", d.name, d.err)
}

// stop sends SIGTERM to the daemon's PID and, if it has not exited within
// stopGrace, SIGKILL to its process group, which the daemon leads as the
// first process of its session: children it started go with it. A daemon
// still running after that fails the test.
func (d *daemon) stop(t *testing.T) {
	t.Helper()

	if !d.running() {
		return
	}
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		t.Errorf("stop %s (pid %d): SIGTERM: %v", d.name, d.pid(), err)
	}

	select {
	case <-d.exited:
		return
	case <-time.After(stopGrace):
	}

	t.Logf("stop %s (pid %d): still running %v after SIGTERM; sending SIGKILL",
		d.name, d.pid(), stopGrace)
	if err := syscall.Kill(-d.pid(), syscall.SIGKILL); err != nil && err != syscall.ESRCH {
		t.Errorf("stop %s (pid %d): SIGKILL: %v", d.name, d.pid(), err)
	}
	select {
	case <-d.exited:
	case <-time.After(killGrace):
		t.Errorf("stop %s (pid %d): still running %v after SIGKILL", d.name, d.pid(), killGrace)
	}
}

// dumpLogs prints the end of each of the daemon's log files.
func (d *daemon) dumpLogs(t *testing.T) {
	t.Helper()

	for _, p := range []string{d.log, d.stdout} {
		if p == "" {
			continue
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Logf("%s log %s: %v", d.name, p, err)
			continue
		}
		if len(b) > maxLogDump {
			b = b[len(b)-maxLogDump:]
			if i := bytes.IndexByte(b, '\n'); i >= 0 {
				b = b[i+1:]
			}
			t.Logf("%s log %s (last %d KiB):\n%s", d.name, p, maxLogDump>>10, b)
			continue
		}
		t.Logf("%s log %s:\n%s", d.name, p, b)
	}
}

// requireProgram fails the test unless the daemon's process now runs the
// program bin: the wrappers it was started through (nsenter, unshare, sh)
// must have exec'd it, or stopping it by PID would leave it running.
func (d *daemon) requireProgram(t *testing.T, bin string) {
	t.Helper()

	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", d.pid()))
	if err != nil {
		t.Fatalf("%s (pid %d): %v", d.name, d.pid(), err)
	}
	if filepath.Base(exe) != filepath.Base(bin) {
		t.Fatalf("%s (pid %d) runs %s, want %s", d.name, d.pid(), exe, bin)
	}
}

// waitFor polls ready every 50 ms until it returns nil, the daemon exits or
// timeout passes, and fails the test in the last two cases with ready's
// last error.
func (d *daemon) waitFor(t *testing.T, what string, timeout time.Duration, ready func() error) {
	t.Helper()

	deadline := time.Now().Add(timeout)
	for {
		err := ready()
		if err == nil {
			return
		}
		if !d.running() {
			t.Fatalf("wait for %s: %v (last check: %v)", what, d.exitErr(), err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("wait for %s: not ready after %v: %v", what, timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
