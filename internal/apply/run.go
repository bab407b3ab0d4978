package apply

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"path/filepath"
	"slices"
	"time"

	"github.com/mirrord/mirrord/internal/config"
	"github.com/mirrord/mirrord/internal/docker"
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
//
// When daemon.json carries mirror settings mirrord wrote, a first pass
// empties them ("registry-mirrors": [] and the insecure-registries entries
// mirrord added gone, every other byte kept) and reloads dockerd. A reload
// replaces those settings only when the file has the key (FACTS.md §3.1), so
// restoring an original without them and reloading would leave dockerd on
// mirrord's mirrors, and the proof would fail. Emptied first, dockerd ends
// where the original puts it, without a restart. The first pass touches
// daemon.json alone, and is skipped when the file holds no such settings any
// more, as after a revert that was killed once it had restored the file: a
// revert run again after a crash at any point still ends on the originals.
// The returned Plan lists the files of both passes.
func RevertNode(ctx context.Context, root string, actor Actor, log *slog.Logger) (*Plan, error) {
	first, err := run(ctx, root, "revert", actor, log, func() (*Plan, error) {
		return emptyDocker(root)
	})
	if err != nil {
		return first, fmt.Errorf("empty dockerd's mirrors before the revert: %w", err)
	}

	p, err := run(ctx, root, "revert", actor, log, func() (*Plan, error) { return Revert(root) })
	if p != nil {
		p.Changes = append(first.Changes, p.Changes...)
		p.Warnings = append(first.Warnings, p.Warnings...)
	}
	return p, err
}

// emptyDocker plans the first pass of RevertNode: daemon.json as an empty
// spec leaves it, and a reload of docker.service. The Plan is empty when
// mirrord does not own daemon.json or the file carries no mirrors and none
// of the insecure registries mirrord added.
func emptyDocker(root string) (*Plan, error) {
	st, err := LoadState(root)
	if err != nil {
		return nil, err
	}
	p := &Plan{Root: root, Spec: st.Spec, Runtimes: []config.Runtime{config.Docker}, state: st}
	if st.Files[docker.DaemonJSON] == nil {
		return p, nil
	}

	src, mode, exists, err := readFile(p.node(docker.DaemonJSON))
	if err != nil || !exists {
		return p, err
	}
	set, err := docker.ReadSettings(src)
	if err != nil {
		return nil, fmt.Errorf("docker config %s: %w", docker.DaemonJSON, err)
	}
	added := slices.ContainsFunc(set.Insecure, func(h string) bool {
		return slices.Contains(st.DockerInsecure, h)
	})
	if len(set.Mirrors) == 0 && !added {
		return p, nil
	}

	data, err := docker.EditDaemonJSON(src, docker.Settings{}, st.DockerInsecure, true)
	if err != nil {
		return nil, fmt.Errorf("docker config %s: %w", docker.DaemonJSON, err)
	}
	p.Changes = []Change{{Path: docker.DaemonJSON, Runtime: config.Docker, Old: src, New: data,
		Mode: mode}}
	p.Actions = decideActions(p.Runtimes, p.Changes)
	return p, nil
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
	if err := p.sweepTemps(); err != nil {
		return nil, err
	}

	// The actions go into state as pending before any file changes, so that
	// a run killed between its writes and its actions leaves them to the
	// next run, which would otherwise find the files in sync and do nothing.
	p.Actions = p.pendingActions()
	if err := p.recordIntent(p.Actions); err != nil {
		return nil, err
	}
	if err := Execute(p, command, log); err != nil {
		return nil, err
	}

	actErr := actor.Act(ctx, p.Actions)
	if err := p.recordActed(p.Actions, actErr); err != nil {
		return p, err
	}
	return p, actErr
}

// pendingActions are the Plan's actions plus those an earlier run failed to
// carry out, one per unit, the more disruptive verb winning.
func (p *Plan) pendingActions() []Action {
	out := slices.Clone(p.Actions)
	for _, old := range p.state.Pending {
		i := slices.IndexFunc(out, func(a Action) bool {
			return a.Runtime == old.Runtime && a.Unit == old.Unit
		})
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

// interrupted is the LastError of actions recorded before they ran; a run
// that ends normally replaces it.
const interrupted = "interrupted before its actions were carried out"

// recordIntent saves actions as pending before the files change. It writes
// nothing when no action is needed and none was pending.
func (p *Plan) recordIntent(actions []Action) error {
	var pending []Action
	for _, a := range actions {
		if a.Verb != None {
			pending = append(pending, a)
		}
	}
	if len(pending) == 0 && len(p.state.Pending) == 0 {
		return nil
	}

	p.state.Pending = pending
	p.state.LastError = interrupted
	return p.state.save(p.Root)
}

// sweepTemps removes what writes killed before their rename left beside
// the files mirrord manages and anywhere in its state directory.
func (p *Plan) sweepTemps() error {
	var dirs []string
	add := func(nodePath string) {
		d := filepath.Dir(p.node(nodePath))
		if !slices.Contains(dirs, d) {
			dirs = append(dirs, d)
		}
	}
	for _, c := range p.Changes {
		add(c.Path)
	}
	for nodePath := range p.state.Files {
		add(nodePath)
	}

	state := filepath.Join(p.Root, StateDir)
	err := filepath.WalkDir(state, func(path string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, path)
		}
		return err
	})
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("sweep temporary files in %s: %w", state, err)
	}

	for _, d := range dirs {
		if err := sweepTemps(d); err != nil {
			return err
		}
	}
	return nil
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
