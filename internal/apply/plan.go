// Package apply turns a Config into changes on a node and carries them out.
//
// Build reads the node and renders what every managed runtime should have,
// changing nothing; the Plan it returns lists each file that differs, with
// its old and new bytes, and the action each runtime then needs. Execute
// writes a Plan: each file atomically, the original kept first under
// StateDir so that Revert can put it back byte for byte. Both run under the
// Lock when they may write.
//
// Carrying out actions (restart, reload) is not this package's job: Plan
// names them and an Actor does them.
package apply

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"slices"

	"github.com/mirrord/mirrord/internal/config"
	"github.com/mirrord/mirrord/internal/containerd"
	"github.com/mirrord/mirrord/internal/docker"
	"github.com/mirrord/mirrord/internal/health"
	"github.com/mirrord/mirrord/internal/k3s"
	"github.com/mirrord/mirrord/internal/spec"
)

// Verb is what a runtime's unit needs after its files changed.
type Verb string

// The verbs, least disruptive first.
const (
	None    Verb = "none"
	Reload  Verb = "reload"
	Restart Verb = "restart"
)

// Action is the verb one runtime needs, and why.
type Action struct {
	Runtime config.Runtime `json:"runtime"`
	Unit    string         `json:"unit"`
	Verb    Verb           `json:"action"`
	Reason  string         `json:"reason"`
}

// String reads as a line of apply's report: "restart containerd.service
// (config.toml changed)".
func (a Action) String() string {
	if a.Verb == None {
		return fmt.Sprintf("%s: no action (%s)", a.Runtime, a.Reason)
	}
	return fmt.Sprintf("%s: %s %s (%s)", a.Runtime, a.Verb, a.Unit, a.Reason)
}

// Change is one file whose bytes differ from what they should be.
type Change struct {
	// Path is the node path, as the runtime sees it.
	Path    string
	Runtime config.Runtime
	// Old is the content now; nil when the file does not exist.
	Old []byte
	// New is the content wanted; nil when the file must go.
	New []byte
	// Mode is the mode the file gets.
	Mode fs.FileMode
	// Restore means New is the original mirrord kept (or its absence): the
	// file leaves mirrord's care.
	Restore bool
	// Private means New carries credentials: it is written 0600, its diff
	// is masked and its digest is not logged.
	Private bool
}

// Plan is what Build found: the changes and actions that bring the node to
// the spec. A Plan with no changes is a no-op.
type Plan struct {
	Root     string
	Spec     spec.Spec
	Runtimes []config.Runtime
	Changes  []Change
	Actions  []Action
	Warnings []string
	// Health is the health order the hosts.toml files were rendered in.
	Health health.State

	state   *State
	claimed map[string]bool
	// release lists owned files that leave mirrord's care with this Plan.
	release []string

	// dockerVer is dockerd's release, once dockerProbed; see dockerVersion.
	dockerVer    docker.Version
	dockerProbed bool
}

// Build computes the Plan for cfg. It reads the node and changes nothing.
// Any runtime file it cannot parse is an error: mirrord never rewrites what
// it does not understand.
func Build(cfg config.Config, log *slog.Logger) (*Plan, error) {
	st, err := LoadState(cfg.Root)
	if err != nil {
		return nil, err
	}

	p := &Plan{Root: cfg.Root, Runtimes: cfg.Runtimes, state: st}
	if p.Runtimes == nil {
		p.Runtimes = DetectRuntimes(cfg.Root)
	}
	p.Spec = spec.Spec{Registries: st.Legacy}.Overlay(cfg.Spec)

	if len(cfg.Spec.Registries) == 0 && len(st.Files) == 0 {
		log.Info("no mirrors configured; nothing to do", "config", cfg.File)
		return p, nil
	}

	if slices.Contains(p.Runtimes, config.Containerd) {
		if err := p.containerd(cfg, log); err != nil {
			return nil, err
		}
	}
	if slices.Contains(p.Runtimes, config.Docker) {
		if err := p.docker(cfg); err != nil {
			return nil, err
		}
		if err := p.dockerCertsD(cfg); err != nil {
			return nil, err
		}
	}
	if slices.Contains(p.Runtimes, config.CRIO) || slices.Contains(p.Runtimes, config.Podman) {
		if err := p.containers(cfg); err != nil {
			return nil, err
		}
	}
	for _, rt := range []config.Runtime{config.K3s, config.RKE2} {
		if slices.Contains(p.Runtimes, rt) {
			if err := p.rancher(cfg, rt); err != nil {
				return nil, err
			}
		}
	}
	p.releaseUnwanted()
	return p, nil
}

func (p *Plan) node(nodePath string) string {
	return filepath.Join(p.Root, nodePath)
}

// want records that nodePath should hold data, if it does not already.
func (p *Plan) want(rt config.Runtime, nodePath string, data []byte, newMode fs.FileMode) error {
	old, mode, exists, err := readFile(p.node(nodePath))
	if err != nil {
		return fmt.Errorf("read %s: %w", nodePath, err)
	}
	if !exists {
		mode = newMode
	}
	p.claim(nodePath)

	if exists && bytes.Equal(old, data) {
		return nil
	}
	p.Changes = append(p.Changes, Change{Path: nodePath, Runtime: rt, Old: old, New: data,
		Mode: mode})
	return nil
}

// claim marks nodePath as wanted by this Build; every owned file not
// claimed goes back to its original.
func (p *Plan) claim(nodePath string) {
	if p.claimed == nil {
		p.claimed = map[string]bool{}
	}
	p.claimed[nodePath] = true
}

func (p *Plan) containerd(cfg config.Config, log *slog.Logger) error {
	cfgPath := containerd.ConfigFile
	src, _, exists, err := readFile(p.node(cfgPath))
	if err != nil {
		return fmt.Errorf("read containerd config %s: %w", cfgPath, err)
	}

	eff := p.Spec
	if exists {
		major := 0
		if !bytes.Contains(src, []byte("version")) {
			var how string
			major, how = containerd.DetectMajor(p.Root)
			log.Debug("containerd version", "major", major, "how", how)
		}
		edit, err := containerd.EditConfig(src, major)
		if err != nil {
			return fmt.Errorf("containerd config %s: %w", cfgPath, err)
		}

		if len(edit.Legacy) > 0 {
			for i := range edit.Legacy {
				edit.Legacy[i].Source.Name = cfgPath + " registry.mirrors"
			}
			legacy := spec.Spec{Registries: p.state.Legacy}.Overlay(
				spec.Spec{Registries: edit.Legacy})
			p.state.Legacy = legacy.Registries
			eff = legacy.Overlay(cfg.Spec)
			p.Spec = eff
		}
		switch {
		case edit.CRIDisabled:
			p.Warnings = append(p.Warnings, fmt.Sprintf("containerd: %s disables the CRI "+
				"plugin; config_path left as is, hosts.toml serves ctr and the transfer service "+
				"only", cfgPath))
		case edit.OldConfigPath != "":
			p.Warnings = append(p.Warnings, fmt.Sprintf("containerd: config_path was %q; "+
				"now %q (one directory: containerd 2.2+ reads a list as one name)",
				edit.OldConfigPath, containerd.CertsDir))
		}
		if !bytes.Equal(src, edit.Data) || p.state.Files[cfgPath] != nil {
			if err := p.want(config.Containerd, cfgPath, edit.Data, 0o644); err != nil {
				return err
			}
		}
	} else {
		major, how := containerd.DetectMajor(p.Root)
		p.Warnings = append(p.Warnings, fmt.Sprintf("containerd: no %s; writing a minimal "+
			"one (containerd version: %s)", cfgPath, how))
		if err := p.want(config.Containerd, cfgPath, containerd.MinimalConfig(major),
			0o644); err != nil {
			return err
		}
	}

	for _, r := range p.healthOrder(eff).Registries {
		hostsPath := path.Join(containerd.CertsDir, containerd.HostDir(r.Host), "hosts.toml")
		if err := p.wantHosts(config.Containerd, hostsPath, r); err != nil {
			return err
		}
	}
	return nil
}

func (p *Plan) docker(cfg config.Config) error {
	var v docker.Version
	if needsDockerVersion(cfg.Spec) {
		v = p.dockerVersion()
	}
	want, warnings := docker.Desired(cfg.Spec, v)
	for _, w := range warnings {
		p.Warnings = append(p.Warnings, "docker: "+w)
	}

	// dockerd refuses to start with a key set both as a flag and in
	// daemon.json, so a flag blocks only the key mirrord would write.
	var flags *docker.UnitFlagError
	if err := docker.CheckUnitFlags(p.Root); errors.As(err, &flags) {
		if flags.Has(docker.FlagMirror) || (flags.Has(docker.FlagInsecure) &&
			len(want.Insecure) > 0) {
			return fmt.Errorf("docker: %w", err)
		}
	} else if err != nil {
		return fmt.Errorf("docker: %w", err)
	}

	jsonPath := docker.DaemonJSON
	src, _, exists, err := readFile(p.node(jsonPath))
	if err != nil {
		return fmt.Errorf("read docker config %s: %w", jsonPath, err)
	}
	owned := p.state.Files[jsonPath] != nil
	if !exists && len(want.Mirrors) == 0 && len(want.Insecure) == 0 {
		return nil
	}

	var before docker.Settings
	if exists {
		if before, err = docker.ReadSettings(src); err != nil {
			return fmt.Errorf("docker config %s: %w", jsonPath, err)
		}
	}
	data, err := docker.EditDaemonJSON(src, want, p.state.DockerInsecure, owned)
	if err != nil {
		return fmt.Errorf("docker config %s: %w", jsonPath, err)
	}
	p.state.DockerInsecure = docker.AddedInsecure(before.Insecure, want.Insecure,
		p.state.DockerInsecure)
	if !bytes.Equal(src, data) || owned {
		return p.want(config.Docker, jsonPath, data, 0o644)
	}
	return nil
}

// needsDockerVersion reports whether dockerd's version matters: only path
// mirrors of Docker Hub depend on it.
func needsDockerVersion(s spec.Spec) bool {
	r, ok := s.Effective("docker.io")
	if !ok {
		return false
	}
	return slices.ContainsFunc(r.Mirrors, func(m spec.Mirror) bool { return m.Path() != "" })
}

// releaseUnwanted gives back every owned file this Build did not claim, as
// it was before mirrord, then decides the actions.
func (p *Plan) releaseUnwanted() {
	for _, nodePath := range p.state.owned() {
		if p.claimed[nodePath] {
			continue
		}
		c, err := p.restoreChange(nodePath, p.state.Files[nodePath])
		if err != nil {
			p.Warnings = append(p.Warnings, err.Error())
			continue
		}
		if c != nil {
			p.Changes = append(p.Changes, *c)
		}
		p.release = append(p.release, nodePath)
	}
	p.Actions = decideActions(p.Runtimes, p.Changes)
}

// restoreChange is the change that puts nodePath back as it was before
// mirrord, or nil when it already is.
func (p *Plan) restoreChange(nodePath string, f *FileState) (*Change, error) {
	old, _, exists, err := readFile(p.node(nodePath))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", nodePath, err)
	}
	c := &Change{Path: nodePath, Runtime: runtimeOf(nodePath), Old: old, Mode: f.Mode,
		Restore: true}
	if exists && f.SHA256 != "" && digest(old) != f.SHA256 {
		p.Warnings = append(p.Warnings, fmt.Sprintf("%s changed since mirrord wrote it; "+
			"putting back the original drops those changes", nodePath))
	}

	if f.Created {
		if !exists {
			return nil, nil
		}
		return c, nil
	}

	orig, err := os.ReadFile(filepath.Join(p.Root, StateDir, f.Backup))
	if err != nil {
		return nil, fmt.Errorf("read original of %s: %w", nodePath, err)
	}
	if exists && bytes.Equal(old, orig) {
		return nil, nil
	}
	c.New = orig
	return c, nil
}

// decideActions gives each unit of each managed runtime the least
// disruptive action its changes need: containerd reads hosts.toml on every
// pull but config.toml only at start; dockerd reloads its mirrors on
// SIGHUP; CRI-O reloads its registries on SIGHUP; podman reads them on every
// run; k3s and RKE2 render their containerd's files from registries.yaml
// when they start. A runtime with two units (server and agent) gets an
// action for each; the one that is not installed or not active gets
// nothing when the action is carried out.
func decideActions(runtimes []config.Runtime, changes []Change) []Action {
	var out []Action
	for _, rt := range runtimes {
		verb, reason := None, "nothing changed"
		for _, c := range changes {
			ok, v := reads(rt, c.Path)
			if !ok {
				continue
			}
			if rank(v) > rank(verb) || reason == "nothing changed" {
				verb, reason = v, reasonFor(rt, c.Path, v)
			}
		}

		units := rt.Units()
		if len(units) == 0 {
			units = []string{""}
		}
		for _, u := range units {
			out = append(out, Action{Runtime: rt, Unit: u, Verb: verb, Reason: reason})
		}
	}
	return out
}

// DetectRuntimes lists the runtimes installed under root: a binary in the
// usual places or, for containerd, dockerd and CRI-O, a configuration
// directory that is not empty; k3s and RKE2 by their unit files or
// binaries (k3s.Detect). Podman counts by its binary only: skopeo and
// buildah make /etc/containers too. An empty directory is no sign: kubelet
// makes each hostPath directory the DaemonSet of deploy/kubernetes mounts,
// empty, on a node without that runtime.
func DetectRuntimes(root string) []config.Runtime {
	marks := map[config.Runtime][]string{
		config.Containerd: {"usr/bin/containerd", "usr/local/bin/containerd",
			"usr/sbin/containerd", "etc/containerd"},
		config.Docker: {"usr/bin/dockerd", "usr/sbin/dockerd", "usr/local/bin/dockerd",
			"etc/docker"},
		config.CRIO:   {"usr/bin/crio", "usr/local/bin/crio", "etc/crio"},
		config.Podman: {"usr/bin/podman", "usr/local/bin/podman"},
	}
	for _, f := range k3s.Detect(root) {
		marks[config.Runtime(f.Name)] = []string{"."}
	}

	var out []config.Runtime
	for _, rt := range config.AllRuntimes {
		for _, m := range marks[rt] {
			if present(filepath.Join(root, m)) {
				out = append(out, rt)
				break
			}
		}
	}
	return out
}

// present reports whether path exists and, for a directory, holds anything.
func present(path string) bool {
	fi, err := os.Stat(path)
	if err != nil {
		return false
	}
	if !fi.IsDir() {
		return true
	}
	// An unreadable directory counts: it is not one kubelet just made.
	entries, err := os.ReadDir(path)
	return err != nil || len(entries) > 0
}

func discardLogger() *slog.Logger {
	return slog.New(slog.DiscardHandler)
}
