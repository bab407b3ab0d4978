package systemdtest

import (
	"context"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
)

// maxExposure is the highest "systemd-analyze security" exposure the issue
// allows for each unit.
const maxExposure = 2.0

// exposureLine matches the verdict of "systemd-analyze security".
var exposureLine = regexp.MustCompile(`(?m)Overall exposure level for (\S+): (\d+\.\d+) (.*)$`)

func TestUnitSecurity(t *testing.T) {
	t.Parallel()
	m := bootMachine(t, machineOptions{})

	units, err := filepath.Glob(filepath.Join(*unitsDir, "*.service"))
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{applyUnit, watchUnit} {
		if !containsBase(units, u) {
			t.Errorf("packaging/systemd has no %s", u)
		}
	}

	for _, u := range units {
		unit := filepath.Base(u)
		path := "/usr/lib/systemd/system/" + unit
		t.Run(unit, func(t *testing.T) {
			m := m.in(t)

			// verify prints its findings on stderr and may still exit 0:
			// clean means both no error and no output. The machine has no
			// man-db, so Documentation=man: links cannot be checked here.
			ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
			out, err := m.exec(ctx, "", "sh", "-c",
				`systemd-analyze verify --man=no "$1" 2>&1`, "sh", path)
			cancel()
			if err != nil || out != "" {
				t.Errorf("systemd-analyze verify %s: %v\n%s", unit, err, out)
			}

			// security exits non-zero above its threshold; read the score
			// whatever the status.
			report := m.output("systemd-analyze", "security", "--offline=true", path)
			match := exposureLine.FindStringSubmatch(report)
			if match == nil {
				t.Fatalf("systemd-analyze security %s: no exposure line:\n%s", unit, report)
			}
			score, err := strconv.ParseFloat(match[2], 64)
			if err != nil {
				t.Fatalf("systemd-analyze security %s: exposure %q: %v", unit, match[2], err)
			}
			t.Logf("%s: exposure %.1f %s", unit, score, match[3])
			if score > maxExposure {
				t.Errorf("%s: exposure %.1f, want at most %.1f:\n%s", unit, score,
					maxExposure, report)
			}
		})
	}
}

// containsBase reports whether one of paths has the file name name.
func containsBase(paths []string, name string) bool {
	for _, p := range paths {
		if filepath.Base(p) == name {
			return true
		}
	}
	return false
}
