package systemd

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/mirrord/mirrord/internal/apply"
)

// Act carries out the actions one after the other, as the package doc
// describes, and skips those with Verb none. A failed action does not stop
// the others: Act returns every failure joined, each naming its unit. An
// action refused by the budget wraps ErrBudget.
func (m *Manager) Act(ctx context.Context, actions []apply.Action) error {
	m.mu.Lock()
	defer m.mu.Unlock()

	p := &pass{}
	var errs []error
	for _, a := range actions {
		if a.Verb == apply.None {
			continue
		}
		if err := m.act(ctx, a, p); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// pass is what one call of Act or Verify learns as it goes.
type pass struct {
	looked bool
	// own is the unit whose start job this process runs in; empty when it
	// runs in none (a started unit, a login session, another namespace).
	own string
	// ownBefore lists the units own is ordered before.
	ownBefore []string
	// queued lists the units given a job without waiting: jobs ordered
	// after them wait too.
	queued []string
}

func (m *Manager) act(ctx context.Context, a apply.Action, p *pass) error {
	if a.Verb != apply.Restart && a.Verb != apply.Reload {
		return fmt.Errorf("%s: unknown action %q; valid: %s, %s, %s", a.Unit, a.Verb,
			apply.None, apply.Reload, apply.Restart)
	}
	st, err := m.bus.unit(ctx, a.Unit)
	if err != nil {
		return fmt.Errorf("%s %s: read unit state: %w", a.Verb, a.Unit, err)
	}
	if st.missing() {
		m.log.Info("unit not installed; nothing to "+string(a.Verb), "unit", a.Unit,
			"state", st.Load)
		return nil
	}
	if !st.running() {
		m.log.Info("unit not active; it reads the new files when it starts", "unit", a.Unit,
			"state", st.Active)
		return nil
	}

	now := m.now()
	if err := m.budget.allow(a.Unit, a.Verb, now); err != nil {
		m.log.Warn("action refused by the restart budget", "unit", a.Unit,
			"action", string(a.Verb), "reason", err.Error())
		return err
	}

	if own := m.ownStartJob(ctx, p); own != "" && p.blockedBy(a.Unit, st) {
		id, err := m.bus.enqueue(ctx, a.Verb, a.Unit, nil)
		if err != nil {
			return fmt.Errorf("%s %s: %w", a.Verb, a.Unit, err)
		}
		m.budget.record(a.Unit, a.Verb, now)
		p.queued = append(p.queued, a.Unit)
		m.log.Info(fmt.Sprintf("%s of %s queued; not waiting (mirrord's own start job is "+
			"running)", a.Verb, a.Unit), "unit", a.Unit, "own_unit", own, "job", id)
		return nil
	}
	return m.run(ctx, a, now)
}

// run enqueues a's job, waits for its result and checks the runtime.
func (m *Manager) run(ctx context.Context, a apply.Action, now time.Time) error {
	// Buffered: go-systemd blocks all job results until this one is read,
	// and after a timeout nobody reads it.
	ch := make(chan string, 1)
	start := time.Now()
	id, err := m.bus.enqueue(ctx, a.Verb, a.Unit, ch)
	if err != nil {
		return fmt.Errorf("%s %s: %w", a.Verb, a.Unit, err)
	}
	m.budget.record(a.Unit, a.Verb, now)

	result, err := m.wait(ctx, ch)
	took := time.Since(start).Round(time.Millisecond)
	if err != nil {
		m.log.Warn("unit "+string(a.Verb)+": no job result", "unit", a.Unit, "job", id,
			"duration", took)
		return fmt.Errorf("%s %s: job %d: %w", a.Verb, a.Unit, id, err)
	}
	if result != "done" {
		m.log.Warn("unit "+string(a.Verb)+" failed", "unit", a.Unit, "job_result", result,
			"duration", took)
		return fmt.Errorf("%s %s: job result %q", a.Verb, a.Unit, result)
	}
	m.log.Info("unit "+pastTense(a.Verb), "unit", a.Unit, "job_result", result,
		"duration", took)

	if err := m.prove(ctx, a.Runtime); err != nil {
		return fmt.Errorf("%s %s: %w", a.Verb, a.Unit, err)
	}
	return nil
}

// wait returns the job result sent on ch, or an error after JobTimeout.
func (m *Manager) wait(ctx context.Context, ch <-chan string) (string, error) {
	t := time.NewTimer(m.jobTimeout)
	defer t.Stop()

	select {
	case r := <-ch:
		return r, nil
	case <-t.C:
		return "", fmt.Errorf("no result after %s; the job goes on", m.jobTimeout)
	case <-ctx.Done():
		return "", fmt.Errorf("wait for the result: %w", ctx.Err())
	}
}

func pastTense(v apply.Verb) string {
	if v == apply.Restart {
		return "restarted"
	}
	return "reloaded"
}

// ownStartJob returns the unit this process runs in when that unit is
// activating, i.e. its start job is running: a oneshot during ExecStart, a
// notify unit before READY=1. It asks once per pass. When it cannot tell,
// it returns "": waiting is then bounded by JobTimeout, not a deadlock.
//
// The unit comes from our cgroup, as sd_pid_get_unit(3) finds it, and only
// counts when this systemd confirms it for our PID: from another PID
// namespace (a DaemonSet, a test dialing a container's bus) the PID names
// another process or none.
func (m *Manager) ownStartJob(ctx context.Context, p *pass) string {
	if p.looked {
		return p.own
	}
	p.looked = true

	cgroup, err := m.selfCgroup()
	if err != nil {
		m.log.Debug("own unit unknown; jobs are waited for", "reason", err)
		return ""
	}
	name := cgroupUnit(cgroup)
	if name == "" {
		return ""
	}
	if got, err := m.bus.unitByPID(ctx, m.pid); err != nil || got != name {
		m.log.Debug("not inside a unit of this systemd; jobs are waited for",
			"cgroup_unit", name, "pid_unit", got, "reason", err)
		return ""
	}
	st, err := m.bus.unit(ctx, name)
	if err != nil {
		m.log.Debug("own unit's state unknown; jobs are waited for", "own_unit", name,
			"reason", err)
		return ""
	}
	if st.Active == "activating" {
		p.own, p.ownBefore = name, st.Before
	}
	return p.own
}

// cgroupUnit names the unit of a /proc/<pid>/cgroup file: the first
// component after the slices of the systemd hierarchy's path, such as
// mirrord.service in "0::/system.slice/mirrord.service". It returns "" for
// a path outside any unit ("/", "/..", a cgroup another manager made).
func cgroupUnit(data []byte) string {
	var path string
	for line := range strings.Lines(string(data)) {
		_, rest, _ := strings.Cut(strings.TrimSpace(line), ":")
		ctrl, p, _ := strings.Cut(rest, ":")
		switch ctrl {
		case "name=systemd":
			// cgroup v1 and hybrid: systemd's own hierarchy wins.
			return unitIn(p)
		case "":
			path = p
		}
	}
	return unitIn(path)
}

func unitIn(path string) string {
	for c := range strings.SplitSeq(strings.Trim(path, "/"), "/") {
		if strings.HasSuffix(c, ".slice") {
			continue
		}
		for _, suffix := range []string{".service", ".scope"} {
			if strings.HasSuffix(c, suffix) && len(c) > len(suffix) {
				return c
			}
		}
		return ""
	}
	return ""
}

// blockedBy reports whether a job on unit (in state st) would wait for the
// start job of p.own: the unit is ordered after it, or after a unit whose
// job, queued in this pass, waits for it.
func (p *pass) blockedBy(unit string, st unitState) bool {
	if slices.Contains(st.After, p.own) || slices.Contains(p.ownBefore, unit) {
		return true
	}
	return slices.ContainsFunc(p.queued, func(q string) bool {
		return slices.Contains(st.After, q)
	})
}
