// Package health keeps the health order of mirrors: a mirror whose probes
// fail DefaultDown times in a row moves behind the healthy mirrors of its
// registry, and comes back to its place in the spec after DefaultUp good
// probes in a row.
//
// A Tracker takes the probe reports (package probe) and says what changed;
// a State is what it knows, which the watch saves in mirrord's state
// directory and every Build reads, so that apply, plan, status and the watch
// agree on the order. Only hosts.toml files take the health order: they are
// read on every pull and need no action, while daemon.json (a reload) and
// k3s' registries.yaml (a restart) keep the spec's order.
package health

import (
	"slices"
	"time"

	"github.com/mirrord/mirrord/internal/probe"
	"github.com/mirrord/mirrord/internal/spec"
)

// Defaults of a Tracker.
const (
	// DefaultDown failed probes in a row demote a mirror: one failure may
	// be a blip, and a demotion reorders every pull's first try.
	DefaultDown = 3

	// DefaultUp good probes in a row bring it back.
	DefaultUp = 2

	// MaxAge is how long a State stays in force without being renewed: the
	// watch renews it while it runs, and once the watch is gone the spec's
	// order comes back with the next apply.
	MaxAge = time.Hour
)

// Entry is one demoted mirror.
type Entry struct {
	Registry string    `json:"registry"`
	Mirror   string    `json:"mirror"`
	Since    time.Time `json:"since"`
	// Error is the failure that demoted it, for status.
	Error string `json:"error"`
}

// State is the health order in force: the demoted mirrors, and when the
// watch last vouched for it.
type State struct {
	Demoted []Entry   `json:"demoted"`
	Updated time.Time `json:"updated"`
}

// Fresh reports whether s is recent enough to apply at now.
func (s State) Fresh(now time.Time) bool {
	return !s.Updated.IsZero() && now.Sub(s.Updated) < MaxAge
}

// IsDemoted reports whether the mirror url of registry host is demoted.
func (s State) IsDemoted(host, url string) bool {
	return slices.ContainsFunc(s.Demoted, func(e Entry) bool {
		return e.Registry == host && e.Mirror == url
	})
}

// Order returns sp with the demoted mirrors of each registry moved behind
// the others, each group in spec order. A State that is not Fresh at now
// changes nothing. sp itself is not modified.
func (s State) Order(sp spec.Spec, now time.Time) spec.Spec {
	if len(s.Demoted) == 0 || !s.Fresh(now) {
		return sp
	}
	out := spec.Spec{Registries: slices.Clone(sp.Registries)}
	for i, r := range out.Registries {
		var healthy, demoted []spec.Mirror
		for _, m := range r.Mirrors {
			if s.IsDemoted(r.Host, m.URL) {
				demoted = append(demoted, m)
			} else {
				healthy = append(healthy, m)
			}
		}
		if len(demoted) > 0 {
			out.Registries[i].Mirrors = append(healthy, demoted...)
		}
	}
	return out
}

// Change is a mirror that moved.
type Change struct {
	Registry string
	Mirror   string
	// Demoted is true when it moved behind the healthy mirrors, false when
	// it came back.
	Demoted bool
	// Failures is the number of failed probes in a row that demoted it.
	Failures int
	// Err is the last failure, for a demotion.
	Err string
	// DownFor is how long it was demoted, for a return.
	DownFor time.Duration
}

type key struct{ registry, mirror string }

// Tracker counts each mirror's probes in a row. It is not safe for
// concurrent use.
type Tracker struct {
	// Down and Up are the thresholds; zero takes the defaults.
	Down, Up int

	fails, oks map[key]int
	demoted    map[key]Entry
}

// NewTracker returns a Tracker that starts from s: mirrors demoted there
// stay demoted until they pass Up probes.
func NewTracker(s State) *Tracker {
	t := &Tracker{fails: map[key]int{}, oks: map[key]int{}, demoted: map[key]Entry{}}
	for _, e := range s.Demoted {
		t.demoted[key{e.Registry, e.Mirror}] = e
	}
	return t
}

func (t *Tracker) thresholds() (down, up int) {
	down, up = t.Down, t.Up
	if down <= 0 {
		down = DefaultDown
	}
	if up <= 0 {
		up = DefaultUp
	}
	return down, up
}

// Observe takes one probe report at now and returns the mirrors that
// moved. A probe that could not test its mirror (probe.Unknown) counts for
// nothing. Mirrors the report does not name any more are forgotten.
func (t *Tracker) Observe(rep probe.Report, now time.Time) []Change {
	down, up := t.thresholds()
	seen := map[key]bool{}
	var changes []Change

	for _, r := range rep.Registries {
		for _, m := range r.Mirrors {
			k := key{r.Host, m.URL}
			seen[k] = true
			e, isDown := t.demoted[k]

			switch m.Status {
			case probe.OK:
				t.fails[k] = 0
				t.oks[k]++
				if isDown && t.oks[k] >= up {
					delete(t.demoted, k)
					changes = append(changes, Change{Registry: r.Host, Mirror: m.URL,
						DownFor: now.Sub(e.Since)})
				}
			case probe.Fail:
				t.oks[k] = 0
				t.fails[k]++
				if !isDown && t.fails[k] >= down {
					t.demoted[k] = Entry{Registry: r.Host, Mirror: m.URL, Since: now,
						Error: m.Error}
					changes = append(changes, Change{Registry: r.Host, Mirror: m.URL,
						Demoted: true, Failures: t.fails[k], Err: m.Error})
				}
			}
		}
	}

	for k := range t.demoted {
		if !seen[k] {
			delete(t.demoted, k)
		}
	}
	for k := range t.fails {
		if !seen[k] {
			delete(t.fails, k)
			delete(t.oks, k)
		}
	}
	return changes
}

// Unsettled reports whether some mirror is on its way to a change: failing
// but not yet demoted, or demoted and passing. The watch then probes again
// sooner than its interval.
func (t *Tracker) Unsettled() bool {
	for k, n := range t.fails {
		if _, isDown := t.demoted[k]; n > 0 && !isDown {
			return true
		}
	}
	for k := range t.demoted {
		if t.oks[k] > 0 {
			return true
		}
	}
	return false
}

// State returns what the Tracker knows, stamped at now, demoted mirrors
// sorted by registry and mirror.
func (t *Tracker) State(now time.Time) State {
	s := State{Updated: now, Demoted: []Entry{}}
	for _, e := range t.demoted {
		s.Demoted = append(s.Demoted, e)
	}
	slices.SortFunc(s.Demoted, func(a, b Entry) int {
		if a.Registry != b.Registry {
			if a.Registry < b.Registry {
				return -1
			}
			return 1
		}
		if a.Mirror < b.Mirror {
			return -1
		}
		if a.Mirror > b.Mirror {
			return 1
		}
		return 0
	})
	return s
}
