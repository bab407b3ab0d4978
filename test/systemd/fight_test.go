package systemdtest

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The long fight of issue #8: another writer sets config_path every
// fightEvery for fightFor while the watch runs.
const (
	fightEvery = 50 * time.Millisecond
	fightFor   = time.Minute
	// warmup is when the first memory reading is taken, once the watch has
	// backed off and its heap has settled.
	warmup = 10 * time.Second
	// maxGrowth is how much the watch's resident memory may grow between
	// the first reading and the end of the fight.
	maxGrowth = 2 << 20
)

// fightLog matches the watch's report of a fight and the count it gives for
// config.toml.
var fightLog = regexp.MustCompile(`another writer keeps changing mirrord's files.*` +
	regexp.QuoteMeta(configToml) + ` \((\d+)x\)`)

func TestWatchLongFight(t *testing.T) {
	if testing.Short() {
		t.Skip("a minute-long fight")
	}
	t.Parallel()
	m := bootMachine(t, machineOptions{
		mirrors: "docker.io=" + mirrorA,
		enable:  []string{watchUnit},
	})
	conf := m.readFile(configToml)
	pid := m.prop(watchUnit, "MainPID")

	// The writer runs in the machine, in the background, until its end.
	m.sh(fmt.Sprintf(`cat >/run/fight.sh <<'EOS'
end=$(($(date +%%s) + %d)); n=0
while [ "$(date +%%s)" -lt "$end" ]; do
	sed -Ei 's#^([[:space:]]*config_path *=).*#\1 "/etc/containerd/elsewhere"#' %s
	n=$((n + 1)); sleep %s
done
echo $n >/run/fight.count
EOS
systemd-run --unit=fight --quiet sh /run/fight.sh`, int(fightFor/time.Second), configToml,
		strconv.FormatFloat(fightEvery.Seconds(), 'f', 3, 64)))
	start := time.Now()

	time.Sleep(warmup)
	before := m.rss(pid)

	m.eventually(fightFor+10*time.Second, "the writer to finish", func() (bool, string) {
		out, _ := m.exec(t.Context(), "", "cat", "/run/fight.count")
		return strings.TrimSpace(out) != "", out
	})
	after := m.rss(pid)
	t.Logf("the writer flipped config_path %s times in %v",
		strings.TrimSpace(m.run("cat", "/run/fight.count")), time.Since(start).Round(time.Second))
	t.Logf("watch VmRSS %d KiB after %v, %d KiB at the end", before>>10, warmup, after>>10)
	if after > before+maxGrowth {
		t.Errorf("the watch grew from %d KiB to %d KiB during the fight, want at most %d KiB",
			before>>10, after>>10, maxGrowth>>10)
	}

	// Within budget, with the fight reported by file and count.
	if n := m.starts(containerd) - 1; n > restartBudget {
		t.Errorf("containerd restarted %d times during the fight, budget %d", n, restartBudget)
	}
	journal := m.journal(watchUnit)
	match := fightLog.FindAllStringSubmatch(journal, -1)
	if match == nil {
		t.Fatalf("the watch's journal does not report the fight on %s:\n%s", configToml, journal)
	}
	t.Logf("last report: %s changed %sx", configToml, match[len(match)-1][1])
	m.logWatchStatus("at the end of the fight")

	// Once the writer has gone, the watch puts the file back.
	m.eventually(fightTimeout+fightFor, configToml+" to be put back after the fight",
		func() (bool, string) {
			got := m.readFile(configToml)
			return got == conf, got
		})
	if s := m.prop(watchUnit, "ActiveState"); s != "active" {
		t.Errorf("%s is %s after the fight, want active", watchUnit, s)
	}
	if n := m.prop(watchUnit, "NRestarts"); n != "0" {
		t.Errorf("%s NRestarts = %s, want 0", watchUnit, n)
	}
}

// rss returns the resident memory of a process of the machine, in bytes.
func (m *machine) rss(pid string) int {
	m.t.Helper()

	status := m.run("cat", "/proc/"+pid+"/status")
	for line := range strings.Lines(status) {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kib, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			if err != nil {
				m.t.Fatalf("VmRSS %q: %v", v, err)
			}
			return kib << 10
		}
	}
	m.t.Fatalf("no VmRSS in /proc/%s/status", pid)
	return 0
}
