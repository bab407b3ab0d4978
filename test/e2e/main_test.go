package e2e

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The image every test pulls, as docker.io/library/<imageName>:<imageTag>.
const (
	imageName = "mirrord-e2e-hello"
	imageTag  = "v1"
	imageRef  = "docker.io/library/" + imageName + ":" + imageTag
)

// enabled is true when the environment asks for the end-to-end tests.
var enabled = os.Getenv("MIRRORD_E2E") == "1"

// Built once by TestMain when enabled.
var (
	mirrordBin string // the mirrord binary under test
	imageDir   string // OCI image layout of the test image, tagged imageTag
)

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

// runMain builds what every test needs, runs the tests and removes the
// builds; it is apart from TestMain so that its defers run before os.Exit.
func runMain(m *testing.M) int {
	flag.Parse()
	if !enabled {
		return m.Run()
	}

	dir, err := os.MkdirTemp("", "mirrord-e2e-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: make build dir: %v\n", err)
		return 1
	}
	defer os.RemoveAll(dir)

	if err := buildAll(dir); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: %v\n", err)
		return 1
	}

	return m.Run()
}

// buildAll builds the mirrord binary and the test image into dir.
func buildAll(dir string) error {
	mirrordBin = filepath.Join(dir, "mirrord")
	if err := goBuild(mirrordBin, "../../cmd/mirrord"); err != nil {
		return err
	}

	hello := filepath.Join(dir, "hello")
	if err := goBuild(hello, "./testdata/hello"); err != nil {
		return err
	}

	imageDir = filepath.Join(dir, "image")
	if err := writeImageLayout(imageDir, imageTag, hello); err != nil {
		return fmt.Errorf("write image layout %s: %w", imageDir, err)
	}
	return nil
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

// requireE2E skips the test unless MIRRORD_E2E=1, and fails it when not
// run as root. Each test then checks for the tools it runs.
func requireE2E(t *testing.T) {
	t.Helper()

	if !enabled {
		t.Skip("end-to-end test: set MIRRORD_E2E=1 and run as root")
	}
	if os.Geteuid() != 0 {
		t.Fatal("MIRRORD_E2E=1 needs root: the tests make network namespaces and run daemons")
	}
}

// cleanEnv is the test process's environment less every variable that would
// change what the tools under test do: mirrord's own (MIRRORD_*) and the
// overrides docker-registry reads from any REGISTRY_* variable.
func cleanEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "MIRRORD_") || strings.HasPrefix(kv, "REGISTRY_") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, extra...)
}

// mustWrite writes data to path, making its directory, and fails the test
// if it cannot.
func mustWrite(t *testing.T, path string, data []byte) {
	t.Helper()

	if err := writeFile(path, data); err != nil {
		t.Fatal(err)
	}
}
