package apply

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// writeAtomic replaces path with data so that a reader, or a crash, sees the
// old content or the new, never a mix: temporary file in the same directory,
// fsync, rename, fsync of the directory. The file gets mode, and the owner of
// the file it replaces when there was one.
func writeAtomic(path string, data []byte, mode fs.FileMode) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".mirrord-*")
	if err != nil {
		return fmt.Errorf("create temporary file: %w", err)
	}
	defer os.Remove(tmp.Name()) // fails harmlessly once renamed
	crashPoint("temporary file created", path)

	if err := writeAndSync(tmp, data, mode, path); err != nil {
		return err
	}
	crashPoint("temporary file written and synced", path)

	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("rename into place: %w", err)
	}
	crashPoint("renamed, directory not synced", path)

	if err := syncDir(dir); err != nil {
		return err
	}
	crashPoint("written", path)
	return nil
}

// tempPattern matches the temporary files of writeAtomic for any target.
const tempPattern = ".*.mirrord-*"

// sweepTemps removes the temporary files that a writeAtomic killed before
// its rename left in dir. The caller holds the Lock, so no other mirrord is
// writing them. A missing directory is no error.
func sweepTemps(dir string) error {
	matches, err := filepath.Glob(filepath.Join(dir, tempPattern))
	if err != nil {
		return fmt.Errorf("sweep temporary files in %s: %w", dir, err)
	}
	for _, m := range matches {
		if err := os.Remove(m); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("sweep temporary file %s: %w", m, err)
		}
	}
	return nil
}

func writeAndSync(tmp *os.File, data []byte, mode fs.FileMode, target string) error {
	defer tmp.Close()

	half := len(data) / 2
	if _, err := tmp.Write(data[:half]); err != nil {
		return fmt.Errorf("write temporary file: %w", err)
	}
	crashPoint("temporary file half written", target)
	if _, err := tmp.Write(data[half:]); err != nil {
		return fmt.Errorf("write temporary file: %w", err)
	}
	if err := tmp.Chmod(mode); err != nil {
		return fmt.Errorf("chmod temporary file: %w", err)
	}
	if fi, err := os.Stat(target); err == nil {
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			// Best effort: only root may give a file away.
			_ = tmp.Chown(int(st.Uid), int(st.Gid))
		}
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("fsync temporary file: %w", err)
	}
	return tmp.Close()
}

// syncDir makes a rename or removal in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open directory for fsync: %w", err)
	}
	defer d.Close()

	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync directory: %w", err)
	}
	return nil
}

// readFile returns a file's bytes and mode; a missing file yields nil bytes
// and exists false, not an error.
func readFile(path string) (data []byte, mode fs.FileMode, exists bool, err error) {
	fi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, 0, false, nil
	}
	if err != nil {
		return nil, 0, false, err
	}
	if !fi.Mode().IsRegular() {
		return nil, 0, false, fmt.Errorf("not a regular file")
	}

	data, err = os.ReadFile(path)
	if err != nil {
		return nil, 0, false, err
	}
	return data, fi.Mode().Perm(), true, nil
}

// mkdirAll creates dir and its missing parents with mode 0755 and returns
// the directories it created, outermost first.
func mkdirAll(dir string) ([]string, error) {
	var missing []string
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(d); err == nil {
			break
		} else if !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		missing = append([]string{d}, missing...)
		if d == filepath.Dir(d) {
			break
		}
	}

	for _, d := range missing {
		if err := os.Mkdir(d, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			return nil, err
		}
		if err := syncDir(filepath.Dir(d)); err != nil {
			return nil, err
		}
	}
	return missing, nil
}

// removeFile removes path and makes the removal durable; a missing file is
// no error.
func removeFile(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return syncDir(filepath.Dir(path))
}
