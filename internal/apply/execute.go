package apply

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Empty reports whether the Plan changes nothing, not even mirrord's state.
func (p *Plan) Empty() bool {
	return len(p.Changes) == 0 && len(p.release) == 0
}

// Execute writes the Plan's changes. The caller holds the Lock and built the
// Plan under it. Before the first change to a file mirrord did not create,
// the original goes to the state directory, and state.json records it before
// the file is touched, so that a crash at any point leaves a node that Revert
// can restore. It returns at the first error; files already written stay
// and are recorded.
func Execute(p *Plan, command string, log *slog.Logger) error {
	if p.Empty() {
		return nil
	}
	st := p.state

	var written []string
	for _, c := range p.Changes {
		if c.Restore {
			if err := p.restore(c); err != nil {
				return err
			}
		} else if err := p.write(c); err != nil {
			return err
		}
		written = append(written, c.Path)
		if c.Private {
			// No digest: with the rest of the file known, it would let a
			// weak password be guessed offline.
			log.Info("file "+verbOf(c), "path", c.Path, "runtime", c.Runtime, "mode", "0600")
			continue
		}
		log.Info("file "+verbOf(c), "path", c.Path, "runtime", c.Runtime,
			"sha256", shortDigest(c.New))
	}

	for _, nodePath := range p.release {
		if f := st.Files[nodePath]; f != nil && f.Backup != "" {
			if err := removeFile(filepath.Join(p.Root, StateDir, f.Backup)); err != nil {
				return fmt.Errorf("remove original of %s: %w", nodePath, err)
			}
		}
		delete(st.Files, nodePath)
	}
	p.removeEmptyDirs()

	st.Spec = p.Spec
	st.Last = &Event{Command: command, Time: time.Now().UTC().Truncate(time.Second),
		Files: written, Actions: p.Actions}
	return st.save(p.Root)
}

// write puts c.New in place, keeping the original first if mirrord does not
// own the file yet.
func (p *Plan) write(c Change) error {
	st := p.state
	full := p.node(c.Path)

	if st.Files[c.Path] == nil {
		f := &FileState{Created: c.Old == nil, Mode: c.Mode}
		if fi, err := os.Stat(full); err == nil && c.Old != nil {
			f.Mode = fi.Mode().Perm() // the original's, which a private write narrows
		}
		if c.Old != nil {
			f.Backup = backupPath(c.Path)
			if err := p.keepOriginal(f.Backup, c.Old); err != nil {
				return fmt.Errorf("keep original of %s: %w", c.Path, err)
			}
		}
		st.Files[c.Path] = f
		if err := st.save(p.Root); err != nil {
			return err
		}
	}

	dirs, err := mkdirAll(filepath.Dir(full))
	if err != nil {
		return fmt.Errorf("create directory for %s: %w", c.Path, err)
	}
	for _, d := range dirs {
		rel := "/" + strings.TrimPrefix(strings.TrimPrefix(d, p.Root), "/")
		if !slices.Contains(st.Dirs, rel) {
			st.Dirs = append(st.Dirs, rel)
		}
	}

	if err := writeAtomic(full, c.New, c.Mode); err != nil {
		return fmt.Errorf("write %s: %w", c.Path, err)
	}
	st.Files[c.Path].SHA256 = digest(c.New)
	return nil
}

// keepOriginal stores data under the state directory, 0600 whatever the
// original's mode: it may hold credentials.
func (p *Plan) keepOriginal(rel string, data []byte) error {
	full := filepath.Join(p.Root, StateDir, rel)
	if err := os.MkdirAll(filepath.Dir(full), 0o700); err != nil {
		return err
	}
	return writeAtomic(full, data, 0o600)
}

// restore puts the original back, or removes a file mirrord created.
func (p *Plan) restore(c Change) error {
	full := p.node(c.Path)
	if c.New == nil {
		if err := removeFile(full); err != nil {
			return fmt.Errorf("remove %s: %w", c.Path, err)
		}
		return nil
	}
	if _, err := mkdirAll(filepath.Dir(full)); err != nil {
		return fmt.Errorf("create directory for %s: %w", c.Path, err)
	}
	if err := writeAtomic(full, c.New, c.Mode); err != nil {
		return fmt.Errorf("restore %s: %w", c.Path, err)
	}
	return nil
}

// removeEmptyDirs removes the directories mirrord created that no longer
// hold anything, deepest first, and forgets them.
func (p *Plan) removeEmptyDirs() {
	st := p.state
	dirs := slices.Clone(st.Dirs)
	slices.SortFunc(dirs, func(a, b string) int { return len(b) - len(a) })

	for _, d := range dirs {
		err := os.Remove(p.node(d))
		var pe *fs.PathError
		if err != nil && !errors.Is(err, fs.ErrNotExist) && errors.As(err, &pe) {
			continue // not empty: another file lives there
		}
		st.Dirs = slices.DeleteFunc(st.Dirs, func(x string) bool { return x == d })
	}
}

func verbOf(c Change) string {
	switch {
	case c.Restore && c.New == nil:
		return "removed"
	case c.Restore:
		return "restored"
	case c.Old == nil:
		return "created"
	}
	return "written"
}

func shortDigest(data []byte) string {
	if data == nil {
		return ""
	}
	return digest(data)[:12]
}

// Revert plans the return of every file mirrord owns to its original, and
// the action each runtime then needs. Execute carries it out; afterwards
// mirrord owns nothing on the node and its state says what it last did.
func Revert(root string) (*Plan, error) {
	st, err := LoadState(root)
	if err != nil {
		return nil, err
	}

	p := &Plan{Root: root, state: st}
	for _, nodePath := range st.owned() {
		if rt := runtimeOf(nodePath); !slices.Contains(p.Runtimes, rt) {
			p.Runtimes = append(p.Runtimes, rt)
		}
	}
	st.Legacy, st.DockerInsecure = nil, nil

	p.releaseUnwanted()
	return p, nil
}
