// Package kubelettest lays out and updates a directory as kubelet does for
// a ConfigMap volume, so that tests can show that mirrord follows a
// ConfigMap the way a pod sees it. Only tests import it.
//
// kubelet's atomic writer keeps the files in a timestamped directory
// "..<time>", points the symlink "..data" at it, and makes each key a
// symlink "<key>" -> "..data/<key>". An update writes a new timestamped
// directory, points a new symlink "..data_tmp" at it, renames that over
// "..data" (the one atomic step), adds and removes the key symlinks, and
// removes the old directory. No file is ever written in place, so a reader
// watching the files themselves sees nothing change.
package kubelettest

import (
	"fmt"
	"os"
	"path/filepath"
)

// Volume is a ConfigMap volume in a directory. Its methods are not safe for
// concurrent use.
type Volume struct {
	dir  string
	seq  int
	keys map[string]bool
}

// New makes dir (and its parents) and lays files out in it, by key.
func New(dir string, files map[string]string) (*Volume, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("make volume %s: %w", dir, err)
	}
	v := &Volume{dir: dir, keys: map[string]bool{}}
	if err := v.Update(files); err != nil {
		return nil, err
	}
	return v, nil
}

// Update replaces the volume's files with files, as kubelet does when the
// ConfigMap changed: keys not in files disappear.
func (v *Volume) Update(files map[string]string) error {
	old, _ := os.Readlink(filepath.Join(v.dir, "..data"))
	v.seq++
	ts := fmt.Sprintf("..2026_12_04_03_50_%02d.%09d", v.seq, 1234567*v.seq)
	if err := os.Mkdir(filepath.Join(v.dir, ts), 0o755); err != nil {
		return fmt.Errorf("update volume %s: %w", v.dir, err)
	}
	for name, data := range files {
		p := filepath.Join(v.dir, ts, name)
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			return fmt.Errorf("update volume %s: %w", v.dir, err)
		}
	}

	tmp := filepath.Join(v.dir, "..data_tmp")
	if err := os.Symlink(ts, tmp); err != nil {
		return fmt.Errorf("update volume %s: %w", v.dir, err)
	}
	if err := os.Rename(tmp, filepath.Join(v.dir, "..data")); err != nil {
		return fmt.Errorf("update volume %s: %w", v.dir, err)
	}

	for name := range files {
		if v.keys[name] {
			continue
		}
		err := os.Symlink(filepath.Join("..data", name), filepath.Join(v.dir, name))
		if err != nil {
			return fmt.Errorf("update volume %s: %w", v.dir, err)
		}
		v.keys[name] = true
	}
	for name := range v.keys {
		if _, ok := files[name]; ok {
			continue
		}
		if err := os.Remove(filepath.Join(v.dir, name)); err != nil {
			return fmt.Errorf("update volume %s: %w", v.dir, err)
		}
		delete(v.keys, name)
	}

	if old != "" {
		if err := os.RemoveAll(filepath.Join(v.dir, old)); err != nil {
			return fmt.Errorf("update volume %s: remove old data: %w", v.dir, err)
		}
	}
	return nil
}
