package faults

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// requireRoot skips a test that mounts filesystems unless MIRRORD_E2E=1,
// and fails it without root or unshare.
func requireRoot(t *testing.T) {
	t.Helper()

	if os.Getenv("MIRRORD_E2E") != "1" {
		t.Skip("mounts filesystems: set MIRRORD_E2E=1 and run as root")
	}
	if os.Geteuid() != 0 {
		t.Fatal("MIRRORD_E2E=1 needs root: the test mounts filesystems")
	}
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Fatal(err)
	}
}

// inMountNS runs a shell script in a private mount namespace, so that what
// it mounts goes with it, and returns its combined output. The script gets
// MIRRORD (the binary), NODE (examples/node) and OUT (a directory on the
// test's filesystem, to copy results into) in its environment.
func inMountNS(t *testing.T, script string) (string, string, error) {
	t.Helper()

	out := t.TempDir()
	node, err := filepath.Abs(exampleNode)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("unshare", "--mount", "--propagation", "private",
		"sh", "-euc", script)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "MIRRORD=" + mirrordBin,
		"NODE=" + node, "OUT=" + out}
	b, err := cmd.CombinedOutput()
	return out, string(b), err
}

func TestDiskFull(t *testing.T) {
	requireRoot(t)
	t.Parallel()

	original := readTree(t, copyNode(t), "/etc")
	done := copyNode(t)
	if r := runMirrord(t, mirrordBin, nil, "apply", "--root", done, "--no-reload"); r.err != nil {
		t.Fatalf("apply: %v\n%s", r.err, r.stderr)
	}
	final := readTree(t, done, "/etc")

	// A 1 MiB tmpfs as the node's root, filled up but for free KiB; the
	// apply's status, stderr and the tree after it are copied out.
	const script = `root=$(mktemp -d)
mount -t tmpfs -o size=1m tmpfs "$root"
cp -a "$NODE/." "$root/"
dd if=/dev/zero of="$root/filler" bs=1k count=2048 2>/dev/null || true
if [ "$FREE" -gt 0 ]; then
	truncate -s "-${FREE}k" "$root/filler"
fi
rc=0
"$MIRRORD" apply --root "$root" --no-reload >"$OUT/stdout" 2>"$OUT/stderr" || rc=$?
echo $rc >"$OUT/rc"
rm -f "$root/filler"
mkdir "$OUT/root"
cp -a "$root/." "$OUT/root/"
"$MIRRORD" apply --root "$root" --no-reload >/dev/null 2>"$OUT/stderr2"
mkdir "$OUT/again"
cp -a "$root/." "$OUT/again/"`

	failures := 0
	for _, free := range []string{"0", "4", "8", "12", "16", "24", "32", "48", "64"} {
		t.Run("free_"+free+"KiB", func(t *testing.T) {
			out, log, err := inMountNS(t, "FREE="+free+"\n"+script)
			if err != nil {
				t.Fatalf("script: %v\n%s", err, log)
			}
			rc := strings.TrimSpace(readFile(t, out, "rc"))
			stderr := readFile(t, out, "stderr")
			after := readTree(t, filepath.Join(out, "root"), "/etc")

			switch {
			case rc == "0":
				if diff := treeDiff(final, after); diff != "" {
					t.Errorf("apply succeeded but left:\n%s", diff)
				}
			default:
				failures++
				t.Logf("apply with %s KiB free: exit %s: %s", free, rc,
					strings.TrimSpace(stderr))
				if !strings.Contains(stderr, "no space left on device") {
					t.Errorf("apply's error does not say the disk is full:\n%s", stderr)
				}
				checkOldOrNew(t, "free "+free+" KiB", original, final, after)
				if free == "0" {
					if diff := treeDiff(original, after); diff != "" {
						t.Errorf("with no space at all, files changed:\n%s", diff)
					}
				}
			}
			if left := temps(readTree(t, filepath.Join(out, "root"), "/")); len(left) > 0 {
				t.Errorf("temporary files left behind: %v", left)
			}

			// With the space back, the next apply finishes the job.
			if diff := treeDiff(final, readTree(t, filepath.Join(out, "again"), "/etc")); diff != "" {
				t.Errorf("apply with space again left:\n%s\n%s", diff,
					readFile(t, out, "stderr2"))
			}
		})
	}
	if failures == 0 {
		t.Errorf("apply never ran out of space; the test no longer tests a full disk")
	}
}

func TestReadOnly(t *testing.T) {
	requireRoot(t)
	t.Parallel()

	original := readTree(t, copyNode(t), "/etc")
	for name, mount := range map[string]string{
		"etc_containerd": `mount --bind "$root/etc/containerd" "$root/etc/containerd"
mount -o remount,bind,ro "$root/etc/containerd"`,
		"whole_root": `mount --bind "$root" "$root"
mount -o remount,bind,ro "$root"`,
	} {
		t.Run(name, func(t *testing.T) {
			out, log, err := inMountNS(t, `root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
cp -a "$NODE/." "$root/"
`+mount+`
rc=0
"$MIRRORD" apply --root "$root" --no-reload >"$OUT/stdout" 2>"$OUT/stderr" || rc=$?
echo $rc >"$OUT/rc"
mkdir "$OUT/root"
cp -a "$root/." "$OUT/root/"
umount "$root/etc/containerd" 2>/dev/null || umount "$root"`)
			if err != nil {
				t.Fatalf("script: %v\n%s", err, log)
			}
			rc := strings.TrimSpace(readFile(t, out, "rc"))
			stderr := readFile(t, out, "stderr")
			t.Logf("apply on a read-only %s: exit %s: %s", name, rc, strings.TrimSpace(stderr))
			if rc == "0" {
				t.Fatalf("apply succeeded on a read-only filesystem")
			}
			if !strings.Contains(stderr, "read-only file system") {
				t.Errorf("apply's error does not say the filesystem is read-only:\n%s", stderr)
			}
			after := readTree(t, filepath.Join(out, "root"), "/etc")
			if diff := treeDiff(original, after); diff != "" && name == "whole_root" {
				t.Errorf("files changed on a read-only root:\n%s", diff)
			}
			if _, ok := after["/etc/containerd/config.toml"]; ok &&
				after["/etc/containerd/config.toml"] != original["/etc/containerd/config.toml"] {
				t.Errorf("config.toml changed on a read-only /etc/containerd")
			}
			if left := temps(readTree(t, filepath.Join(out, "root"), "/")); len(left) > 0 {
				t.Errorf("temporary files left behind: %v", left)
			}
		})
	}
}

// readFile returns a file under dir as a string.
func readFile(t *testing.T, dir, name string) string {
	t.Helper()

	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
