package e2e

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// daemonJSON is a daemon.json as an operator might leave it, with keys
// mirrord must keep. bridge and iptables also keep dockerd from touching
// networking in the test's namespace.
const daemonJSON = `{
  "log-driver": "json-file",
  "log-opts": {
    "max-size": "10m",
    "max-file": "3"
  },
  "exec-opts": ["native.cgroupdriver=cgroupfs"],
  "max-concurrent-downloads": 4,
  "bridge": "none",
  "iptables": false,
  "labels": ["mirrord-e2e=true"]
}
`

// TestDockerd checks that dockerd 20.10, started with the daemon.json
// mirrord wrote, pulls through the mirror, and that after a mirror change
// a SIGHUP makes it use the new mirror while a running container keeps its
// PID.
func TestDockerd(t *testing.T) {
	requireE2E(t)
	t.Parallel()

	lookTools(t, "dockerd", "docker", "containerd", "containerd-shim-runc-v2", "runc")
	line, _ := toolVersion(t, lookTool(t, "dockerd"))
	t.Log(line)

	ns := newNetns(t)
	reg1 := startRegistry(t, ns, 5000)

	root := t.TempDir()
	config := filepath.Join(root, "etc/docker/daemon.json")
	mustWrite(t, config, []byte(daemonJSON))

	// mirrord writes the first mirror; dockerd would need a reload.
	out, errOut := mirrord(t, mirrorEnv(reg1.addr, "docker"), "apply", "--root", root, "--no-reload")
	requireAction(t, out+errOut, "reload docker.service")
	logFile(t, config)

	before := snapshot(t, root, "etc")
	out, errOut = mirrord(t, mirrorEnv(reg1.addr, "docker"), "apply", "--root", root, "--no-reload")
	requireNoAction(t, out+errOut, "docker.service")
	requireChanged(t, "second apply with the same mirror", before, snapshot(t, root, "etc"))

	// dockerd, started with that file, pulls through the first mirror.
	dkr := startDockerd(t, ns, config)
	dkr.docker(t, "pull", imageRef)
	reg1.requireRequest(t, "", manifestPath(""), "docker/")

	id := strings.TrimSpace(dkr.docker(t, "run", "-d", "--network", "none", imageRef))
	t.Cleanup(func() {
		// Before dockerd stops: its containers would outlive it.
		if _, err := dkr.run("rm", "-f", id); err != nil {
			t.Error(err)
		}
	})
	pid := dkr.docker(t, "inspect", "--format", "{{.State.Pid}}", id)

	// A new mirror needs a reload, which SIGHUP is.
	reg2 := startRegistry(t, ns, 5001)
	out, errOut = mirrord(t, mirrorEnv(reg2.addr, "docker"), "apply", "--root", root, "--no-reload")
	requireAction(t, out+errOut, "reload docker.service")
	requireNoAction(t, out+errOut, "containerd.service")
	logFile(t, config)

	if err := syscall.Kill(dkr.d.pid(), syscall.SIGHUP); err != nil {
		t.Fatalf("SIGHUP dockerd: %v", err)
	}
	want := fmt.Sprintf("http://%s/", reg2.addr)
	var mirrors string
	dkr.d.waitFor(t, "dockerd to reload "+want, 10*time.Second, func() error {
		var err error
		mirrors, err = dkr.run("info", "--format", "{{json .RegistryConfig.Mirrors}}")
		if err != nil {
			return err
		}
		if !strings.Contains(mirrors, want) {
			return fmt.Errorf("mirrors are %s", strings.TrimSpace(mirrors))
		}
		return nil
	})
	if strings.Contains(mirrors, reg1.addr) {
		t.Errorf("after the reload dockerd still has the old mirror: %s", mirrors)
	}

	// The container went on as it was, and pulls go to the new mirror.
	if got := dkr.docker(t, "inspect", "--format", "{{.State.Pid}}", id); got != pid {
		t.Errorf("container PID after the reload = %s, want %s (unchanged)",
			strings.TrimSpace(got), strings.TrimSpace(pid))
	}
	seen1 := len(reg1.requests(t))
	dkr.docker(t, "pull", imageRef)
	reg2.requireRequest(t, "", manifestPath(""), "docker/")
	if late := reg1.requests(t)[seen1:]; len(late) > 0 {
		t.Errorf("old mirror %s still got %d requests after the reload, first %+v",
			reg1.addr, len(late), late[0])
	}
}

// dockerdProc is a dockerd started for one test.
type dockerdProc struct {
	d    *daemon
	host string // the -H address
}

// startDockerd starts dockerd inside ns with config as its --config-file
// and data root, exec root, pidfile and socket private to the test. It
// starts its own containerd from PATH. It returns once the API answers.
func startDockerd(t *testing.T, ns *netns, config string) *dockerdProc {
	t.Helper()

	dir := t.TempDir()
	c := &dockerdProc{
		d:    &daemon{name: "dockerd", log: filepath.Join(dir, "dockerd.log")},
		host: "unix://" + filepath.Join(dir, "d.sock"),
	}
	startDaemon(t, c.d, ns.argv("dockerd",
		"--config-file", config,
		"--data-root", filepath.Join(dir, "data"),
		"--exec-root", filepath.Join(dir, "x"),
		"--pidfile", filepath.Join(dir, "dockerd.pid"),
		"-H", c.host,
	))

	c.d.waitFor(t, "dockerd API", 20*time.Second, func() error {
		_, err := c.run("version")
		return err
	})
	c.d.requireProgram(t, "dockerd")
	return c
}

// run runs the docker CLI with args against the dockerd.
func (c *dockerdProc) run(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	cmd := exec.CommandContext(ctx, "docker", append([]string{"-H", c.host}, args...)...)
	cmd.Env = cleanEnv()
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		return string(out), fmt.Errorf("docker %s: %w: %s%s", strings.Join(args, " "), err, out, stderr)
	}
	return string(out), nil
}

// docker runs the docker CLI with args against the dockerd, failing the
// test if it fails.
func (c *dockerdProc) docker(t *testing.T, args ...string) string {
	t.Helper()

	out, err := c.run(args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}
