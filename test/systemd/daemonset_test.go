package systemdtest

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/mirrord/mirrord/internal/kubelettest"
)

// Where the DaemonSet test finds the manifests, the image script and the
// pod starter, relative to this package's directory.
const (
	manifestsDir   = "../../deploy/kubernetes"
	imageScript    = "../../scripts/build-image.sh"
	podstartPkg    = "./podstart"
	podDir         = "/var/lib/mirrord-podtest" // in the machine
	podExitTimeout = 30 * time.Second
)

// podSpec is test/systemd/podstart's input; see that package.
type podSpec struct {
	Root   string     `json:"root"`
	Mounts []podMount `json:"mounts"`
	Argv   []string   `json:"argv"`
	Env    []string   `json:"env"`
}

type podMount struct {
	Source   string `json:"source,omitempty"`
	Target   string `json:"target"`
	ReadOnly bool   `json:"readOnly,omitempty"`
	Tmpfs    bool   `json:"tmpfs,omitempty"`
}

// pod is the DaemonSet's container running on a machine.
type pod struct {
	m      *machine
	cmd    *exec.Cmd
	exited chan struct{}
	log    string // file with the container's output
	pid    int    // the container's mirrord, as the host sees it
	env    []string
	volume *kubelettest.Volume // the ConfigMap volume, through the machine's root
}

// TestDaemonSet runs the DaemonSet of deploy/kubernetes on a booted Debian
// as its node: the binary is the one in the image scripts/build-image.sh
// builds, and the container is what the manifest says: its args and env,
// its hostPath volumes bound at their mount paths, the ConfigMap as a
// volume laid out as kubelet lays it out, the emptyDir, a read-only root,
// no capability at all, no_new_privs, a PID namespace of its own.
//
// It runs as a plain process in its own mount and PID namespaces
// (test/systemd/podstart), not under podman: the node's files and its /run
// live in the machine's private mount namespace, and Linux refuses to bind
// a mount of another mount namespace (EINVAL), so a podman on the host
// cannot be given the node's paths; a podman inside the machine would need
// the cached root filesystem to carry podman and its runtime. What this
// leaves out of a real pod: the runtime's seccomp filter, cgroup limits,
// and a container runtime's own view of the mounts. test/image runs the
// same image under podman.
//
// It shows mirrord in the pod reaching the node's systemd through the
// mounted bus socket with no capability, restarting containerd and
// reloading dockerd through D-Bus with every other setting of config.toml
// kept, the probe's mirrord health, a ConfigMap update applied without a
// restart, and the revert on stop once armed.
func TestDaemonSet(t *testing.T) {
	requireMachines(t)
	t.Parallel()
	ds, cm := readManifests(t)
	bin := imageBinary(t)
	podstart := filepath.Join(t.TempDir(), "podstart")
	if err := goBuild(podstart, podstartPkg); err != nil {
		t.Fatal(err)
	}

	m := bootMachine(t, machineOptions{})
	origConfig := m.readFile(configToml)
	_, daemonErr := os.Stat(m.hostPath(daemonJSON))
	runtimes := m.runtimeState()

	spec := map[string]string{}
	for k, v := range cm.Data {
		spec[k] = v
	}
	spec["mirrord.toml"] = fmt.Sprintf("[registries.\"docker.io\"]\nmirrors = [%q]\n", mirrorA)
	p := startPod(t, m, ds, spec, bin, podstart)

	t.Run("applies_through_dbus", func(t *testing.T) {
		m := m.in(t)
		runtimes.wantRestarted(m, containerd)
		runtimes.wantReloaded(m, docker)
		m.assertContainerdMirror(mirrorA)
		m.assertCRI()
		m.assertDockerMirrors(mirrorA)
		assertKeeps(t, origConfig, m.readFile(configToml))
		p.waitLog(t, "runtimes show the mirrors")
		for _, want := range []string{
			`msg="unit restarted" unit=containerd.service job_result=done`,
			`msg="unit reloaded" unit=docker.service job_result=done`} {
			if !strings.Contains(p.output(), want) {
				t.Errorf("the pod's log has no %q", want)
			}
		}
		runtimes = m.runtimeState()
	})

	t.Run("no_capabilities", func(t *testing.T) {
		st := p.status(t)
		for _, k := range []string{"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"} {
			if st[k] != "0000000000000000" {
				t.Errorf("mirrord in the pod: %s %s, want none", k, st[k])
			}
		}
		if st["NoNewPrivs"] != "1" || st["Uid"] == "" || strings.Fields(st["Uid"])[1] != "0" {
			t.Errorf("mirrord in the pod: NoNewPrivs %q Uid %q, want 1 and UID 0",
				st["NoNewPrivs"], st["Uid"])
		}
	})

	t.Run("liveness_probe", func(t *testing.T) {
		out := p.probe(t)
		if !strings.Contains(out, "alive: heartbeat") || !strings.Contains(out, "in sync") {
			t.Errorf("mirrord health printed:\n%s", out)
		}
	})

	t.Run("configmap_update", func(t *testing.T) {
		m := m.in(t)
		pid := p.pid
		spec["mirrord.toml"] = fmt.Sprintf("[registries.\"docker.io\"]\nmirrors = [%q]\n",
			mirrorB)
		if err := p.volume.Update(spec); err != nil {
			t.Fatal(err)
		}
		runtimes.wantReloaded(m, docker)
		m.assertContainerdMirror(mirrorB)
		m.assertDockerMirrors(mirrorB)
		runtimes.wantUntouched(m, containerd)
		if p.pid != pid || !p.running() {
			t.Errorf("the pod's mirrord restarted")
		}
		st := p.status(t)
		t.Logf("the pod's mirrord: VmRSS %s, VmHWM %s", st["VmRSS"], st["VmHWM"])
		runtimes = m.runtimeState()
	})

	t.Run("revert_on_stop", func(t *testing.T) {
		m := m.in(t)
		// dockerd keeps running: revert empties its mirrors with a reload
		// before it restores daemon.json (apply.RevertNode), and its proof
		// checks that dockerd dropped them.
		runtimes = m.unitStates(containerd, docker)
		spec["revert-on-stop"] = "true\n"
		if err := p.volume.Update(spec); err != nil {
			t.Fatal(err)
		}
		m.eventually(settleTimeout, "mirrord health to say armed", func() (bool, string) {
			out := p.probe(t)
			return strings.Contains(out, "revert on stop: ARMED"), out
		})

		p.stop(t)
		runtimes.wantRestarted(m, containerd)
		m.assertCRI()
		if got := m.readFile(configToml); got != origConfig {
			t.Errorf("%s after the revert on stop, want it byte for byte as before:\n%s",
				configToml, got)
		}
		if _, err := os.Stat(m.hostPath(dockerHosts)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s still there after the revert: %v", dockerHosts, err)
		}
		if _, err := os.Stat(m.hostPath(daemonJSON)); errors.Is(err, os.ErrNotExist) !=
			errors.Is(daemonErr, os.ErrNotExist) {
			t.Errorf("%s: %v after the revert, %v before", daemonJSON, err, daemonErr)
		}
		if !strings.Contains(p.output(), "node reverted") {
			t.Errorf("the pod's log does not say the node was reverted")
		}
		if got := m.dockerMirrors(); len(got) > 0 {
			t.Errorf("dockerd still has mirrors %v after the revert", got)
		}
		if pid := m.prop(docker, "MainPID"); pid != runtimes[docker].MainPID {
			t.Errorf("dockerd restarted by the revert (MainPID %s, was %s)", pid,
				runtimes[docker].MainPID)
		}
	})

	t.Logf("the pod's log:\n%s", p.output())
}

// readManifests decodes the DaemonSet and the ConfigMap of deploy/kubernetes.
func readManifests(t *testing.T) (appsv1.DaemonSet, corev1.ConfigMap) {
	t.Helper()

	var ds appsv1.DaemonSet
	var cm corev1.ConfigMap
	for file, obj := range map[string]any{"daemonset.yaml": &ds, "configmap.yaml": &cm} {
		data, err := os.ReadFile(filepath.Join(manifestsDir, file))
		if err != nil {
			t.Fatal(err)
		}
		if err := yaml.UnmarshalStrict(data, obj); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
	}
	return ds, cm
}

// imageBinary builds the image as CI does and returns the /mirrord of the
// host's platform, read from the OCI layout.
func imageBinary(t *testing.T) []byte {
	t.Helper()

	out := t.TempDir()
	cmd := exec.Command("bash", imageScript)
	cmd.Env = append(hostEnv(), "OUT="+out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build-image.sh: %v\n%s", err, b)
	}

	root, err := layout.ImageIndexFromPath(filepath.Join(out, "oci"))
	if err != nil {
		t.Fatal(err)
	}
	top, err := root.IndexManifest()
	if err != nil || len(top.Manifests) != 1 {
		t.Fatalf("index.json: %v (%d entries)", err, len(top.Manifests))
	}
	idx, err := root.ImageIndex(top.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range im.Manifests {
		if d.Platform == nil || d.Platform.Architecture != runtime.GOARCH {
			continue
		}
		img, err := idx.Image(d.Digest)
		if err != nil {
			t.Fatal(err)
		}
		rc := mutate.Extract(img)
		defer rc.Close()
		tr := tar.NewReader(rc)
		for {
			hdr, err := tr.Next()
			if err != nil {
				t.Fatalf("image %s: no /mirrord: %v", d.Digest, err)
			}
			if strings.TrimPrefix(hdr.Name, "/") == "mirrord" {
				b, err := io.ReadAll(tr)
				if err != nil {
					t.Fatal(err)
				}
				t.Logf("image %s (%s): /mirrord, %d bytes", d.Digest, d.Platform, len(b))
				return b
			}
		}
	}
	t.Fatalf("image index has no linux/%s image", runtime.GOARCH)
	return nil
}

// startPod lays out the container in the machine from the DaemonSet and
// starts it; the pod is stopped (SIGKILL, no revert) when the test ends if
// it still runs.
func startPod(t *testing.T, m *machine, ds appsv1.DaemonSet, cmData map[string]string,
	bin []byte, podstart string) *pod {
	t.Helper()

	ps := ds.Spec.Template.Spec
	c := ps.Containers[0]
	m.putLive(podDir+"/rootfs/mirrord", bin, 0o755)
	m.putLive(podDir+"/podstart", []byte(read(t, podstart)), 0o755)
	spec := podSpec{Root: podDir + "/rootfs", Argv: append([]string{"/mirrord"}, c.Args...)}

	p := &pod{m: m, exited: make(chan struct{}), log: filepath.Join(t.TempDir(), "pod.log")}
	vols := map[string]corev1.Volume{}
	for _, v := range ps.Volumes {
		vols[v.Name] = v
	}
	for _, vm := range c.VolumeMounts {
		v := vols[vm.Name]
		mnt := podMount{Target: vm.MountPath, ReadOnly: vm.ReadOnly}
		switch {
		case v.HostPath != nil:
			// kubelet's part: make a DirectoryOrCreate path, check a Directory.
			if v.HostPath.Type != nil && *v.HostPath.Type == corev1.HostPathDirectoryOrCreate {
				m.run("mkdir", "-p", v.HostPath.Path)
			} else {
				m.run("test", "-d", v.HostPath.Path)
			}
			mnt.Source = v.HostPath.Path
		case v.ConfigMap != nil:
			mnt.Source = podDir + "/configmap"
			vol, err := kubelettest.New(m.hostPath(mnt.Source), cmData)
			if err != nil {
				t.Fatal(err)
			}
			p.volume = vol
		case v.EmptyDir != nil:
			mnt.Tmpfs = true
		default:
			t.Fatalf("volume %s: a kind this test cannot make", v.Name)
		}
		spec.Mounts = append(spec.Mounts, mnt)
	}
	p.env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"HOSTNAME=" + m.name}
	for _, e := range c.Env {
		p.env = append(p.env, e.Name+"="+e.Value)
	}
	spec.Env = p.env
	js, err := json.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	m.putLive(podDir+"/pod.json", js, 0o644)

	logFile, err := os.Create(p.log)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	p.cmd = exec.Command("nsenter", "--target", strconv.Itoa(m.leader), "--mount", "--",
		"unshare", "--mount", "--propagation", "slave", "--pid", "--fork", "--kill-child",
		podDir+"/podstart", podDir+"/pod.json")
	p.cmd.Env = guestEnv
	p.cmd.Stdout, p.cmd.Stderr = logFile, logFile
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start the pod: %v", err)
	}
	go func() {
		p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		if p.running() {
			syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
			<-p.exited
		}
	})

	m.eventually(leaderTimeout, "the pod's mirrord to start", func() (bool, string) {
		select {
		case <-p.exited:
			t.Fatalf("the pod exited at start: %v\n%s", p.cmd.ProcessState, p.output())
		default:
		}
		p.pid = findComm(p.cmd.Process.Pid, "mirrord", 2)
		return p.pid != 0, p.output()
	})
	return p
}

// putLive writes a file into the running machine, through its root.
func (m *machine) putLive(path string, data []byte, mode os.FileMode) {
	m.t.Helper()

	p := m.hostPath(path)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		m.t.Fatal(err)
	}
	if err := os.WriteFile(p, data, mode); err != nil {
		m.t.Fatal(err)
	}
}

func read(t *testing.T, file string) string {
	t.Helper()

	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func (p *pod) running() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// output is what the container printed so far.
func (p *pod) output() string {
	b, _ := os.ReadFile(p.log)
	return string(b)
}

func (p *pod) waitLog(t *testing.T, want string) {
	t.Helper()

	p.m.in(t).eventually(settleTimeout, "the pod to log "+want, func() (bool, string) {
		return strings.Contains(p.output(), want), p.output()
	})
}

// status returns the fields of /proc/PID/status of the pod's mirrord.
func (p *pod) status(t *testing.T) map[string]string {
	t.Helper()

	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.pid))
	if err != nil {
		t.Fatal(err)
	}
	st := map[string]string{}
	for line := range strings.Lines(string(b)) {
		k, v, _ := strings.Cut(line, ":")
		st[k] = strings.TrimSpace(v)
	}
	return st
}

// probe runs the liveness probe's command in the container, as kubelet's
// exec does: in its namespaces and root, with its environment.
func (p *pod) probe(t *testing.T) string {
	t.Helper()

	cmd := exec.Command("nsenter", "--target", strconv.Itoa(p.pid), "--mount", "--pid",
		"--root", "--wd", "--", "/mirrord", "health")
	cmd.Env = p.env
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("probe mirrord health: %v\n%s", err, out.String())
	}
	return out.String()
}

// stop sends SIGTERM to the container's mirrord, as kubelet does when the
// pod is deleted, and waits for it to exit with status 0.
func (p *pod) stop(t *testing.T) {
	t.Helper()

	if err := syscall.Kill(p.pid, syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM to the pod: %v", err)
	}
	select {
	case <-p.exited:
	case <-time.After(podExitTimeout):
		t.Fatalf("the pod still runs %v after SIGTERM:\n%s", podExitTimeout, p.output())
	}
	if !p.cmd.ProcessState.Success() {
		t.Errorf("the pod exited with %v:\n%s", p.cmd.ProcessState, p.output())
	}
}

// assertKeeps checks that every line of orig is still in got, in order:
// mirrord only adds to config.toml (its config_path), keeping every other
// setting.
func assertKeeps(t *testing.T, orig, got string) {
	t.Helper()

	rest := got
	for line := range strings.Lines(orig) {
		i := strings.Index(rest, line)
		if i < 0 {
			t.Errorf("config.toml lost or moved %q:\n%s", strings.TrimSpace(line), got)
			return
		}
		rest = rest[i+len(line):]
	}
	t.Logf("config.toml keeps every line of the original (%d bytes, now %d)", len(orig),
		len(got))
}
