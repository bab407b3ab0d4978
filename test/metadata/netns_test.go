package metadatatest

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// The addresses of a namespace pair: the client's end, the peer's end, and
// the metadata address the client routes through the peer.
const (
	clientAddr   = "10.254.0.1/30"
	peerIP       = "10.254.0.2"
	peerAddr     = peerIP + "/30"
	metadataIP   = "169.254.169.254"
	metadataAddr = metadataIP + ":80"
)

// netnsSeq makes namespace names unique within the test process; the
// process ID makes them unique between processes.
var netnsSeq atomic.Int64

// netns is a network namespace made for one test, with loopback up.
type netns struct {
	name string
	path string // the bind mount ip netns keeps, /run/netns/<name>
}

// requireRoot skips the test unless MIRRORD_E2E=1, and then fails it
// unless it runs as root with ip and nsenter at hand.
func requireRoot(t *testing.T) {
	t.Helper()
	if !enabled {
		t.Skip("set MIRRORD_E2E=1 and run as root to make network namespaces")
	}
	if os.Geteuid() != 0 {
		t.Fatal("MIRRORD_E2E=1 needs root to make network namespaces")
	}
	for _, tool := range []string{"ip", "nsenter"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("MIRRORD_E2E=1 needs %s: %v", tool, err)
		}
	}
}

// newNetns makes a network namespace with loopback up and deletes it when
// the test ends.
func newNetns(t *testing.T) *netns {
	t.Helper()
	name := fmt.Sprintf("mirrord-md-%d-%d", os.Getpid(), netnsSeq.Add(1))
	if b, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, b)
	}
	t.Cleanup(func() {
		if b, err := exec.Command("ip", "netns", "delete", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns delete %s: %v: %s", name, err, b)
		}
	})

	n := &netns{name: name, path: "/run/netns/" + name}
	n.ip(t, "link", "set", "lo", "up")
	return n
}

// ip runs "ip -n <name> args...".
func (n *netns) ip(t *testing.T, args ...string) {
	t.Helper()
	argv := append([]string{"-n", n.name}, args...)
	if b, err := exec.Command("ip", argv...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(argv, " "), err, b)
	}
}

// pair makes a client namespace and a peer namespace joined by a veth,
// with the metadata address routed from the client to the peer. The peer
// does not forward and owns nothing but its end of the link, so it drops
// what the client sends to the metadata address without a word.
func pair(t *testing.T) (client, peer *netns) {
	t.Helper()
	client, peer = newNetns(t), newNetns(t)

	// Both ends are made inside the new namespaces: the machine's own
	// namespace is never touched.
	client.ip(t, "link", "add", "veth0", "type", "veth", "peer", "name", "veth0",
		"netns", peer.name)
	client.ip(t, "addr", "add", clientAddr, "dev", "veth0")
	client.ip(t, "link", "set", "veth0", "up")
	peer.ip(t, "addr", "add", peerAddr, "dev", "veth0")
	peer.ip(t, "link", "set", "veth0", "up")
	client.ip(t, "route", "add", metadataIP+"/32", "via", peerIP)

	if got := peer.output(t, "cat", "/proc/sys/net/ipv4/ip_forward"); got != "0" {
		t.Fatalf("peer forwards (ip_forward %q); the black hole needs it off", got)
	}
	return client, peer
}

// output runs args in the namespace and returns its trimmed output.
func (n *netns) output(t *testing.T, args ...string) string {
	t.Helper()
	argv := append([]string{"--net=" + n.path, "--"}, args...)
	b, err := exec.Command("nsenter", argv...).Output()
	if err != nil {
		t.Fatalf("in %s: %q: %v", n.name, args, err)
	}
	return strings.TrimSpace(string(b))
}

// childCmd returns the command that runs the test binary as a child in
// the namespace, in mode, with env added to the environment.
func (n *netns) childCmd(t *testing.T, ctx context.Context, mode string, env ...string) *exec.Cmd {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, "nsenter", "--net="+n.path, "--", exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), append([]string{childEnv + "=" + mode}, env...)...)
	return cmd
}

// run runs a "fetch" or "dial" child in the namespace and returns what it
// printed.
func (n *netns) run(t *testing.T, mode string, env ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	var stderr strings.Builder
	cmd := n.childCmd(t, ctx, mode, env...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("child %s in %s: %v\n%s", mode, n.name, err, stderr.String())
	}
	var r result
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("child %s printed %q: %v", mode, out, err)
	}
	return r
}

// serve starts the emulator of provider in the namespace on
// 169.254.169.254:80 and stops it when the test ends.
func (n *netns) serve(t *testing.T, provider string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := n.childCmd(t, ctx, "serve", childProvider+"="+provider, childAddr+"="+metadataAddr)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel() // kills the child we started
		_ = cmd.Wait()
	})

	ready := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(out).ReadString('\n')
		ready <- line
	}()
	select {
	case line := <-ready:
		if strings.TrimSpace(line) != "ready" {
			t.Fatalf("serving child said %q", line)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("serving child not ready after 30s")
	}
}
