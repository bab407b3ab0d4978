package systemdtest

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// enabled is true when the environment asks for the end-to-end tests.
var enabled = os.Getenv("MIRRORD_E2E") == "1"

// Where the tests find what they put into each machine, relative to this
// package's directory (go test runs in it).
const (
	mirrordPkg   = "../../cmd/mirrord"
	rootfsScript = "../../scripts/build-rootfs.sh"
)

// unitsDir holds the unit files put into every machine.
var unitsDir = flag.String("units", "../../packaging/systemd",
	"directory of the mirrord unit files to test")

const buildHint = "run scripts/build-rootfs.sh as root, or set MIRRORD_ROOTFS"

// Set once by TestMain when enabled.
var (
	mirrordBin string // the static mirrord binary under test
	buildDir   string // where builds go; removed when the tests end
	rootfs     string // the cached root filesystem, the overlays' lower layer
	setupErr   error  // why the machines cannot run; every test fails with it
)

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

// runMain builds mirrord and finds the root filesystem, runs the tests and
// removes the build; it is apart from TestMain so that its defers run before
// os.Exit. A setup failure does not stop here: each test reports it.
func runMain(m *testing.M) int {
	flag.Parse()
	if !enabled {
		return m.Run()
	}

	dir, err := os.MkdirTemp("", "mirrord-systemd-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "systemdtest: make build dir: %v\n", err)
		return 1
	}
	defer os.RemoveAll(dir)

	setupErr = setup(dir)
	return m.Run()
}

// setup checks for root, finds (or builds) the root filesystem, checks
// the host tools and builds mirrord into dir.
func setup(dir string) error {
	if os.Geteuid() != 0 {
		return errors.New("MIRRORD_E2E=1 needs root: the tests mount overlays and boot machines")
	}

	// The script also installs the host tools, so run it before looking
	// for them.
	rootfs = os.Getenv("MIRRORD_ROOTFS")
	if rootfs == "" {
		p, err := runBuildScript()
		if err != nil {
			return err
		}
		rootfs = p
	}
	if _, err := os.Stat(filepath.Join(rootfs, "usr/lib/systemd/systemd")); err != nil {
		return fmt.Errorf("root filesystem %s has no systemd: %w; %s", rootfs, err, buildHint)
	}

	var missing []string
	for _, tool := range []string{"systemd-nspawn", "nsenter", "unshare", "mount"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("host tools not found in PATH: %s; %s",
			strings.Join(missing, ", "), buildHint)
	}

	sweepCgroups()
	buildDir = dir
	mirrordBin = filepath.Join(dir, "mirrord")
	return goBuild(mirrordBin, mirrordPkg)
}

// runBuildScript runs scripts/build-rootfs.sh, which returns at once when
// the tree is cached, and returns the path it prints last.
func runBuildScript() (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()

	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "bash", rootfsScript)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("scripts/build-rootfs.sh: %w\n%s%s", err, stdout.Bytes(),
			stderr.Bytes())
	}

	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	p := lines[len(lines)-1]
	if !filepath.IsAbs(p) {
		return "", fmt.Errorf("scripts/build-rootfs.sh printed %q, want the rootfs path", p)
	}
	return p, nil
}

// goBuild builds the package in pkg into the static binary out.
func goBuild(out, pkg string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", out, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %w\n%s", pkg, err, b)
	}
	return nil
}

// requireMachines skips the test unless MIRRORD_E2E=1 and fails it when
// the setup of TestMain failed.
func requireMachines(t *testing.T) {
	t.Helper()

	if !enabled {
		t.Skip("end-to-end test under systemd: set MIRRORD_E2E=1 and run as root")
	}
	if setupErr != nil {
		t.Fatal(setupErr)
	}
}
