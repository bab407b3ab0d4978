// Package golden compares what a test produced with a file under testdata,
// or rewrites the file when the test runs with -update. It is imported by
// tests only and never built into mirrord.
package golden

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata")

// Updating reports whether the test runs with -update: golden files are
// being rewritten, not compared.
func Updating() bool { return *update }

// Check compares got with the file at path and fails t on a difference or a
// missing file. With -update it writes got there instead, making the
// directories it needs.
func Check(t testing.TB, path string, got []byte) {
	t.Helper()

	if write(t, path, got) {
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	diff(t, path, want, got)
}

// CheckOptional is Check for output that is often empty: a missing file
// stands for no output.
func CheckOptional(t testing.TB, path string, got []byte) {
	t.Helper()

	if write(t, path, got) {
		return
	}
	want, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) && len(got) == 0 {
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	diff(t, path, want, got)
}

// write rewrites the file at path with got under -update, and reports
// whether it did.
func write(t testing.TB, path string, got []byte) bool {
	t.Helper()

	if !*update {
		return false
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, got, 0o644); err != nil {
		t.Fatal(err)
	}
	return true
}

func diff(t testing.TB, path string, want, got []byte) {
	t.Helper()

	if d := cmp.Diff(string(want), string(got)); d != "" {
		t.Errorf("%s differs (-want +got):\n%s", path, d)
	}
}
