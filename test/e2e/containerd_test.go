package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

// hostsTOML is the file a docker.io mirror change should touch, relative to
// the root mirrord works on.
const hostsTOML = "etc/containerd/certs.d/docker.io/hosts.toml"

// TestContainerd16 runs the containerd scenario on Debian's containerd 1.x
// (1.6 on Debian 12), found in PATH.
func TestContainerd16(t *testing.T) {
	requireE2E(t)
	t.Parallel()

	bin := lookTool(t, "containerd")
	line, major := toolVersion(t, bin)
	if major != "1" {
		t.Fatalf("containerd in PATH is %q, want 1.x (Debian's containerd package); %s",
			line, installHint)
	}
	t.Log(line)

	testContainerd(t, containerdCase{bin: bin, ctr: lookTool(t, "ctr")})
}

// TestContainerd2 runs the containerd scenario on the containerd 2.x that
// scripts/install-test-deps.sh builds.
func TestContainerd2(t *testing.T) {
	requireE2E(t)
	t.Parallel()

	bin := builtTool(t, "containerd-"+containerd2Version, "containerd")
	line, major := toolVersion(t, bin)
	if major != "2" {
		t.Fatalf("%s is %q, want 2.x", bin, line)
	}
	t.Log(line)

	testContainerd(t, containerdCase{
		bin: bin,
		ctr: builtTool(t, "containerd-"+containerd2Version, "ctr"),
		// 2.x makes /run/nri/nri.sock whatever its root and state, so two
		// instances on one machine collide.
		adjust: func(t *testing.T, cfg string) string {
			return setTOMLKey(t, cfg, "plugins.'io.containerd.nri.v1.nri'", "disable", "true")
		},
		native: func(t *testing.T, cfg string) string {
			cfg = setTOMLKey(t, cfg, "plugins.'io.containerd.cri.v1.images'", "snapshotter",
				"'native'")
			// CRI pulls unpack through the transfer service, which has an
			// unpack platform for the default snapshotter only.
			return cfg + fmt.Sprintf(`
[[plugins.'io.containerd.transfer.v1.local'.unpack_config]]
  platform = 'linux/%s'
  snapshotter = 'native'
`, runtime.GOARCH)
		},
	})
}

// containerdCase is one containerd version under test.
type containerdCase struct {
	bin string // the containerd binary
	ctr string // a ctr that talks to it

	// crictl is the crictl to pull with; testContainerd sets it.
	crictl string

	// adjust, if set, edits the default config before mirrord sees it, for
	// what must differ on a test machine: never mirrord's part.
	adjust func(t *testing.T, cfg string) string

	// native edits the config to use the native snapshotter instead of
	// overlayfs, for a machine where overlayfs cannot work; nil means the
	// version 2 config's way.
	native func(t *testing.T, cfg string) string
}

// testContainerd is the containerd scenario. From the version's own default
// config, mirrord sets a mirror; containerd started with the result pulls
// through it over the CRI. Then mirrord switches to a second mirror, which
// must touch hosts.toml only and ask for no restart, and the same running
// containerd pulls through the new mirror.
func testContainerd(t *testing.T, c containerdCase) {
	lookTools(t, "unshare", "sh", "mount")
	c.crictl = crictl(t)

	ns := newNetns(t)
	reg1 := startRegistry(t, ns, 5000)

	root := t.TempDir()
	mustWrite(t, filepath.Join(root, "etc/containerd/config.toml"), c.config(t))

	// mirrord writes the first mirror; containerd needs a restart for it.
	env1 := mirrorEnv(reg1.addr, "containerd")
	out, errOut := mirrord(t, env1, "apply", "--root", root, "--no-reload")
	requireAction(t, out+errOut, "restart containerd.service")
	logFile(t, filepath.Join(root, hostsTOML))

	before := snapshot(t, root, "etc")
	out, errOut = mirrord(t, env1, "apply", "--root", root, "--no-reload")
	requireNoAction(t, out+errOut, "containerd.service")
	requireChanged(t, "second apply with the same mirror", before, snapshot(t, root, "etc"))

	// containerd, started with that config, pulls through the first mirror.
	ctrd := startContainerd(t, ns, c, root)
	ctrd.crictl(t, "pull", imageRef)
	reg1.requireRequest(t, "HEAD", manifestPath("ns=docker.io"), "containerd/")

	// A new mirror changes hosts.toml only, which needs no restart.
	reg2 := startRegistry(t, ns, 5001)
	env2 := mirrorEnv(reg2.addr, "containerd")

	before = snapshot(t, root, "etc")
	out, errOut = mirrord(t, env2, "plan", "--root", root)
	requireDiffAdds(t, out+errOut, reg2.addr)
	requireChanged(t, "plan", before, snapshot(t, root, "etc"))

	out, errOut = mirrord(t, env2, "apply", "--root", root, "--no-reload")
	requireNoAction(t, out+errOut, "containerd.service")
	requireChanged(t, "apply of a new mirror", before, snapshot(t, root, "etc"), hostsTOML)

	// The same containerd, not restarted, pulls through the new mirror.
	seen1 := len(reg1.requests(t))
	ctrd.crictl(t, "rmi", imageRef)
	ctrd.crictl(t, "pull", imageRef)
	reg2.requireRequest(t, "HEAD", manifestPath("ns=docker.io"), "containerd/")

	if late := reg1.requests(t)[seen1:]; len(late) > 0 {
		t.Errorf("old mirror %s still got %d requests after the switch, first %+v",
			reg1.addr, len(late), late[0])
	}
	if !ctrd.d.running() {
		t.Errorf("containerd: %v", ctrd.d.exitErr())
	}
}

// config returns the version's default config with the test's adjustments.
func (c containerdCase) config(t *testing.T) []byte {
	t.Helper()

	out, err := exec.Command(c.bin, "config", "default").Output()
	if err != nil {
		t.Fatalf("%s config default: %v", c.bin, err)
	}
	cfg := string(out)

	if c.adjust != nil {
		cfg = c.adjust(t, cfg)
	}

	// overlayfs cannot sit on overlayfs, as in a test run inside a container.
	if onOverlay(t, os.TempDir()) {
		if c.native != nil {
			cfg = c.native(t, cfg)
		} else {
			cfg = setTOMLKey(t, cfg, `plugins."io.containerd.grpc.v1.cri".containerd`,
				"snapshotter", `"native"`)
		}
	}
	return []byte(cfg)
}

// onOverlay reports whether dir is on an overlay filesystem.
func onOverlay(t *testing.T, dir string) bool {
	t.Helper()

	const overlayfsMagic = 0x794c7630
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatalf("statfs %s: %v", dir, err)
	}
	return st.Type == overlayfsMagic
}

// setTOMLKey sets key to value in the table whose header is [table], in a
// config as "containerd config default" prints it (one key per line, every
// table with a header). It fails the test if the key is not there, so a
// changed default cannot quietly undo an adjustment.
func setTOMLKey(t *testing.T, cfg, table, key, value string) string {
	t.Helper()

	lines := strings.Split(cfg, "\n")
	in := false
	for i, l := range lines {
		trimmed := strings.TrimSpace(l)
		if strings.HasPrefix(trimmed, "[") {
			in = trimmed == "["+table+"]"
			continue
		}
		if !in {
			continue
		}
		k, _, ok := strings.Cut(trimmed, "=")
		if ok && strings.TrimSpace(k) == key {
			indent := l[:len(l)-len(strings.TrimLeft(l, " \t"))]
			lines[i] = indent + key + " = " + value
			return strings.Join(lines, "\n")
		}
	}
	t.Fatalf("default config has no key %s in [%s]", key, table)
	return ""
}

// containerdProc is a containerd started for one test.
type containerdProc struct {
	d          *daemon
	sock       string // the gRPC socket
	ctrBin     string
	crictlBin  string
	crictlConf string // crictl's config: both endpoints on sock
}

// startContainerd starts cc.bin with the config under root, inside ns and in a
// mount namespace of its own where root's etc/containerd is bind-mounted on
// /etc/containerd: config_path is the absolute /etc/containerd/certs.d, so
// this is how it finds mirrord's hosts.toml files without touching the
// machine's. Root, state and socket are private to the test. It returns once
// the CRI plugin answers.
func startContainerd(t *testing.T, ns *netns, cc containerdCase, root string) *containerdProc {
	t.Helper()

	dir := t.TempDir()
	sock := filepath.Join(dir, "c.sock")
	c := &containerdProc{
		d:          &daemon{name: "containerd", log: filepath.Join(dir, "containerd.log")},
		sock:       sock,
		ctrBin:     cc.ctr,
		crictlBin:  cc.crictl,
		crictlConf: filepath.Join(dir, "crictl.yaml"),
	}

	crictlCfg := fmt.Sprintf("runtime-endpoint: unix://%s\nimage-endpoint: unix://%s\ntimeout: 30\n",
		sock, sock)
	mustWrite(t, c.crictlConf, []byte(crictlCfg))

	const script = `mkdir -p /etc/containerd && mount --bind "$1" /etc/containerd && shift && exec "$@"`
	argv := []string{"unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh",
		filepath.Join(root, "etc/containerd")}
	argv = append(argv, ns.argv(cc.bin,
		"--config", filepath.Join(root, "etc/containerd/config.toml"),
		"--address", sock,
		"--root", filepath.Join(dir, "root"),
		"--state", filepath.Join(dir, "state"),
		"--log-level", "debug",
	)...)
	startDaemon(t, c.d, argv)

	c.d.waitFor(t, "containerd socket", 20*time.Second, func() error {
		_, err := c.ctr("version")
		return err
	})
	c.d.requireProgram(t, cc.bin)

	// A CRI plugin that fails to load leaves containerd up and its socket
	// answering; ctr lists it with status error. Other plugins may fail by
	// default (devmapper with no pool on 1.x), so only the CRI's count.
	out, err := c.ctr("plugins", "ls")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		cri := strings.Contains(line, "cri") || strings.Contains(line, "sandbox")
		if len(f) > 0 && f[len(f)-1] == "error" && cri {
			t.Fatalf("containerd's CRI failed to load: %s", line)
		}
	}

	c.d.waitFor(t, "containerd CRI", 10*time.Second, func() error {
		_, err := c.run("version")
		return err
	})
	return c
}

// ctr runs ctr with args against the containerd.
func (c *containerdProc) ctr(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	cmd := exec.CommandContext(ctx, c.ctrBin, append([]string{"--address", c.sock}, args...)...)
	cmd.Env = cleanEnv()
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("ctr %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// run runs crictl with args against the containerd.
func (c *containerdProc) run(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	cmd := exec.CommandContext(ctx, c.crictlBin, append([]string{"--config", c.crictlConf}, args...)...)
	cmd.Env = cleanEnv()
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("crictl %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// crictl runs crictl with args against the containerd, failing the test if
// it fails.
func (c *containerdProc) crictl(t *testing.T, args ...string) string {
	t.Helper()

	out, err := c.run(args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}
