package systemdtest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// Bounds on a machine's life; a boot normally takes about a second and a
// poweroff two.
const (
	leaderTimeout   = 15 * time.Second
	bootTimeout     = 60 * time.Second
	poweroffTimeout = 20 * time.Second
	commandTimeout  = 60 * time.Second
)

// guestEnv is the environment of every command run in a machine: none of
// the test process's variables (MIRRORD_* above all) leak in.
var guestEnv = []string{
	"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
	"LANG=C.UTF-8",
	"TERM=dumb",
	"SYSTEMD_PAGER=",
	"SYSTEMD_COLORS=0",
}

// machineSeq numbers machines so that parallel tests get unique names.
var machineSeq atomic.Int32

// machineOptions says what to put into a machine before it boots.
type machineOptions struct {
	// mirrors, if not empty, is written to /etc/default/mirrord as
	// MIRRORD_MIRRORS.
	mirrors string

	// enable lists units of packaging/systemd to enable, with links in the
	// .wants directory of each target their [Install] WantedBy= names.
	enable []string

	// bare leaves out the mirrord binary and its units, and with them
	// enable and mirrors: for tests that install mirrord from the deb.
	bare bool

	// files are written into the machine before boot, by their path in it,
	// with mode 0644 and their directories 0755.
	files map[string]string

	// nspawnArgs are added to systemd-nspawn's options.
	nspawnArgs []string
}

// machine is a booted systemd-nspawn container: an overlay of the cached
// root filesystem with an upper layer in the test's temp dir.
type machine struct {
	t       *testing.T
	name    string
	upper   string // the overlay's upper layer: what the machine changed
	console string // file with nspawn's output and the console
	cgroups []string

	cmd    *exec.Cmd     // systemd-nspawn, in its own session
	exited chan struct{} // closed when cmd has exited
	leader int           // PID of the machine's systemd, 0 until found
}

// bootMachine prepares an overlay with mirrord, its units and the options,
// boots it with systemd-nspawn and waits until systemd reports the system
// running. The machine is powered off, its processes killed and its overlay
// and cgroups removed when the test ends; if the test failed, the machine's
// journal is added to the test log first.
func bootMachine(t *testing.T, o machineOptions) *machine {
	t.Helper()
	requireMachines(t)

	dir := t.TempDir()
	m := &machine{
		t:       t,
		name:    fmt.Sprintf("mirrord-%d-%d", os.Getpid(), machineSeq.Add(1)),
		upper:   filepath.Join(dir, "upper"),
		console: filepath.Join(dir, "console.log"),
		exited:  make(chan struct{}),
	}
	t.Logf("machine %s: overlay on %s in %s", m.name, rootfs, dir)

	work, merged := filepath.Join(dir, "work"), filepath.Join(dir, "merged")
	for _, d := range []string{m.upper, work, merged} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	m.populate(o)
	m.cgroups = makeCgroups(t, m.name)
	t.Cleanup(m.shutdown)

	m.start(work, merged, o.nspawnArgs)

	m.leader = m.findLeader()
	m.waitRunning()
	return m
}

// populate fills the upper layer before boot: the mirrord binary, the units,
// their enablement links, /etc/default/mirrord and the other files.
func (m *machine) populate(o machineOptions) {
	t := m.t
	t.Helper()

	for path, data := range o.files {
		m.put(path, data, 0o644)
	}
	if o.bare {
		return
	}

	bin, err := os.ReadFile(mirrordBin)
	if err != nil {
		t.Fatal(err)
	}
	m.put("/usr/bin/mirrord", string(bin), 0o755)

	units, err := filepath.Glob(filepath.Join(*unitsDir, "*.service"))
	if err != nil || len(units) == 0 {
		t.Fatalf("no units in packaging/systemd (%s): %v", *unitsDir, err)
	}
	for _, u := range units {
		data, err := os.ReadFile(u)
		if err != nil {
			t.Fatal(err)
		}
		m.put("/usr/lib/systemd/system/"+filepath.Base(u), string(data), 0o644)
	}

	for _, unit := range o.enable {
		m.enable(unit)
	}
	if o.mirrors != "" {
		m.put("/etc/default/mirrord", "MIRRORD_MIRRORS="+strconv.Quote(o.mirrors)+"\n", 0o644)
	}
}

// put writes a file into the upper layer, by its path in the machine.
func (m *machine) put(path, data string, mode os.FileMode) {
	m.t.Helper()

	p := filepath.Join(m.upper, path)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		m.t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(data), mode); err != nil {
		m.t.Fatal(err)
	}
}

// enable links a unit of packaging/systemd into the .wants directory of
// each target in its WantedBy=, as "systemctl enable" would.
func (m *machine) enable(unit string) {
	m.t.Helper()

	data, err := os.ReadFile(filepath.Join(*unitsDir, unit))
	if err != nil {
		m.t.Fatalf("enable %s: %v", unit, err)
	}
	targets := installTargets(string(data))
	if len(targets) == 0 {
		m.t.Fatalf("enable %s: no WantedBy= in its [Install] section", unit)
	}

	for _, target := range targets {
		link := filepath.Join(m.upper, "etc/systemd/system", target+".wants", unit)
		if err := os.MkdirAll(filepath.Dir(link), 0o755); err != nil {
			m.t.Fatal(err)
		}
		if err := os.Symlink("/usr/lib/systemd/system/"+unit, link); err != nil {
			m.t.Fatal(err)
		}
	}
}

// installTargets returns the targets named by WantedBy= in a unit file's
// [Install] section.
func installTargets(unit string) []string {
	var targets []string
	section := ""
	for line := range strings.Lines(unit) {
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, "[") {
			section = line
			continue
		}
		v, ok := strings.CutPrefix(line, "WantedBy=")
		if ok && section == "[Install]" {
			targets = append(targets, strings.Fields(v)...)
		}
	}
	return targets
}

// start mounts the overlay in a private mount namespace that lives as long
// as systemd-nspawn, moves the process into the machine's own cgroups and
// boots the machine, with the extra systemd-nspawn options. Nothing is
// mounted in the test's mount namespace, so nothing is left mounted
// whatever happens to the test.
func (m *machine) start(work, merged string, extra []string) {
	t := m.t
	t.Helper()

	const script = `set -e
for f in $MT_CGROUPS; do echo $$ >"$f"; done
mount -t overlay overlay -o "lowerdir=$MT_LOWER,upperdir=$MT_UPPER,workdir=$MT_WORK" "$MT_MERGED"
exec systemd-nspawn "$@"`
	args := []string{"--mount", "--propagation", "private", "sh", "-c", script, "sh",
		"--boot", "--directory=" + merged, "--machine=" + m.name,
		"--register=no", "--keep-unit", "--private-network", "--console=read-only"}
	args = append(args, extra...)

	console, err := os.Create(m.console)
	if err != nil {
		t.Fatal(err)
	}
	defer console.Close()

	m.cmd = exec.Command("unshare", args...)
	m.cmd.Env = append(hostEnv(),
		"MT_CGROUPS="+strings.Join(m.cgroups, " "),
		"MT_LOWER="+rootfs, "MT_UPPER="+m.upper, "MT_WORK="+work, "MT_MERGED="+merged)
	m.cmd.Stdout, m.cmd.Stderr = console, console
	// If the test process dies without its cleanups, nspawn gets SIGTERM,
	// on which it powers the machine off.
	m.cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Pdeathsig: syscall.SIGTERM}
	if err := m.cmd.Start(); err != nil {
		m.cmd = nil
		t.Fatalf("start systemd-nspawn: %v", err)
	}

	go func() {
		m.cmd.Wait()
		close(m.exited)
	}()
}

// hostEnv is the test's environment less mirrord's own variables.
func hostEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "MIRRORD_") {
			env = append(env, kv)
		}
	}
	return env
}

// findLeader waits for the machine's init: the child of systemd-nspawn
// (or of the helper it forks first) whose comm is systemd.
func (m *machine) findLeader() int {
	m.t.Helper()

	deadline := time.Now().Add(leaderTimeout)
	for time.Now().Before(deadline) {
		select {
		case <-m.exited:
			m.t.Fatalf("machine %s: systemd-nspawn exited during boot: %v\n%s",
				m.name, m.cmd.ProcessState, m.consoleTail())
		default:
		}

		if pid := findComm(m.cmd.Process.Pid, "systemd", 2); pid != 0 {
			return pid
		}
		time.Sleep(20 * time.Millisecond)
	}
	m.t.Fatalf("machine %s: no systemd under systemd-nspawn after %v\n%s",
		m.name, leaderTimeout, m.consoleTail())
	return 0
}

// findComm returns the first descendant of pid, at most depth levels down,
// whose comm is name, or 0.
func findComm(pid int, name string, depth int) int {
	if depth == 0 {
		return 0
	}
	for _, c := range children(pid) {
		comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", c))
		if err == nil && strings.TrimSpace(string(comm)) == name {
			return c
		}
		if p := findComm(c, name, depth-1); p != 0 {
			return p
		}
	}
	return 0
}

// children returns the PIDs whose parent is pid.
func children(pid int) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}

	var kids []int
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p))
		if err != nil {
			continue
		}
		// The fields after the last ')' are: state, ppid, ...
		i := bytes.LastIndexByte(stat, ')')
		f := strings.Fields(string(stat[i+1:]))
		if len(f) > 1 && f[1] == strconv.Itoa(pid) {
			kids = append(kids, p)
		}
	}
	return kids
}

// waitRunning waits until systemd in the machine finished starting up and
// fails the test unless the state is running or degraded; for degraded it
// logs the failed units.
func (m *machine) waitRunning() {
	t := m.t
	t.Helper()

	start := time.Now()
	deadline := start.Add(bootTimeout)
	var state string
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithDeadline(context.Background(), deadline)
		out, _ := m.exec(ctx, "", "systemctl", "is-system-running", "--wait")
		cancel()

		state = strings.TrimSpace(out)
		if state == "running" || state == "degraded" {
			break
		}
		// Before systemd listens on its socket, systemctl cannot connect.
		time.Sleep(50 * time.Millisecond)
	}

	switch state {
	case "running":
		t.Logf("machine %s: running after %v", m.name, time.Since(start).Round(time.Millisecond))
	case "degraded":
		t.Logf("machine %s: degraded after %v; failed units:\n%s", m.name,
			time.Since(start).Round(time.Millisecond), m.run("systemctl", "--failed", "--no-legend"))
	default:
		t.Fatalf("machine %s: not running after %v: %q", m.name, bootTimeout, state)
	}
}

// exec runs a command in all of the machine's namespaces with stdin, and
// returns its standard output, and its error output in the error.
func (m *machine) exec(ctx context.Context, stdin string, args ...string) (string, error) {
	nsargs := append([]string{"--target", strconv.Itoa(m.leader), "--all"}, args...)
	cmd := exec.CommandContext(ctx, "nsenter", nsargs...)
	cmd.Env = guestEnv
	cmd.Stdin = strings.NewReader(stdin)

	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err,
			strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// run runs a command in the machine and returns its standard output,
// failing the test if it fails.
func (m *machine) run(args ...string) string {
	m.t.Helper()

	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()

	out, err := m.exec(ctx, "", args...)
	if err != nil {
		m.t.Fatalf("machine %s: %v", m.name, err)
	}
	return out
}

// output runs a command in the machine and returns its standard output
// whatever its exit status: for commands like "systemctl status" that
// exit non-zero to report a state.
func (m *machine) output(args ...string) string {
	m.t.Helper()

	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()

	out, err := m.exec(ctx, "", args...)
	if err != nil {
		return out + "\n(" + err.Error() + ")"
	}
	return out
}

// sh runs a shell script in the machine, failing the test if it fails.
func (m *machine) sh(script string) string {
	m.t.Helper()

	return m.run("sh", "-c", script)
}

// writeFile replaces the content of a file in the machine as an
// administrator would, by truncating and writing it from inside.
func (m *machine) writeFile(path, data string) {
	m.t.Helper()

	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()

	if _, err := m.exec(ctx, data, "sh", "-c", `cat >"$1"`, "sh", path); err != nil {
		m.t.Fatalf("machine %s: write %s: %v", m.name, path, err)
	}
}

// readFile returns a file of the machine, read through its root.
func (m *machine) readFile(path string) string {
	m.t.Helper()

	b, err := os.ReadFile(m.hostPath(path))
	if err != nil {
		m.t.Fatalf("machine %s: %v", m.name, err)
	}
	return string(b)
}

// hostPath is where the test process sees a path of the running machine.
func (m *machine) hostPath(path string) string {
	return fmt.Sprintf("/proc/%d/root%s", m.leader, path)
}

// props returns unit properties from "systemctl show".
func (m *machine) props(unit string, names ...string) map[string]string {
	m.t.Helper()

	args := []string{"systemctl", "show", unit}
	for _, n := range names {
		args = append(args, "-p", n)
	}

	got := map[string]string{}
	for line := range strings.Lines(m.run(args...)) {
		k, v, ok := strings.Cut(strings.TrimSpace(line), "=")
		if ok {
			got[k] = v
		}
	}
	for _, n := range names {
		if _, ok := got[n]; !ok {
			m.t.Fatalf("machine %s: systemctl show %s: no property %s", m.name, unit, n)
		}
	}
	return got
}

// prop returns one unit property from "systemctl show".
func (m *machine) prop(unit, name string) string {
	m.t.Helper()

	return m.props(unit, name)[name]
}

// uintProp returns a numeric unit property.
func (m *machine) uintProp(unit, name string) uint64 {
	m.t.Helper()

	v := m.prop(unit, name)
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		m.t.Fatalf("machine %s: %s %s=%q: not a number", m.name, unit, name, v)
	}
	return n
}

// journal returns the machine's journal of this boot, or of one unit.
func (m *machine) journal(unit string) string {
	m.t.Helper()

	args := []string{"journalctl", "-b", "--no-pager", "-o", "short-monotonic"}
	if unit != "" {
		args = append(args, "-u", unit)
	}
	return m.output(args...)
}

// consoleTail returns the end of nspawn's output, for boot failures.
func (m *machine) consoleTail() string {
	b, err := os.ReadFile(m.console)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(string(b), "\n")
	return strings.Join(lines[max(0, len(lines)-40):], "\n")
}

// shutdown logs the journal if the test failed, powers the machine off,
// and kills what is left of it by PID: systemd-nspawn's session and every
// process in the machine's cgroups. The overlay goes with the mount
// namespace of the last process.
func (m *machine) shutdown() {
	t := m.t

	switch {
	case t.Failed() && m.leader != 0:
		t.Logf("machine %s: journal of this boot:\n%s", m.name, m.journal(""))
	case t.Failed():
		t.Logf("machine %s: console:\n%s", m.name, m.consoleTail())
	}

	if m.leader != 0 {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		m.exec(ctx, "", "systemctl", "poweroff", "--no-block")
		cancel()
	}

	if m.cmd != nil {
		select {
		case <-m.exited:
		case <-time.After(poweroffTimeout):
			t.Logf("machine %s: still up %v after poweroff; killing it", m.name,
				poweroffTimeout)
			syscall.Kill(-m.cmd.Process.Pid, syscall.SIGKILL)
			<-m.exited
		}
	}

	if err := removeCgroups(m.cgroups); err != nil {
		t.Errorf("machine %s: %v", m.name, err)
	}
}

// makeCgroups makes a cgroup named name below the test process's own in
// each hierarchy systemd-nspawn uses (the named systemd hierarchy of cgroup
// v1 and the unified one), so that machines booted side by side with
// --keep-unit do not share one, and returns their cgroup.procs files.
func makeCgroups(t *testing.T, name string) []string {
	t.Helper()

	parents, err := cgroupParents()
	if err != nil {
		t.Fatalf("make cgroup for machine %s: %v", name, err)
	}

	var procs []string
	for _, parent := range parents {
		dir := filepath.Join(parent, name)
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatalf("make cgroup for machine %s: %v", name, err)
		}
		procs = append(procs, filepath.Join(dir, "cgroup.procs"))
	}
	return procs
}

// cgroupParents returns the test process's own cgroup directories in the
// unified hierarchy and in the named systemd hierarchy, where mounted.
func cgroupParents() ([]string, error) {
	mounts, err := cgroupMounts()
	if err != nil {
		return nil, err
	}
	self, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return nil, err
	}

	var parents []string
	for line := range strings.Lines(string(self)) {
		f := strings.SplitN(strings.TrimSpace(line), ":", 3)
		if len(f) != 3 {
			continue
		}
		// f[1] is "" for the unified hierarchy, "name=systemd" for v1.
		if mnt, ok := mounts[f[1]]; ok {
			parents = append(parents, filepath.Join(mnt, f[2]))
		}
	}
	if len(parents) == 0 {
		return nil, errors.New("no cgroup2 or name=systemd hierarchy mounted")
	}
	return parents, nil
}

// sweepCgroups removes the empty cgroups that machines of earlier runs left
// when their test process was killed (its machines then power off on their
// own, see start). Cgroups that still hold processes are left alone.
func sweepCgroups() {
	parents, err := cgroupParents()
	if err != nil {
		return
	}
	for _, parent := range parents {
		dirs, _ := filepath.Glob(filepath.Join(parent, "mirrord-*-*"))
		for _, dir := range dirs {
			if len(cgroupPIDs(dir)) == 0 {
				removeTree(dir)
			}
		}
	}
}

// cgroupMounts returns the mount points of the unified hierarchy (key "")
// and of the named systemd hierarchy (key "name=systemd").
func cgroupMounts() (map[string]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()

	mounts := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTS
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		pf, sf := strings.Fields(pre), strings.Fields(post)
		if len(pf) < 5 || len(sf) < 3 {
			continue
		}
		switch {
		case sf[0] == "cgroup2":
			mounts[""] = pf[4]
		case sf[0] == "cgroup" && slices.Contains(strings.Split(sf[2], ","), "name=systemd"):
			mounts["name=systemd"] = pf[4]
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read mountinfo: %w", err)
	}
	return mounts, nil
}

// removeCgroups kills every process left in the machine's cgroups and
// removes them, deepest first.
func removeCgroups(procs []string) error {
	var errs []error
	for _, p := range procs {
		dir := filepath.Dir(p)
		deadline := time.Now().Add(5 * time.Second)
		for {
			pids := cgroupPIDs(dir)
			if len(pids) == 0 {
				break
			}
			if time.Now().After(deadline) {
				errs = append(errs, fmt.Errorf("cgroup %s: processes %v survive SIGKILL", dir, pids))
				break
			}
			for _, pid := range pids {
				syscall.Kill(pid, syscall.SIGKILL)
			}
			time.Sleep(50 * time.Millisecond)
		}

		if err := removeTree(dir); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// removeTree removes a cgroup and the cgroups below it, deepest first
// (cgroupfs refuses RemoveAll: its files cannot be unlinked).
func removeTree(dir string) error {
	var subdirs []string
	filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			subdirs = append(subdirs, path)
		}
		return nil
	})

	var errs []error
	for _, d := range slices.Backward(subdirs) {
		if err := os.Remove(d); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("remove cgroup: %w", err))
		}
	}
	return errors.Join(errs...)
}

// cgroupPIDs returns the processes in a cgroup and below it.
func cgroupPIDs(dir string) []int {
	var pids []int
	filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.Name() != "cgroup.procs" {
			return nil
		}
		b, _ := os.ReadFile(path)
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil {
				pids = append(pids, pid)
			}
		}
		return nil
	})
	return pids
}
