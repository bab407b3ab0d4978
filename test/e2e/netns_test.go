package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// netnsSeq makes network namespace names unique within the test process;
// the process ID makes them unique between processes.
var netnsSeq atomic.Int64

// netns is a network namespace made for one test, with only loopback up.
type netns struct {
	name string
	path string // the bind mount that ip netns keeps, /run/netns/<name>
}

// newNetns makes a network namespace with loopback up and deletes it when the
// test ends, after the cleanups registered later (the daemons in it) ran.
func newNetns(t *testing.T) *netns {
	t.Helper()
	lookTools(t, "ip", "nsenter")

	name := fmt.Sprintf("mirrord-e2e-%d-%d", os.Getpid(), netnsSeq.Add(1))
	if b, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, b)
	}
	t.Cleanup(func() {
		if b, err := exec.Command("ip", "netns", "delete", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns delete %s: %v: %s", name, err, b)
		}
	})

	if b, err := exec.Command("ip", "-n", name, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("ip -n %s link set lo up: %v: %s", name, err, b)
	}
	return &netns{name: name, path: "/run/netns/" + name}
}

// argv returns the command line that runs args inside the namespace.
//
// It uses nsenter rather than ip netns exec, which remounts /sys and so
// hides cgroup v1 mounts from dockerd. nsenter without --fork execs the
// program, so the process started is the program itself.
func (n *netns) argv(args ...string) []string {
	return append([]string{"nsenter", "--net=" + n.path, "--"}, args...)
}

// command returns a command that runs args inside the namespace, with the
// clean environment and a bound on its run time.
func (n *netns) command(ctx context.Context, args ...string) *exec.Cmd {
	argv := n.argv(args...)
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = cleanEnv()
	return cmd
}

// run runs args inside the namespace and returns its combined output,
// failing the test when it fails or runs longer than a minute.
func (n *netns) run(t *testing.T, args ...string) string {
	t.Helper()

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	out, err := n.command(ctx, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("in netns %s: %q: %v\n%s", n.name, args, err, out)
	}
	return string(out)
}

// listening reports, as an error, whether process pid is in the namespace
// and a TCP socket listens on 127.0.0.1:port there. It reads
// /proc/<pid>/net/tcp: once the socket listens, connections queue in the
// kernel.
func (n *netns) listening(pid, port int) error {
	// Until nsenter has entered the namespace, /proc/<pid>/net is the
	// machine's, where something else may listen on the port.
	in, err := sameFile(fmt.Sprintf("/proc/%d/ns/net", pid), n.path)
	if err != nil {
		return err
	}
	if !in {
		return fmt.Errorf("pid %d is not in netns %s yet", pid, n.name)
	}

	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/tcp", pid))
	if err != nil {
		return err
	}

	// Columns: sl local_address rem_address st ...; addresses are hex
	// host-order IPv4 and port; state 0A is LISTEN.
	want := fmt.Sprintf("0100007F:%04X", port)
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) > 3 && f[1] == want && f[3] == "0A" {
			return nil
		}
	}
	return fmt.Errorf("nothing listens on 127.0.0.1:%d in netns %s", port, n.name)
}

// sameFile reports whether two paths name the same file, following links.
func sameFile(a, b string) (bool, error) {
	ia, err := os.Stat(a)
	if err != nil {
		return false, err
	}
	ib, err := os.Stat(b)
	if err != nil {
		return false, err
	}
	return os.SameFile(ia, ib), nil
}
