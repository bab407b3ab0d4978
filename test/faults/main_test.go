package faults

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Where the tests find what they build and copy, relative to this package.
const (
	mirrordPkg  = "../../cmd/mirrord"
	exampleNode = "../../examples/node"
)

// The binaries under test, built once by TestMain.
var (
	mirrordBin string // a normal build
	crashBin   string // built with the crashtest tag
)

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

// runMain builds both binaries, runs the tests and removes the builds.
func runMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "mirrord-faults-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "faults: make build dir: %v\n", err)
		return 1
	}
	defer os.RemoveAll(dir)

	mirrordBin = filepath.Join(dir, "mirrord")
	crashBin = filepath.Join(dir, "mirrord-crashtest")
	for bin, tags := range map[string]string{mirrordBin: "", crashBin: "crashtest"} {
		if err := goBuild(bin, tags); err != nil {
			fmt.Fprintf(os.Stderr, "faults: %v\n", err)
			return 1
		}
	}
	return m.Run()
}

// goBuild builds mirrord into out with the given build tags.
func goBuild(out, tags string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	cmd := exec.CommandContext(ctx, "go", "build", "-tags="+tags, "-o", out, mirrordPkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build -tags=%q %s: %w\n%s", tags, mirrordPkg, err, b)
	}
	return nil
}

// result is how one mirrord run ended.
type result struct {
	stdout, stderr string
	err            error
	killed         bool // ended by SIGKILL
}

// runMirrord runs bin with args on root, with env added to a clean
// environment, and returns how it ended; a run over a minute fails the test.
func runMirrord(t *testing.T, bin string, env []string, args ...string) result {
	t.Helper()

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append([]string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}, env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("%s %v: no end after a minute\n%s", bin, args, stderr.String())
	}

	r := result{stdout: stdout.String(), stderr: stderr.String(), err: err}
	if ee, ok := err.(*exec.ExitError); ok {
		if ws, ok := ee.Sys().(interface{ Signaled() bool }); ok && ws.Signaled() {
			r.killed = true
		}
	}
	return r
}

// copyNode copies examples/node into a new temporary root.
func copyNode(t *testing.T) string {
	t.Helper()

	root := t.TempDir()
	if err := os.CopyFS(root, os.DirFS(exampleNode)); err != nil {
		t.Fatal(err)
	}
	return root
}

// tree maps the path of every regular file under dir (relative, with a
// leading slash) to its content.
type tree map[string]string

// readTree reads every regular file under root/sub.
func readTree(t *testing.T, root, sub string) tree {
	t.Helper()

	out := tree{}
	base := filepath.Join(root, sub)
	err := filepath.WalkDir(base, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		out[strings.TrimPrefix(p, root)] = string(b)
		return nil
	})
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return out
}

// temps returns the temporary files of mirrord's atomic writes under root.
func temps(t tree) []string {
	var out []string
	for p := range t {
		if strings.Contains(filepath.Base(p), ".mirrord-") {
			out = append(out, p)
		}
	}
	return out
}
