package apply

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/mirrord/mirrord/internal/config"
)

// Apply brings the node to cfg and has actor carry out the actions: the whole
// job of `mirrord apply` and of each pass of the watch. It builds the plan;
// when something differs it takes the Lock, builds again under it, writes,
// then acts. Bad input and a no-op take no lock and write nothing.
//
// Actions that failed are kept in state as pending and retried by the next
// Apply, even one with no file to change, so a runtime is never left on a
// configuration it did not load. The returned Plan is nil only on error.
func Apply(ctx context.Context, cfg config.Config, actor Actor, log *slog.Logger) (*Plan, error) {
	return run(ctx, cfg.Root, "apply", actor, log, func() (*Plan, error) {
		return Build(cfg, log)
	})
}

// RevertNode puts every file mirrord owns back as it was and has actor carry
// out the actions that follow.
func RevertNode(ctx context.Context, root string, actor Actor, log *slog.Logger) (*Plan, error) {
	return run(ctx, root, "revert", actor, log, func() (*Plan, error) { return Revert(root) })
}

func run(ctx context.Context, root, command string, actor Actor, log *slog.Logger,
	build func() (*Plan, error)) (*Plan, error) {
	p, err := build()
	if err != nil {
		return nil, err
	}
	if p.Empty() && len(p.state.Pending) == 0 {
		return p, nil
	}

	lock, err := AcquireLock(root)
	if err != nil {
		return nil, err
	}
	defer lock.Release()

	if p, err = build(); err != nil {
		return nil, err
	}
	if err := Execute(p, command, log); err != nil {
		return nil, err
	}

	p.Actions = p.pendingActions()
	actErr := actor.Act(ctx, p.Actions)
	if err := p.recordActed(p.Actions, actErr); err != nil {
		return p, err
	}
	return p, actErr
}

// pendingActions are the Plan's actions plus those an earlier run failed to
// carry out, one per runtime, the more disruptive verb winning.
func (p *Plan) pendingActions() []Action {
	out := slices.Clone(p.Actions)
	for _, old := range p.state.Pending {
		i := slices.IndexFunc(out, func(a Action) bool { return a.Runtime == old.Runtime })
		switch {
		case i < 0:
			out = append(out, old)
		case rank(old.Verb) > rank(out[i].Verb):
			old.Reason += ", pending from an earlier run"
			out[i] = old
		}
	}
	return out
}

func rank(v Verb) int {
	return slices.Index([]Verb{None, Reload, Restart}, v)
}

// recordActed saves what came of the actions: nothing pending after
// success; the actions that need doing and the error after a failure.
func (p *Plan) recordActed(actions []Action, actErr error) error {
	st := p.state
	st.Pending, st.LastError = nil, ""
	if actErr != nil {
		for _, a := range actions {
			if a.Verb != None {
				st.Pending = append(st.Pending, a)
			}
		}
		st.LastError = fmt.Sprintf("%s: %v", time.Now().UTC().Format(time.RFC3339), actErr)
	}
	return st.save(p.Root)
}
