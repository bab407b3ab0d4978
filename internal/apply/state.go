package apply

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/mirrord/mirrord/internal/spec"
)

// StateDir is mirrord's state directory on the node, under the root. It holds
// state.json, the lock and the originals of the files mirrord changed.
const StateDir = "/var/lib/mirrord"

// stateVersion is the schema of state.json; a newer one is refused.
const stateVersion = 1

// State is what mirrord knows of its own past on a node: which files it owns,
// how to put each back, and what it did last. It lives in state.json.
type State struct {
	Version int `json:"version"`

	// Files maps each node path mirrord wrote to how it got there.
	Files map[string]*FileState `json:"files"`

	// Dirs lists the directories mirrord created, so that revert can remove
	// them once empty.
	Dirs []string `json:"dirs,omitempty"`

	// Legacy holds the registries moved out of containerd's legacy
	// registry.mirrors tables. They are gone from config.toml, so this is
	// their only record; they stay in force below every other layer.
	Legacy []spec.Registry `json:"legacy,omitempty"`

	// DockerInsecure lists what mirrord added to daemon.json's
	// insecure-registries, so that it removes only its own entries.
	DockerInsecure []string `json:"docker_insecure,omitempty"`

	// Spec is the effective spec of the last apply that changed something.
	Spec spec.Spec `json:"spec"`

	// Last is the last apply or revert that changed something.
	Last *Event `json:"last,omitempty"`

	// Pending lists actions decided but not carried out because they
	// failed; the next apply retries them.
	Pending []Action `json:"pending,omitempty"`

	// LastError says why the last actions failed, with the time.
	LastError string `json:"last_error,omitempty"`
}

// FileState is one file mirrord owns.
type FileState struct {
	// Created is true when the file did not exist before mirrord; revert
	// removes it.
	Created bool `json:"created"`
	// Backup is the original's copy under the state directory, relative to
	// it; empty when Created.
	Backup string `json:"backup,omitempty"`
	// Mode is the original's mode, restored with it.
	Mode fs.FileMode `json:"mode"`
	// SHA256 is the digest of what mirrord last wrote; a file that differs
	// has drifted.
	SHA256 string `json:"sha256"`
}

// Event records an apply or revert that changed the node.
type Event struct {
	Command string    `json:"command"`
	Time    time.Time `json:"time"`
	Files   []string  `json:"files"`
	Actions []Action  `json:"actions"`
}

// LoadState reads state.json under root; no file yields an empty State.
func LoadState(root string) (*State, error) {
	path := filepath.Join(root, StateDir, "state.json")
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return &State{Version: stateVersion, Files: map[string]*FileState{}}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read state %s: %w", path, err)
	}

	var st State
	if err := json.Unmarshal(data, &st); err != nil {
		return nil, fmt.Errorf("parse state %s: %w", path, err)
	}
	if st.Version != stateVersion {
		return nil, fmt.Errorf("parse state %s: version %d is not known; want %d",
			path, st.Version, stateVersion)
	}
	if st.Files == nil {
		st.Files = map[string]*FileState{}
	}
	return &st, nil
}

// save writes state.json atomically, 0600: backups may hold credentials.
func (st *State) save(root string) error {
	dir := filepath.Join(root, StateDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create state directory %s: %w", dir, err)
	}

	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("encode state: %w", err)
	}
	path := filepath.Join(dir, "state.json")
	if err := writeAtomic(path, append(data, '\n'), 0o600); err != nil {
		return fmt.Errorf("write state %s: %w", path, err)
	}
	return nil
}

// owned lists the node paths mirrord owns, sorted.
func (st *State) owned() []string {
	paths := make([]string, 0, len(st.Files))
	for p := range st.Files {
		paths = append(paths, p)
	}
	slices.Sort(paths)
	return paths
}

// backupPath is where the original of a node path is kept, relative to the
// state directory.
func backupPath(nodePath string) string {
	return filepath.Join("originals", strings.TrimPrefix(nodePath, "/"))
}

func digest(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}
