package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// The versions scripts/install-test-deps.sh builds, each in its own
// directory under the tools dir.
const (
	containerd2Version = "v2.2.9"
	crictlVersion      = "v1.34.0"
)

const installHint = "run scripts/install-test-deps.sh as root"

// toolsDir is where scripts/install-test-deps.sh puts the tools it builds.
func toolsDir() string {
	if d := os.Getenv("MIRRORD_TOOLS_DIR"); d != "" {
		return d
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return filepath.Join(".cache", "mirrord-tools")
	}
	return filepath.Join(home, ".cache", "mirrord-tools")
}

// lookTool returns the path of the program name in PATH, failing the test
// when it is missing.
func lookTool(t *testing.T, name string) string {
	t.Helper()

	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("tool %s not found in PATH: %v; %s", name, err, installHint)
	}
	return p
}

// lookTools checks that every named program is in PATH.
func lookTools(t *testing.T, names ...string) {
	t.Helper()

	for _, n := range names {
		lookTool(t, n)
	}
}

// builtTool returns the path of a tool that scripts/install-test-deps.sh
// builds into <tools dir>/<dir>/bin, failing the test when it is missing.
func builtTool(t *testing.T, dir, name string) string {
	t.Helper()

	p := filepath.Join(toolsDir(), dir, "bin", name)
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("tool %s: %v; %s (or set MIRRORD_TOOLS_DIR)", name, err, installHint)
	}
	return p
}

// crictl returns the crictl that scripts/install-test-deps.sh built.
func crictl(t *testing.T) string {
	t.Helper()

	return builtTool(t, "crictl-"+crictlVersion, "crictl")
}

// majorVersion matches the first x.y.z version in a --version line.
var majorVersion = regexp.MustCompile(`\bv?(\d+)\.\d+\.\d+`)

// toolVersion runs "bin --version" and returns its output and the major
// version in it, failing the test when there is none.
func toolVersion(t *testing.T, bin string) (line, major string) {
	t.Helper()

	out, err := exec.Command(bin, "--version").CombinedOutput()
	line = strings.TrimSpace(string(out))
	if err != nil {
		t.Fatalf("%s --version: %v: %s", bin, err, line)
	}

	m := majorVersion.FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("%s --version: no version in %q", bin, line)
	}
	return line, m[1]
}
