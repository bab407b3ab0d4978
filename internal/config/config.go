// Package config resolves mirrord's desired state from its layered sources
// into one validated Config.
//
// Layers, lowest first: the config file and its drop-ins, the environment
// (MIRRORD_*), then command-line flags. A registry named by a higher layer
// takes its whole mirror list from that layer; registries it does not name
// keep theirs. Instance metadata, the lowest layer of DESIGN.md, is not read
// yet: MIRRORD_METADATA accepts only "none".
//
// Load fails on any invalid input, naming the source, the key and the value
// and saying what would be valid; a failed Load has read files but changed
// nothing.
package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/kelseyhightower/envconfig"

	"github.com/mirrord/mirrord/internal/spec"
)

// DefaultFile is the config file's path on the node, under the root.
const DefaultFile = "/etc/mirrord/mirrord.toml"

// Runtime names a container runtime mirrord can manage.
type Runtime string

// The runtimes mirrord manages.
const (
	Containerd Runtime = "containerd"
	Docker     Runtime = "docker"
)

// Unit names the systemd unit that runs the runtime.
func (r Runtime) Unit() string {
	switch r {
	case Containerd:
		return "containerd.service"
	case Docker:
		return "docker.service"
	}
	return ""
}

// AllRuntimes lists every runtime mirrord knows, in the order it handles them.
var AllRuntimes = []Runtime{Containerd, Docker}

// Options are what the command line gives Load. Empty fields fall back to
// the environment, then to defaults.
type Options struct {
	// Root is the directory every node path is under ("/" on a node).
	Root string
	// File is the config file; it is taken as given, not under Root.
	File string
	// Mirrors is the --mirrors flag in the compact form; it is the highest
	// layer.
	Mirrors string
}

// Config is the resolved, validated desired state.
type Config struct {
	// Root is the absolute directory every node path is under.
	Root string
	// File is the config file that was read, or would have been.
	File string
	// Spec is what the operator asked for, each registry with its source.
	Spec spec.Spec
	// Runtimes lists the runtimes to manage; nil means those found on the
	// node.
	Runtimes []Runtime
	// RuntimesFrom says which source set Runtimes.
	RuntimesFrom string
}

// Env is the environment mirrord reads, all prefixed MIRRORD_.
type Env struct {
	Mirrors  string `envconfig:"MIRRORS"`
	Runtimes string `envconfig:"RUNTIMES"`
	Root     string `envconfig:"ROOT"`
	Config   string `envconfig:"CONFIG"`
	Metadata string `envconfig:"METADATA"`
}

// ReadEnv reads the MIRRORD_* variables.
func ReadEnv() (Env, error) {
	var e Env
	if err := envconfig.Process("mirrord", &e); err != nil {
		return Env{}, fmt.Errorf("read environment: %w", err)
	}
	return e, nil
}

// Load resolves the Config from opts, the environment and the config file.
// On error the returned Config still carries Root and File when they could
// be resolved, so that status and revert can work on a node whose spec is
// broken.
func Load(opts Options) (Config, error) {
	env, err := ReadEnv()
	if err != nil {
		return Config{}, err
	}

	root := firstOf(opts.Root, env.Root, "/")
	root, err = filepath.Abs(root)
	if err != nil {
		return Config{}, fmt.Errorf("resolve root %s: %w", root, err)
	}
	c := Config{Root: root, File: filepath.Join(root, DefaultFile)}
	if f := firstOf(opts.File, env.Config); f != "" {
		c.File = f
	}

	if m := env.Metadata; m != "" && m != "none" {
		return c, fmt.Errorf("env MIRRORD_METADATA: %q: instance metadata is not "+
			"supported yet; valid: none", m)
	}

	file, err := loadFiles(c.File, root)
	if err != nil {
		return c, err
	}
	c.Spec = file.spec
	if file.runtimes != nil {
		c.Runtimes, c.RuntimesFrom = file.runtimes, file.runtimesFrom
	}

	if env.Mirrors != "" {
		s, err := spec.ParseCompact(env.Mirrors, spec.Source{Layer: spec.LayerEnv,
			Name: "MIRRORD_MIRRORS"})
		if err != nil {
			return c, fmt.Errorf("env MIRRORD_MIRRORS: %w", err)
		}
		c.Spec = c.Spec.Overlay(s)
	}
	if env.Runtimes != "" {
		rs, err := ParseRuntimes(strings.Split(env.Runtimes, ","))
		if err != nil {
			return c, fmt.Errorf("env MIRRORD_RUNTIMES: %w", err)
		}
		c.Runtimes, c.RuntimesFrom = rs, "env MIRRORD_RUNTIMES"
	}

	if opts.Mirrors != "" {
		s, err := spec.ParseCompact(opts.Mirrors, spec.Source{Layer: spec.LayerFlag,
			Name: "--mirrors"})
		if err != nil {
			return c, fmt.Errorf("flag --mirrors: %w", err)
		}
		c.Spec = c.Spec.Overlay(s)
	}
	return c, nil
}

// ParseRuntimes checks runtime names and returns them without duplicates.
func ParseRuntimes(names []string) ([]Runtime, error) {
	out := []Runtime{}
	for _, n := range names {
		n = strings.TrimSpace(n)
		if n == "" {
			continue
		}
		r := Runtime(n)
		if !slices.Contains(AllRuntimes, r) {
			return nil, fmt.Errorf("runtime %q is not known; valid: containerd, docker", n)
		}
		if !slices.Contains(out, r) {
			out = append(out, r)
		}
	}
	return out, nil
}

type fileLayer struct {
	spec         spec.Spec
	runtimes     []Runtime
	runtimesFrom string
}

// loadFiles reads the main file, then every drop-in in conf.d beside it in
// lexical order; a later file replaces the registries it names. A missing
// main file is no error: the node may be configured by other layers. Files
// under root are named by their node path, so that what mirrord writes does
// not depend on where the node is mounted.
func loadFiles(main, root string) (fileLayer, error) {
	paths := []string{main}
	dropins, err := filepath.Glob(filepath.Join(filepath.Dir(main), "conf.d", "*.toml"))
	if err != nil {
		return fileLayer{}, fmt.Errorf("list drop-ins of %s: %w", main, err)
	}
	slices.Sort(dropins)
	paths = append(paths, dropins...)

	var out fileLayer
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if errors.Is(err, fs.ErrNotExist) && p == main {
			continue
		}
		if err != nil {
			return fileLayer{}, fmt.Errorf("read config %s: %w", p, err)
		}

		f, err := ParseFile(data, nodePath(p, root))
		if err != nil {
			return fileLayer{}, err
		}
		out.spec = out.spec.Overlay(f.Spec)
		if f.Runtimes != nil {
			out.runtimes, out.runtimesFrom = f.Runtimes, "file "+nodePath(p, root)
		}
	}
	return out, nil
}

func firstOf(vals ...string) string {
	for _, v := range vals {
		if v != "" {
			return v
		}
	}
	return ""
}

// nodePath names path as the node sees it when it is under root.
func nodePath(path, root string) string {
	rel, err := filepath.Rel(root, path)
	if err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
		return path
	}
	return "/" + rel
}
