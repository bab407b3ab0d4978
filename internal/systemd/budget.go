package systemd

import (
	"fmt"
	"slices"
	"time"

	"github.com/mirrord/mirrord/internal/apply"
)

// budget remembers the jobs started per unit within the window. The caller
// holds Manager.mu.
type budget struct {
	Budget
	jobs map[string][]job
}

type job struct {
	at   time.Time
	verb apply.Verb
}

func newBudget(b Budget) *budget {
	return &budget{Budget: b, jobs: map[string][]job{}}
}

// allow returns nil when a job of verb on unit fits the budget at now, and
// otherwise an error wrapping ErrBudget that says when it frees up.
func (b *budget) allow(unit string, verb apply.Verb, now time.Time) error {
	if b.Max < 0 {
		return nil
	}
	recent := b.prune(unit, now)
	if len(recent) < b.Max {
		return nil
	}

	next := recent[len(recent)-b.Max].at.Add(b.Window)
	return fmt.Errorf("%s %s refused: %d %s in the last %s (budget); next allowed at %s: %w",
		verb, unit, len(recent), jobNoun(recent), b.Window, next.Format(time.DateTime),
		ErrBudget)
}

// record counts a job of verb on unit at now.
func (b *budget) record(unit string, verb apply.Verb, now time.Time) {
	if b.Max < 0 {
		return
	}
	b.jobs[unit] = append(b.prune(unit, now), job{at: now, verb: verb})
}

// prune drops the unit's jobs older than the window and returns the rest,
// oldest first.
func (b *budget) prune(unit string, now time.Time) []job {
	jobs := b.jobs[unit]
	i := 0
	for i < len(jobs) && !jobs[i].at.After(now.Add(-b.Window)) {
		i++
	}
	jobs = jobs[i:]
	if len(jobs) == 0 {
		delete(b.jobs, unit)
		return nil
	}
	b.jobs[unit] = jobs
	return jobs
}

// jobNoun is "restarts", "reloads", or "restarts and reloads".
func jobNoun(jobs []job) string {
	verbs := map[apply.Verb]bool{}
	for _, j := range jobs {
		verbs[j.verb] = true
	}
	names := make([]string, 0, len(verbs))
	for v := range verbs {
		names = append(names, string(v)+"s")
	}
	slices.Sort(names)
	if len(names) == 2 {
		return names[1] + " and " + names[0]
	}
	return names[0]
}
