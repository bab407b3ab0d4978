package debtest

import (
	"context"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// overridesFile is the lintian overrides file the deb ships.
const overridesFile = "../../packaging/deb/lintian-overrides"

// acceptedInfo lists the info and pedantic tags the deb may get, with the
// reason. They are neither errors nor warnings, so they get no override in
// the package (its overrides are only those a static Go binary needs), but a
// new one fails the test until it is judged here.
var acceptedInfo = map[string]string{
	// mirrord acts through systemd's D-Bus API and orders itself before the
	// runtimes with its units; under another init it could write the files
	// but not restart or reload a runtime, so it ships no init.d script.
	"package-supports-alternative-init-but-no-init.d-script": "systemd only",
}

// tagLine matches a tag lintian reports: its kind, package and the tag
// with its context. O: is an overridden tag; N: lines are notes.
var tagLine = regexp.MustCompile(`^([EWIPXCO]): mirrord( \S+)?: (.+)$`)

func TestLintian(t *testing.T) {
	requireDebs(t)
	want := overrides(t)

	for _, p := range pkgs {
		t.Run(p.arch, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()

			// Every tag lintian knows, experimental and pedantic included;
			// --fail-on none leaves the verdict to this test.
			start := time.Now()
			cmd := exec.CommandContext(ctx, "lintian", "--display-level", ">=pedantic",
				"--display-experimental", "--show-overrides", "--tag-display-limit", "0",
				"--fail-on", "none", p.deb)
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("lintian %s: %v\n%s", p.deb, err, out)
			}
			t.Logf("lintian %s took %v:\n%s", p.deb, time.Since(start).Round(time.Millisecond),
				out)

			var unexpected, overridden, info []string
			for line := range strings.Lines(string(out)) {
				m := tagLine.FindStringSubmatch(strings.TrimSpace(line))
				switch {
				case m == nil:
				case m[1] == "O":
					overridden = append(overridden, m[3])
				case (m[1] == "I" || m[1] == "P") && acceptedInfo[tagName(m[3])] != "":
					info = append(info, m[0])
				default:
					unexpected = append(unexpected, m[0])
				}
			}
			if len(info) > 0 {
				t.Logf("accepted info tags:\n%s", strings.Join(info, "\n"))
			}
			if len(unexpected) > 0 {
				t.Errorf("lintian tags beyond the overrides:\n%s", strings.Join(unexpected, "\n"))
			}
			// An override lintian no longer needs would hide a future tag.
			slices.Sort(overridden)
			if diff := cmp.Diff(want, overridden); diff != "" {
				t.Errorf("overridden tags, want each override used once (-want +got):\n%s",
					diff)
			}
		})
	}
}

// tagName is the tag of "tag [context]" or "tag context".
func tagName(tagAndContext string) string {
	name, _, _ := strings.Cut(tagAndContext, " ")
	return name
}

// overrides returns the tags of the overrides file, "tag [context]", and
// fails the test for an override without a comment above it saying why.
func overrides(t *testing.T) []string {
	t.Helper()

	data, err := os.ReadFile(overridesFile)
	if err != nil {
		t.Fatal(err)
	}

	var tags []string
	reason := false
	for line := range strings.Lines(string(data)) {
		line = strings.TrimSpace(line)
		switch {
		case line == "":
			reason = false
		case strings.HasPrefix(line, "#"):
			reason = true
		default:
			tag, ok := strings.CutPrefix(line, "mirrord: ")
			if !ok {
				t.Errorf("%s: %q: want \"mirrord: TAG [CONTEXT]\"", overridesFile, line)
				continue
			}
			if !reason {
				t.Errorf("%s: override %q has no comment above it giving the reason",
					overridesFile, tag)
			}
			tags = append(tags, tag)
		}
	}
	slices.Sort(tags)
	return tags
}
