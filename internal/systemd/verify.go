package systemd

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/mirrord/mirrord/internal/config"
)

// Verify makes, on demand, the proofs Act makes after a job: for each of rts
// whose unit is active, that the runtime runs with the configuration now on
// disk. A unit with a job queued or in transition gets up to CheckTimeout to
// settle first. A missing or inactive unit passes: it reads the files when
// it starts. A failed unit, a unit that does not settle, and a runtime that
// did not take its files are errors, returned joined.
//
// Call it after READY=1, or from a unit not ordered before the runtimes: a
// job queued behind mirrord's own start job cannot settle before that job
// ends, so Verify skips such a unit and says so.
func (m *Manager) Verify(ctx context.Context, rts []config.Runtime) error {
	m.mu.Lock()
	defer m.mu.Unlock()

	p := &pass{}
	var errs []error
	for _, rt := range rts {
		for _, unit := range rt.Units() {
			if err := m.verify(ctx, rt, unit, p); err != nil {
				errs = append(errs, fmt.Errorf("check %s: %w", unit, err))
			}
		}
	}
	return errors.Join(errs...)
}

func (m *Manager) verify(ctx context.Context, rt config.Runtime, unit string, p *pass) error {
	st, err := m.bus.unit(ctx, unit)
	if err != nil {
		return fmt.Errorf("read unit state: %w", err)
	}
	if st.Job != 0 && m.ownStartJob(ctx, p) != "" && p.blockedBy(unit, st) {
		m.log.Info("not checked: its job waits for mirrord's own start job", "unit", unit,
			"own_unit", p.own)
		return nil
	}
	if st, err = m.settle(ctx, unit, st); err != nil {
		return err
	}

	switch {
	case st.missing() || st.Active == "inactive":
		m.log.Debug("not checked: unit not active", "unit", unit, "state", st.Active)
		return nil
	case st.Active == "failed":
		return fmt.Errorf("unit failed (%s); journalctl -u %s says why", st.Sub, unit)
	case !st.running():
		return fmt.Errorf("unit still %s after %s", st.Active, m.checkTimeout)
	}
	return m.prove(ctx, rt)
}

// settle polls the unit's state until no job is queued for it and it is in
// no transition, up to CheckTimeout; it returns the last state it read.
func (m *Manager) settle(ctx context.Context, unit string, st unitState) (unitState, error) {
	deadline := time.Now().Add(m.checkTimeout)
	for st.Job != 0 || transitional(st.Active) {
		if time.Now().After(deadline) {
			return st, nil
		}
		if err := sleep(ctx, 200*time.Millisecond); err != nil {
			return st, err
		}
		var err error
		if st, err = m.bus.unit(ctx, unit); err != nil {
			return st, fmt.Errorf("read unit state: %w", err)
		}
	}
	return st, nil
}

func transitional(active string) bool {
	return active == "activating" || active == "deactivating" || active == "reloading"
}

// proveRuntime checks that rt took the configuration now on disk.
func (m *Manager) proveRuntime(ctx context.Context, rt config.Runtime) error {
	switch rt {
	case config.Containerd:
		return checkContainerd(ctx, m.root, m.checkTimeout, m.log)
	case config.Docker:
		return checkDockerd(ctx, m.root, m.checkTimeout, m.log)
	case config.CRIO:
		return checkCRI(ctx, m.root, "CRI-O", crioSocket, m.checkTimeout, m.log)
	case config.K3s, config.RKE2:
		return checkCRI(ctx, m.root, string(rt)+" containerd", rancherSocket, m.checkTimeout,
			m.log)
	}
	return nil
}

// poll calls try until it succeeds, fails for good, or timeout passes; it
// then returns try's last error. try reports whether its error may go away
// by itself (a socket not there yet, a reload not handled yet).
func poll(ctx context.Context, timeout time.Duration,
	try func(ctx context.Context) (retry bool, err error)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	wait := 50 * time.Millisecond
	for {
		retry, err := try(ctx)
		if err == nil || !retry {
			return err
		}
		if sleep(ctx, wait) != nil {
			return err
		}
		wait = min(2*wait, time.Second)
	}
}

// sleep waits d or until ctx ends, whichever comes first.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()

	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
