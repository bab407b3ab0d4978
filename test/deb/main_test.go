package debtest

import (
	"bytes"
	"context"
	"errors"
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

// Paths relative to this package's directory (go test runs in it).
const (
	repoRoot    = "../.."
	buildScript = "../../scripts/build-deb.sh"
)

// arches are the architectures the deb is built for.
var arches = []string{"amd64", "arm64"}

// pkg is one built deb, unpacked.
type pkg struct {
	arch string
	deb  string // the .deb file
	tree string // its contents unpacked by dpkg-deb -R: the files, and DEBIAN/
}

// Set once by TestMain when enabled.
var (
	pkgs     []pkg
	setupErr error // why the debs could not be built; every test fails with it
)

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

// runMain builds and unpacks the debs, runs the tests and removes the
// builds; it is apart from TestMain so that its defers run before os.Exit.
func runMain(m *testing.M) int {
	if !enabled {
		return m.Run()
	}

	dir, err := os.MkdirTemp("", "mirrord-deb-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "debtest: make build dir: %v\n", err)
		return 1
	}
	defer os.RemoveAll(dir)

	setupErr = setup(dir)
	return m.Run()
}

// setup checks the host tools, builds the debs into dir and unpacks each.
func setup(dir string) error {
	for _, tool := range []string{"lintian", "dpkg-deb", "man"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s not found: %w; run scripts/install-test-deps.sh as root",
				tool, err)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()

	start := time.Now()
	cmd := exec.CommandContext(ctx, "bash", buildScript)
	cmd.Env = append(os.Environ(), "DIST="+dir, "ARCHES="+strings.Join(arches, " "))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("scripts/build-deb.sh: %w\n%s%s", err, stdout.Bytes(), stderr.Bytes())
	}
	fmt.Printf("debtest: built %s in %v\n", strings.TrimSpace(stdout.String()),
		time.Since(start).Round(time.Millisecond))

	debs := strings.Fields(stdout.String())
	if len(debs) != len(arches) {
		return fmt.Errorf("scripts/build-deb.sh printed %q, want one deb per arch %v", debs,
			arches)
	}
	for i, deb := range debs {
		if !strings.HasSuffix(deb, "_"+arches[i]+".deb") {
			return fmt.Errorf("scripts/build-deb.sh built %s, want the %s deb", deb, arches[i])
		}
		tree := filepath.Join(dir, "tree-"+arches[i])
		if b, err := exec.Command("dpkg-deb", "-R", deb, tree).CombinedOutput(); err != nil {
			return fmt.Errorf("dpkg-deb -R %s: %w: %s", deb, err, b)
		}
		pkgs = append(pkgs, pkg{arch: arches[i], deb: deb, tree: tree})
	}
	return nil
}

// requireDebs skips the test unless MIRRORD_E2E=1 and fails it when the
// debs could not be built.
func requireDebs(t *testing.T) {
	t.Helper()

	if !enabled {
		t.Skip("deb test: set MIRRORD_E2E=1 (needs lintian and dpkg-deb)")
	}
	if setupErr != nil {
		t.Fatal(setupErr)
	}
	if len(pkgs) == 0 {
		t.Fatal(errors.New("no debs built"))
	}
}

// hostPkg returns the deb whose binary runs on this machine.
func hostPkg(t *testing.T) pkg {
	t.Helper()

	out, err := exec.Command("dpkg", "--print-architecture").Output()
	if err != nil {
		t.Fatalf("dpkg --print-architecture: %v", err)
	}
	arch := strings.TrimSpace(string(out))
	for _, p := range pkgs {
		if p.arch == arch {
			return p
		}
	}
	t.Skipf("no deb built for this machine's architecture %s", arch)
	return pkg{}
}
