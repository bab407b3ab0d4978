// Package imagetest builds mirrord's container image with
// scripts/build-image.sh, as CI does, and checks it: two builds of one tree
// give the same bytes, the script's listing shows one static binary per
// platform and nothing else, and podman runs the image for the host's
// architecture with every capability dropped, a read-only root and no
// network.
//
// It runs when MIRRORD_E2E=1, as root (podman runs rootful, with its
// storage in a temporary directory); it skips otherwise:
//
//	sudo MIRRORD_E2E=1 go test -v ./test/image/
package imagetest

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// script builds the image, relative to this package's directory.
const script = "../../scripts/build-image.sh"

// indexLine is the line of the script's output naming the index digest.
var indexLine = regexp.MustCompile(`(?m)^index (sha256:[0-9a-f]{64})$`)

func TestImageReproducibleAndRuns(t *testing.T) {
	if os.Getenv("MIRRORD_E2E") != "1" {
		t.Skip("builds the image and runs podman: set MIRRORD_E2E=1 and run as root")
	}
	if os.Geteuid() != 0 {
		t.Fatal("MIRRORD_E2E=1 needs root: podman runs rootful")
	}

	const version = "v0.0.0-imagetest"
	a, b := t.TempDir(), t.TempDir()
	outA := build(t, a, version)
	outB := build(t, b, version)
	t.Logf("build-image.sh:\n%s", outA)

	if da, db := digestOf(t, outA), digestOf(t, outB); da != db {
		t.Errorf("two builds gave index %s and %s, want one", da, db)
	}
	archive := filepath.Join(a, "mirrord.oci.tar")
	sa, sb := sum(t, archive), sum(t, filepath.Join(b, "mirrord.oci.tar"))
	if sa != sb {
		t.Errorf("two builds gave oci-archives %s and %s, want the same bytes", sa, sb)
	}
	fi, err := os.Stat(archive)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("oci-archive %d bytes (both platforms), sha256 %s", fi.Size(), sa)

	got := podmanRun(t, archive)
	if !strings.Contains(got, "mirrord "+version) {
		t.Errorf("podman run of the image printed %q, want the version %q", got, version)
	}
}

// build runs the script with its output in dir and returns what it printed;
// the script fails when imagebuild verify finds anything but the binary.
func build(t *testing.T, dir, version string) string {
	t.Helper()

	cmd := exec.Command("bash", script)
	cmd.Env = append(os.Environ(), "OUT="+dir, "VERSION="+version)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("build-image.sh: %v\n%s%s", err, stdout.Bytes(), stderr.Bytes())
	}
	return stdout.String()
}

func digestOf(t *testing.T, out string) string {
	t.Helper()

	m := indexLine.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("build-image.sh printed no index digest:\n%s", out)
	}
	return m[1]
}

func sum(t *testing.T, path string) string {
	t.Helper()

	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(data)
	return hex.EncodeToString(s[:])
}

// podmanRun runs the image's default command (mirrord version) with podman,
// confined as the DaemonSet confines it, and returns its output. Its
// storage, run root and signature policy are in a temporary directory; the
// open-file and process limits are set because the default (podman raises
// them to 1048576) exceeds what this host allows.
func podmanRun(t *testing.T, archive string) string {
	t.Helper()

	// Not t.TempDir: podman refuses a run root longer than 50 characters.
	dir, err := os.MkdirTemp("", "mirrord-image-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	policy := filepath.Join(dir, "policy.json")
	err = os.WriteFile(policy, []byte(`{"default":[{"type":"insecureAcceptAnything"}]}`), 0o644)
	if err != nil {
		t.Fatal(err)
	}

	cmd := exec.Command("podman", "--root", filepath.Join(dir, "s"),
		"--runroot", filepath.Join(dir, "r"), "--storage-driver", "vfs",
		"--cgroup-manager", "cgroupfs", "--events-backend", "none",
		"run", "--rm", "--quiet", "--signature-policy", policy, "--network", "none",
		"--cap-drop", "all", "--read-only", "--security-opt", "no-new-privileges",
		"--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024",
		"oci-archive:"+archive)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("podman run oci-archive:%s: %v\n%s", archive, err, out)
	}
	t.Logf("podman run (cap-drop all, read-only, no network):\n%s", out)
	return string(out)
}
