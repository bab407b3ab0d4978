package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// mirrord runs the mirrord binary under test with args and the given
// MIRRORD_* variables (and no others from the test's environment), fails
// the test if it exits non-zero, and returns its stdout and stderr.
func mirrord(t *testing.T, env []string, args ...string) (stdout, stderr string) {
	t.Helper()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	cmd := exec.CommandContext(ctx, mirrordBin, args...)
	cmd.Env = cleanEnv(env...)
	var out, errOut bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &errOut

	err := cmd.Run()
	t.Logf("mirrord %s (env %q):\nstdout:\n%s\nstderr:\n%s",
		strings.Join(args, " "), env, out.String(), errOut.String())
	if err != nil {
		t.Fatalf("mirrord %s: %v", strings.Join(args, " "), err)
	}
	return out.String(), errOut.String()
}

// logFile logs the content of a file mirrord wrote, for the record.
func logFile(t *testing.T, path string) {
	t.Helper()

	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s:\n%s", path, b)
}

// mirrorEnv is the environment that gives mirrord one docker.io mirror,
// a plain-HTTP registry at addr, for the named runtimes.
func mirrorEnv(addr, runtimes string) []string {
	return []string{
		"MIRRORD_MIRRORS=docker.io=http://" + addr,
		"MIRRORD_RUNTIMES=" + runtimes,
	}
}

// fileState is what a snapshot keeps of a regular file.
type fileState struct {
	ModTime time.Time
	Sum     [sha256.Size]byte
}

// snapshot records every regular file under root/sub, by path relative to
// root.
func snapshot(t *testing.T, root, sub string) map[string]fileState {
	t.Helper()

	files := map[string]fileState{}
	err := filepath.WalkDir(filepath.Join(root, sub), func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		files[rel] = fileState{ModTime: info.ModTime(), Sum: sha256.Sum256(b)}
		return nil
	})
	if err != nil {
		t.Fatalf("snapshot %s: %v", filepath.Join(root, sub), err)
	}
	return files
}

// changed returns, sorted, the paths that differ between two snapshots in
// content or modification time, or that only one of them has.
func changed(before, after map[string]fileState) []string {
	var paths []string
	for p, b := range before {
		if a, ok := after[p]; !ok || !a.ModTime.Equal(b.ModTime) || a.Sum != b.Sum {
			paths = append(paths, p)
		}
	}
	for p := range after {
		if _, ok := before[p]; !ok {
			paths = append(paths, p)
		}
	}
	slices.Sort(paths)
	return paths
}

// requireChanged fails the test unless exactly the want paths changed
// between the two snapshots.
func requireChanged(t *testing.T, what string, before, after map[string]fileState, want ...string) {
	t.Helper()

	if want == nil {
		want = []string{}
	}
	got := changed(before, after)
	if got == nil {
		got = []string{}
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("%s: files changed (-want +got):\n%s", what, diff)
	}
}

// requireAction fails the test unless some line of out holds action.
func requireAction(t *testing.T, out, action string) {
	t.Helper()

	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, action) {
			return
		}
	}
	t.Errorf("mirrord output has no line with %q:\n%s", action, out)
}

// requireNoAction fails the test if some line of out asks to restart or
// reload unit.
func requireNoAction(t *testing.T, out, unit string) {
	t.Helper()

	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, "restart "+unit) || strings.Contains(line, "reload "+unit) {
			t.Errorf("mirrord output asks to act on %s, want no action: %q", unit, line)
		}
	}
}

// requireDiffAdds fails the test unless out holds a unified diff that adds
// a line containing text.
func requireDiffAdds(t *testing.T, out, text string) {
	t.Helper()

	var header, added bool
	for _, line := range strings.Split(out, "\n") {
		switch {
		case strings.HasPrefix(line, "+++ "):
			header = true
		case header && strings.HasPrefix(line, "+") && strings.Contains(line, text):
			added = true
		}
	}
	if !added {
		t.Errorf("mirrord output has no unified diff adding a line with %q:\n%s", text, out)
	}
}
