package apply

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// Lock is an exclusive lock on a node's mirrord state, held by one apply,
// revert or watch at a time.
type Lock struct {
	f *os.File
}

// AcquireLock takes the lock under root, waiting for another holder to let
// go. It creates the state directory when needed.
func AcquireLock(root string) (*Lock, error) {
	dir := filepath.Join(root, StateDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create state directory %s: %w", dir, err)
	}

	path := filepath.Join(dir, "lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open lock %s: %w", path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return &Lock{f: f}, nil
}

// Release lets the next holder in. Closing the file drops the lock even if
// the process dies first.
func (l *Lock) Release() error {
	return l.f.Close()
}
