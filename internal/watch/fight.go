package watch

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"
)

// fight tells drift, which one repair ends, from another writer that keeps
// putting its version back: more than limit repairing passes within window
// start a backoff of min, doubled by each further repair up to max. The
// fight ends when no repair comes for window beyond the current backoff.
type fight struct {
	limit            int
	window, min, max time.Duration

	// recent holds the repairs within window, oldest first.
	recent []time.Time
	// level is the backoff step; 0 when not backing off.
	level int
	// since is the first repair of the streak, last the latest one.
	since, last time.Time
	// counts holds each file's repairs since the streak began.
	counts map[string]int
}

// repaired records a pass at now that changed files and returns how long the
// next pass must wait: zero unless backing off. Each non-zero return is a new
// step of the backoff.
func (f *fight) repaired(now time.Time, files []string) time.Duration {
	if f.level > 0 && now.Sub(f.last) > f.delay(f.level)+f.window {
		f.level, f.recent = 0, nil
	}
	cutoff := now.Add(-f.window)
	f.recent = slices.DeleteFunc(f.recent, func(t time.Time) bool { return !t.After(cutoff) })
	if len(f.recent) == 0 && f.level == 0 {
		f.since, f.counts = now, map[string]int{}
	}
	f.recent = append(f.recent, now)
	f.last = now
	for _, p := range files {
		f.counts[p]++
	}

	if f.level == 0 && len(f.recent) <= f.limit {
		return 0
	}
	f.level++
	return f.delay(f.level)
}

// delay is the backoff of a step: min doubled level-1 times, at most max.
func (f *fight) delay(level int) time.Duration {
	d := f.min
	for i := 1; i < level && d < f.max; i++ {
		d *= 2
	}
	return min(d, f.max)
}

// summary names the files repaired in the streak with how often each was,
// most first: "/etc/a (7x), /etc/b (2x)". It names three at most.
func (f *fight) summary() string {
	files := make([]string, 0, len(f.counts))
	for p := range f.counts {
		files = append(files, p)
	}
	slices.SortFunc(files, func(a, b string) int {
		return cmp.Or(cmp.Compare(f.counts[b], f.counts[a]), cmp.Compare(a, b))
	})

	var parts []string
	for i, p := range files {
		if i == 3 {
			parts = append(parts, fmt.Sprintf("%d more", len(files)-3))
			break
		}
		parts = append(parts, fmt.Sprintf("%s (%dx)", p, f.counts[p]))
	}
	return strings.Join(parts, ", ")
}
