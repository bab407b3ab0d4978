package faults

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// maxPoints bounds the crash loop: far more crash points than any run here
// passes, so that a loop that never ends is a failure, not a hang.
const maxPoints = 500

// The runtime actions examples/node needs on its first apply.
var wantActions = []string{"restart containerd.service", "reload docker.service"}

// nodeState is the part of state.json the crash tests read.
type nodeState struct {
	Pending []struct {
		Unit string `json:"unit"`
		Verb string `json:"action"`
	} `json:"pending"`
	LastError string `json:"last_error"`
}

func TestCrashDuringApply(t *testing.T) {
	t.Parallel()

	// What a whole apply gives, and what the node had before.
	original := readTree(t, copyNode(t), "/etc")
	done := copyNode(t)
	if r := runMirrord(t, mirrordBin, nil, "apply", "--root", done, "--no-reload"); r.err != nil {
		t.Fatalf("apply: %v\n%s", r.err, r.stderr)
	}
	final := readTree(t, done, "/etc")

	points := 0
	for n := 1; n <= maxPoints; n++ {
		root := copyNode(t)
		r := runMirrord(t, crashBin, []string{"MIRRORD_CRASH_AT=" + strconv.Itoa(n)},
			"apply", "--root", root, "--no-reload")
		if !r.killed {
			if r.err != nil {
				t.Fatalf("crash point %d: apply failed without a crash: %v\n%s", n, r.err,
					r.stderr)
			}
			break // n is past the last crash point
		}
		points++
		where := strings.TrimSpace(r.stderr[strings.LastIndex(r.stderr, "crashpoint"):])

		// Every file is the old or the new version, whole.
		after := readTree(t, root, "/etc")
		checkOldOrNew(t, where, original, final, after)

		// A restart that the files on disk need is not lost.
		st := readState(t, root)
		if after["/etc/containerd/config.toml"] == final["/etc/containerd/config.toml"] &&
			!st.pending("restart", "containerd.service") && st.LastError != "" {
			t.Errorf("%s: config.toml is mirrord's but containerd's restart is not pending "+
				"(last error %q)", where, st.LastError)
		}

		// The next apply finishes the job and still reports the actions.
		r2 := runMirrord(t, mirrordBin, nil, "apply", "--root", root, "--no-reload")
		if r2.err != nil {
			t.Fatalf("%s: apply after the crash: %v\n%s", where, r2.err, r2.stderr)
		}
		again := readTree(t, root, "/etc")
		if diff := treeDiff(final, again); diff != "" {
			t.Errorf("%s: apply after the crash left (want the whole apply's files):\n%s",
				where, diff)
		}
		if st.pending("restart", "containerd.service") {
			for _, a := range wantActions {
				if !strings.Contains(r2.stdout, a) {
					t.Errorf("%s: apply after the crash does not report %q:\n%s", where, a,
						r2.stdout)
				}
			}
		}
		if left := temps(readTree(t, root, "/")); len(left) > 0 {
			t.Errorf("%s: temporary files left after the next apply: %v", where, left)
		}
		if st := readState(t, root); len(st.Pending) != 0 {
			t.Errorf("%s: actions still pending after the next apply: %+v", where, st.Pending)
		}

		// And revert still brings back the original node.
		r3 := runMirrord(t, mirrordBin, nil, "revert", "--root", root)
		if r3.err != nil {
			t.Fatalf("%s: revert: %v\n%s", where, r3.err, r3.stderr)
		}
		if diff := treeDiff(original, readTree(t, root, "/etc")); diff != "" {
			t.Errorf("%s: revert after the crash left (want the original files):\n%s",
				where, diff)
		}
	}

	if points == 0 || points >= maxPoints {
		t.Fatalf("apply passed %d crash points, want between 1 and %d", points, maxPoints)
	}
	t.Logf("apply killed at each of its %d crash points", points)
}

func TestCrashDuringRevert(t *testing.T) {
	t.Parallel()

	original := readTree(t, copyNode(t), "/etc")
	applied := func() string {
		root := copyNode(t)
		r := runMirrord(t, mirrordBin, nil, "apply", "--root", root, "--no-reload")
		if r.err != nil {
			t.Fatalf("apply: %v\n%s", r.err, r.stderr)
		}
		return root
	}
	final := readTree(t, applied(), "/etc")
	// Revert's first pass empties daemon.json's mirror settings (see
	// apply.RevertNode): that file has a third whole version, the one an
	// apply of an empty spec writes.
	emptied := readTree(t, emptiedNode(t, applied()), "/etc")
	midway := tree{}
	for p, data := range final {
		midway[p] = data
	}
	midway[daemonJSON] = emptied[daemonJSON]

	points := 0
	for n := 1; n <= maxPoints; n++ {
		root := applied()
		r := runMirrord(t, crashBin, []string{"MIRRORD_CRASH_AT=" + strconv.Itoa(n)},
			"revert", "--root", root)
		if !r.killed {
			if r.err != nil {
				t.Fatalf("crash point %d: revert failed without a crash: %v\n%s", n, r.err,
					r.stderr)
			}
			break
		}
		points++
		where := strings.TrimSpace(r.stderr[strings.LastIndex(r.stderr, "crashpoint"):])

		checkVersions(t, where, readTree(t, root, "/etc"), final, midway, original)

		r2 := runMirrord(t, mirrordBin, nil, "revert", "--root", root)
		if r2.err != nil {
			t.Fatalf("%s: revert after the crash: %v\n%s", where, r2.err, r2.stderr)
		}
		if diff := treeDiff(original, readTree(t, root, "/etc")); diff != "" {
			t.Errorf("%s: revert after the crash left (want the original files):\n%s",
				where, diff)
		}
		if left := temps(readTree(t, root, "/")); len(left) > 0 {
			t.Errorf("%s: temporary files left after the next revert: %v", where, left)
		}
	}

	if points == 0 || points >= maxPoints {
		t.Fatalf("revert passed %d crash points, want between 1 and %d", points, maxPoints)
	}
	t.Logf("revert killed at each of its %d crash points", points)
}

// checkOldOrNew fails the test for every file of after that is neither its
// version in old nor in new (a missing file counts as a version), ignoring
// mirrord's temporary files.
func checkOldOrNew(t *testing.T, where string, old, new, after tree) {
	t.Helper()

	checkVersions(t, where, after, old, new)
}

// checkVersions fails the test for every file of after that is in none of
// its versions in versions (a missing file counts as a version), ignoring
// mirrord's temporary files.
func checkVersions(t *testing.T, where string, after tree, versions ...tree) {
	t.Helper()

	paths := map[string]bool{}
	for _, tr := range append([]tree{after}, versions...) {
		for p := range tr {
			if !strings.Contains(filepath.Base(p), ".mirrord-") {
				paths[p] = true
			}
		}
	}
	for p := range paths {
		got, gotOK := after[p]
		if slices.ContainsFunc(versions, func(v tree) bool {
			data, ok := v[p]
			return ok == gotOK && data == got
		}) {
			continue
		}
		t.Errorf("%s: %s is in none of its versions (present %v, %d bytes):\n%s",
			where, p, gotOK, len(got), got)
	}
}

// daemonJSON is dockerd's file in the example node.
const daemonJSON = "/etc/docker/daemon.json"

// emptiedNode applies an empty spec to the applied node root, as revert's
// first pass does to daemon.json, and returns root.
func emptiedNode(t *testing.T, root string) string {
	t.Helper()

	if err := os.Remove(filepath.Join(root, "etc/mirrord/mirrord.toml")); err != nil {
		t.Fatal(err)
	}
	r := runMirrord(t, mirrordBin, nil, "apply", "--root", root, "--no-reload")
	if r.err != nil {
		t.Fatalf("apply of an empty spec: %v\n%s", r.err, r.stderr)
	}
	return root
}

// treeDiff lists the paths whose content differs between want and got,
// ignoring nothing.
func treeDiff(want, got tree) string {
	var out []string
	for p, w := range want {
		g, ok := got[p]
		switch {
		case !ok:
			out = append(out, "missing "+p)
		case g != w:
			out = append(out, "differs "+p)
		}
	}
	for p := range got {
		if _, ok := want[p]; !ok {
			out = append(out, "extra "+p)
		}
	}
	slices.Sort(out)
	return strings.Join(out, "\n")
}

// readState reads mirrord's state.json under root; a missing file is an
// empty state.
func readState(t *testing.T, root string) nodeState {
	t.Helper()

	var st nodeState
	b, err := os.ReadFile(filepath.Join(root, "var/lib/mirrord/state.json"))
	if os.IsNotExist(err) {
		return st
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatalf("state.json: %v\n%s", err, b)
	}
	return st
}

// pending reports whether the state holds verb of unit as pending.
func (st nodeState) pending(verb, unit string) bool {
	return slices.ContainsFunc(st.Pending, func(a struct {
		Unit string `json:"unit"`
		Verb string `json:"action"`
	}) bool {
		return a.Unit == unit && a.Verb == verb
	})
}
