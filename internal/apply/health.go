package apply

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/mirrord/mirrord/internal/health"
	"github.com/mirrord/mirrord/internal/spec"
)

// healthFile is where the watch keeps the health order, in StateDir.
const healthFile = "health.json"

// LoadHealth reads the health order the watch saved under root; none saved
// yields an empty State.
func LoadHealth(root string) (health.State, error) {
	path := filepath.Join(root, StateDir, healthFile)
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return health.State{}, nil
	}
	if err != nil {
		return health.State{}, fmt.Errorf("read health order %s: %w", path, err)
	}
	var s health.State
	if err := json.Unmarshal(data, &s); err != nil {
		return health.State{}, fmt.Errorf("parse health order %s: %w", path, err)
	}
	return s, nil
}

// SaveHealth writes s under root atomically, 0600 like the rest of the
// state, when its bytes differ from the file's.
func SaveHealth(root string, s health.State) error {
	dir := filepath.Join(root, StateDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create state directory %s: %w", dir, err)
	}
	data, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return fmt.Errorf("encode health order: %w", err)
	}
	data = append(data, '\n')

	path := filepath.Join(dir, healthFile)
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, data) {
		return nil
	}
	if err := writeAtomic(path, data, 0o600); err != nil {
		return fmt.Errorf("write health order %s: %w", path, err)
	}
	return nil
}

// healthOrder returns s in the health order the watch saved, for the
// hosts.toml files; a health order that cannot be read is a warning and
// leaves the spec's order.
func (p *Plan) healthOrder(s spec.Spec) spec.Spec {
	h, err := LoadHealth(p.Root)
	if err != nil {
		p.Warnings = append(p.Warnings, err.Error()+"; hosts.toml keeps the spec's order")
		return s
	}
	p.Health = h
	return h.Order(s, time.Now())
}
