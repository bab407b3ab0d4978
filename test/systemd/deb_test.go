package systemdtest

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

const buildDebScript = "../../scripts/build-deb.sh"

// The two builds the package tests install, the second over the first.
const (
	debVersionOld = "0.1.0~test1"
	debVersionNew = "0.1.0~test2"
)

// dpkgBound is how long one dpkg run may take; its maintainer scripts
// start units while the runtimes run, and a deadlock would last until a
// unit's start timeout.
const dpkgBound = 30 * time.Second

// Where the tests put the debs in a machine.
const (
	debOld = "/var/cache/mirrord/mirrord_old.deb"
	debNew = "/var/cache/mirrord/mirrord_new.deb"
)

var (
	debsOnce sync.Once
	debsErr  error
	debFiles map[string]string // version to the deb built for this machine
)

// debs builds, once per test run, the deb of this tree for this machine's
// architecture in both test versions, with scripts/build-deb.sh, and
// returns the files by version.
func debs(t *testing.T) map[string]string {
	t.Helper()
	requireMachines(t) // skips without MIRRORD_E2E, before anything is built

	debsOnce.Do(func() {
		debFiles = map[string]string{}
		for _, v := range []string{debVersionOld, debVersionNew} {
			deb, err := buildDeb(v)
			if err != nil {
				debsErr = err
				return
			}
			debFiles[v] = deb
		}
	})
	if debsErr != nil {
		t.Fatal(debsErr)
	}
	return debFiles
}

// buildDeb runs scripts/build-deb.sh for one version and returns the deb.
func buildDeb(version string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()

	dir := filepath.Join(buildDir, "deb-"+version)
	cmd := exec.CommandContext(ctx, "bash", buildDebScript)
	cmd.Env = append(os.Environ(), "VERSION="+version, "ARCHES="+runtime.GOARCH, "DIST="+dir)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("scripts/build-deb.sh: %w\n%s%s", err, stdout.Bytes(),
			stderr.Bytes())
	}
	deb := strings.TrimSpace(stdout.String())
	if _, err := os.Stat(deb); err != nil {
		return "", fmt.Errorf("scripts/build-deb.sh printed %q: %w", deb, err)
	}
	return deb, nil
}

// debMachineFiles returns the files that put both debs into a machine.
func debMachineFiles(t *testing.T) map[string]string {
	t.Helper()

	files := map[string]string{}
	for version, path := range map[string]string{debVersionOld: debOld, debVersionNew: debNew} {
		data, err := os.ReadFile(debs(t)[version])
		if err != nil {
			t.Fatal(err)
		}
		files[path] = string(data)
	}
	return files
}

// operatorDaemonJSON is a daemon.json an operator wrote before mirrord, in
// a layout of their own that mirrord must keep byte for byte.
const operatorDaemonJSON = `{
    "log-level":   "warn",
    "max-concurrent-downloads": 4
}
`

// A drop-in an operator puts in place before installing the package, as
// cloud-init's write_files would.
const (
	dropIn     = "/etc/mirrord/conf.d/50-mirrors.toml"
	dropInTOML = `[registries."docker.io"]
mirrors = ["` + mirrorA + `"]
`
)

// operatorTOML is what the operator writes into the packaged
// /etc/mirrord/mirrord.toml: a registry of its own, which needs no runtime
// action (only a hosts.toml).
const operatorTOML = `# Edited by the operator.
[registries."quay.io"]
mirrors = ["` + mirrorB + `"]
`

func TestDebLifecycle(t *testing.T) {
	t.Parallel()
	files := debMachineFiles(t)
	files[daemonJSON] = operatorDaemonJSON
	files[dropIn] = dropInTOML
	m := bootMachine(t, machineOptions{bare: true, files: files})

	before := map[string]string{configToml: m.readFile(configToml),
		daemonJSON: m.readFile(daemonJSON)}
	m.assertAbsent(certsDir, "/var/lib/mirrord")
	runtimes := m.runtimeState()

	t.Run("install", func(t *testing.T) {
		m := m.in(t)
		m.dpkg("-i", debOld)

		m.assertUnits(debVersionOld)
		runtimes.wantRestarted(m, containerd)
		runtimes.wantReloaded(m, docker)
		m.assertContainerdMirror(mirrorA)
		m.assertCRI()
		m.assertDaemonJSON(mirrorA)
		m.assertDockerMirrors(mirrorA)
		m.logStatus()
		runtimes = m.runtimeState()
	})

	t.Run("edit_config", func(t *testing.T) {
		m := m.in(t)
		m.writeFile("/etc/mirrord/mirrord.toml", operatorTOML)

		// The watch follows the file; quay.io needs a hosts.toml only.
		quay := certsDir + "/quay.io/hosts.toml"
		m.eventually(settleTimeout, "the watch to write "+quay, func() (bool, string) {
			b, err := os.ReadFile(m.hostPath(quay))
			if err != nil {
				return false, err.Error()
			}
			return strings.Contains(string(b), mirrorB), string(b)
		})
		m.waitIdle()
		runtimes.wantUntouched(m, containerd)
		runtimes.wantUntouched(m, docker)
	})

	t.Run("upgrade", func(t *testing.T) {
		m := m.in(t)
		watchBefore := m.identities(watchUnit)[watchUnit]
		applyBefore := m.identities(applyUnit)[applyUnit]
		m.dpkg("-i", debNew)

		if got := m.readFile("/etc/mirrord/mirrord.toml"); got != operatorTOML {
			t.Errorf("/etc/mirrord/mirrord.toml after the upgrade:\n%s\nwant the operator's:\n%s",
				got, operatorTOML)
		}
		leftovers := m.sh("ls /etc/mirrord/*.dpkg-* /etc/default/*.dpkg-* 2>/dev/null || true")
		if leftovers != "" {
			t.Errorf("dpkg left new conffile versions beside the operator's:\n%s", leftovers)
		}

		m.assertUnits(debVersionNew)
		watchAfter := m.identities(watchUnit)[watchUnit]
		if watchAfter.InvocationID == watchBefore.InvocationID {
			t.Errorf("%s was not restarted by the upgrade: still invocation %s", watchUnit,
				watchAfter.InvocationID)
		}
		if exe := m.mainExe(watchUnit); exe != "/usr/bin/mirrord" {
			t.Errorf("%s runs %s, want the new /usr/bin/mirrord", watchUnit, exe)
		}
		if got := m.identities(applyUnit)[applyUnit]; got != applyBefore {
			t.Errorf("%s ran again on upgrade (%+v, was %+v); the watch applies", applyUnit,
				got, applyBefore)
		}

		// Nothing in the spec changed, so neither runtime was touched.
		m.waitIdle()
		runtimes.wantUntouched(m, containerd)
		runtimes.wantUntouched(m, docker)
		m.assertContainerdMirror(mirrorA)
		m.assertDockerMirrors(mirrorA)
		m.logStatus()
	})

	t.Run("remove", func(t *testing.T) {
		m := m.in(t)
		m.dpkg("--remove", "mirrord")

		for _, unit := range []string{applyUnit, watchUnit} {
			got := m.props(unit, "ActiveState", "LoadState")
			want := map[string]string{"ActiveState": "inactive", "LoadState": "masked"}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("%s after remove (-want +got):\n%s", unit, diff)
			}
		}
		m.assertAbsent("/usr/bin/mirrord")
		// The runtimes keep their mirrors; nothing changes them now.
		m.waitIdle()
		runtimes.wantUntouched(m, containerd)
		runtimes.wantUntouched(m, docker)
		m.assertContainerdMirror(mirrorA)
		m.assertDockerMirrors(mirrorA)
	})

	t.Run("purge", func(t *testing.T) {
		m := m.in(t)
		m.dpkg("--purge", "mirrord")

		for path, want := range before {
			if got := m.readFile(path); got != want {
				t.Errorf("%s after purge differs from before the install:\n%s",
					path, cmp.Diff(want, got))
			}
		}
		m.assertAbsent(certsDir, "/var/lib/mirrord", "/etc/mirrord/mirrord.toml",
			"/etc/default/mirrord")
		if out := m.sh("ls /etc/systemd/system/*/mirrord* /etc/systemd/system/mirrord* " +
			"2>/dev/null || true"); out != "" {
			t.Errorf("unit links left after purge:\n%s", out)
		}
		// The operator's own drop-in is theirs to remove.
		if got := m.readFile(dropIn); got != dropInTOML {
			t.Errorf("%s changed by the purge:\n%s", dropIn, got)
		}

		// Back on the old config: containerd restarted without config_path,
		// dockerd with no mirrors.
		runtimes.wantRestarted(m, containerd)
		if dump := m.run("containerd", "config", "dump"); configPathLine.MatchString(dump) {
			t.Errorf("containerd still has config_path after purge:\n%s", dump)
		}
		m.assertCRI()
		m.eventually(settleTimeout, "dockerd to drop its mirrors", func() (bool, string) {
			got := m.dockerMirrors()
			return len(got) == 0, strings.Join(got, " ")
		})
	})
}

// dpkg runs dpkg in the machine with its output in the test log, and fails
// the test if it fails or takes longer than dpkgBound.
func (m *machine) dpkg(args ...string) {
	m.t.Helper()

	ctx, cancel := context.WithTimeout(context.Background(), dpkgBound+15*time.Second)
	defer cancel()

	start := time.Now()
	argv := append([]string{"timeout", dpkgBound.String(), "dpkg"}, args...)
	// One stream keeps the order of dpkg's lines and its scripts'.
	out, err := m.exec(ctx, "", append([]string{"sh", "-c", `"$@" 2>&1`, "sh"}, argv...)...)
	took := time.Since(start).Round(time.Millisecond)
	m.t.Logf("dpkg %s took %v:\n%s", strings.Join(args, " "), took, out)
	if err != nil {
		m.t.Fatalf("dpkg %s: %v\njobs:\n%s", strings.Join(args, " "), err,
			m.output("systemctl", "list-jobs"))
	}
}

// assertUnits checks that both units are enabled and up, the apply having
// succeeded, and that the installed binary is version.
func (m *machine) assertUnits(version string) {
	m.t.Helper()

	m.waitIdle()
	want := map[string]map[string]string{
		applyUnit: {"ActiveState": "active", "SubState": "exited", "Result": "success",
			"UnitFileState": "enabled"},
		watchUnit: {"ActiveState": "active", "SubState": "running", "Result": "success",
			"UnitFileState": "enabled"},
	}
	for unit, w := range want {
		got := m.props(unit, "ActiveState", "SubState", "Result", "UnitFileState")
		if diff := cmp.Diff(w, got); diff != "" {
			m.t.Errorf("%s (-want +got):\n%s\n%s", unit, diff, m.journal(unit))
		}
	}

	first, _, _ := strings.Cut(m.run("mirrord", "version"), "\n")
	if first != "mirrord "+version {
		m.t.Errorf("mirrord version: %q, want \"mirrord %s\"", first, version)
	}
}

// logStatus puts what an operator checking the node sees into the test log.
func (m *machine) logStatus() {
	m.t.Helper()

	m.t.Logf("systemctl status %s %s:\n%s", applyUnit, watchUnit,
		m.output("systemctl", "status", applyUnit, watchUnit))
	m.t.Logf("mirrord status:\n%s", m.output("mirrord", "status"))
}

// assertAbsent checks that none of the paths exists in the machine.
func (m *machine) assertAbsent(paths ...string) {
	m.t.Helper()

	for _, p := range paths {
		if _, err := os.Lstat(m.hostPath(p)); err == nil {
			m.t.Errorf("%s exists, want it absent:\n%s", p, m.output("ls", "-la", p))
		}
	}
}

// mainExe returns the executable of a unit's main process as the machine
// sees it; a binary replaced since the process started ends in "(deleted)".
func (m *machine) mainExe(unit string) string {
	m.t.Helper()

	pid := m.prop(unit, "MainPID")
	return strings.TrimSpace(m.run("readlink", "/proc/"+pid+"/exe"))
}
