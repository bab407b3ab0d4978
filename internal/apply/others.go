package apply

import (
	"context"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"github.com/mirrord/mirrord/internal/config"
	"github.com/mirrord/mirrord/internal/containerd"
	"github.com/mirrord/mirrord/internal/docker"
	"github.com/mirrord/mirrord/internal/k3s"
	"github.com/mirrord/mirrord/internal/registries"
	"github.com/mirrord/mirrord/internal/spec"
)

// This file plans the runtimes beyond containerd and dockerd's
// daemon.json: the registries.conf drop-in of CRI-O and podman, dockerd's
// certs.d hosts.toml for its containerd image store, and the
// registries.yaml of k3s and RKE2. Each takes the spec as the layers gave
// it (cfg.Spec): containerd's legacy registry.mirrors are containerd's own.

// containers plans the drop-in that CRI-O and podman both read. When no
// registry of the spec can be expressed there the drop-in is not wanted,
// and one mirrord wrote goes back to what was there before.
func (p *Plan) containers(cfg config.Config) error {
	data, warnings := registries.Render(cfg.Spec)
	for _, w := range warnings {
		p.Warnings = append(p.Warnings, "crio/podman: "+w)
	}
	if data == nil {
		return nil
	}

	rt := config.CRIO
	if !slices.Contains(p.Runtimes, rt) {
		rt = config.Podman
	}
	return p.want(rt, registries.DropIn, data, 0o644)
}

// dockerCertsD plans /etc/docker/certs.d/<host>/hosts.toml, which dockerd
// 28 and later read with the containerd image store: mirrors for every
// registry, not only Docker Hub. daemon.json keeps its mirrors as well, for
// a store that changes back.
func (p *Plan) dockerCertsD(cfg config.Config) error {
	if len(cfg.Spec.Registries) == 0 {
		return nil
	}

	daemonJSON, _, _, err := readFile(p.node(docker.DaemonJSON))
	if err != nil {
		return fmt.Errorf("read docker config %s: %w", docker.DaemonJSON, err)
	}
	store, how, err := docker.DetectImageStore(daemonJSON, p.dockerVersion(), docker.StoreUnknown)
	if err != nil {
		return fmt.Errorf("docker config %s: %w", docker.DaemonJSON, err)
	}
	if reads, _ := docker.ReadsHostsTOML(p.dockerVersion(), store); reads &&
		store == docker.StoreUnknown {
		// Only the running daemon can tell; a daemon that is not running
		// leaves it unknown.
		hint := docker.AskImageStore(context.Background(), p.Root)
		store, how, _ = docker.DetectImageStore(daemonJSON, p.dockerVersion(), hint)
	}
	reads, why := docker.ReadsHostsTOML(p.dockerVersion(), store)
	if !reads {
		return nil
	}
	if store == docker.StoreUnknown {
		p.Warnings = append(p.Warnings, fmt.Sprintf("docker: %s; %s", how, why))
	}

	// The same order as containerd's files: mirrors that keep failing last.
	files, warnings, err := docker.CertsD(p.Root, p.healthOrder(cfg.Spec))
	if err != nil {
		return fmt.Errorf("docker: %w", err)
	}
	for _, w := range warnings {
		p.Warnings = append(p.Warnings, "docker: "+w)
	}
	for _, f := range files {
		if f.Private {
			err = p.wantPrivate(config.Docker, f.Path, f.Data)
		} else {
			err = p.want(config.Docker, f.Path, f.Data, 0o644)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// dockerVersion detects dockerd's release once per Build: it may run
// dockerd --version.
func (p *Plan) dockerVersion() docker.Version {
	if !p.dockerProbed {
		p.dockerVer, _ = docker.DetectVersion(p.Root)
		p.dockerProbed = true
	}
	return p.dockerVer
}

// rancher plans the registries.yaml of k3s or RKE2 (rt), with the
// operator's own entries kept. No file and no mirrors: nothing to write.
func (p *Plan) rancher(cfg config.Config, rt config.Runtime) error {
	file := rancherFile(rt)
	src, _, exists, err := readFile(p.node(file))
	if err != nil {
		return fmt.Errorf("read %s config %s: %w", rt, file, err)
	}
	owned := p.state.Files[file] != nil
	if !exists && len(cfg.Spec.Registries) == 0 {
		return nil
	}

	edit, err := k3s.Merge(src, cfg.Spec)
	if err != nil {
		return fmt.Errorf("%s config %s: %w", rt, file, err)
	}
	for _, w := range edit.Warnings {
		p.Warnings = append(p.Warnings, fmt.Sprintf("%s: %s", rt, w))
	}
	if edit.Changed || owned {
		// 0600 for a new file: the operator may add credentials to it.
		return p.want(rt, file, edit.Data, 0o600)
	}
	return nil
}

// rancherFile is the registries.yaml of k3s or RKE2.
func rancherFile(rt config.Runtime) string {
	if rt == config.RKE2 {
		return k3s.RKE2.File
	}
	return k3s.K3s.File
}

// reads reports whether runtime rt reads the node file nodePath, and the
// verb its unit then needs.
func reads(rt config.Runtime, nodePath string) (bool, Verb) {
	switch rt {
	case config.Containerd:
		switch {
		case nodePath == containerd.ConfigFile:
			return true, Restart
		case strings.HasPrefix(nodePath, containerd.CertsDir+"/"):
			return true, None
		}
	case config.Docker:
		switch {
		case nodePath == docker.DaemonJSON:
			return true, Reload
		case strings.HasPrefix(nodePath, docker.CertsDir+"/"):
			return true, None
		}
	case config.CRIO:
		return nodePath == registries.DropIn, Reload
	case config.Podman:
		return nodePath == registries.DropIn, None
	case config.K3s, config.RKE2:
		return nodePath == rancherFile(rt), Restart
	}
	return false, None
}

// reasonFor says why a runtime's unit gets verb after nodePath changed.
func reasonFor(rt config.Runtime, nodePath string, v Verb) string {
	name := path.Base(nodePath)
	switch {
	case rt == config.Containerd && v == None:
		return "only hosts.toml changed; containerd reads it on every pull"
	case rt == config.Docker && v == None:
		return "only certs.d hosts.toml changed; dockerd reads it on every pull"
	case rt == config.Podman:
		return name + " changed; podman reads it on every run"
	}
	return name + " changed"
}

// runtimeOf names the runtime that reads nodePath, for a file whose
// runtime the Plan was not told: a file Revert puts back.
func runtimeOf(nodePath string) config.Runtime {
	for _, rt := range config.AllRuntimes {
		if ok, _ := reads(rt, nodePath); ok {
			return rt
		}
	}
	return config.Containerd
}

// containersStatus lists the registries CRI-O and podman see with mirrors:
// the main registries.conf and every drop-in, merged as containers/image
// merges them, so an operator's later drop-in that overrides mirrord's
// entry shows as not mirrord's. A file that does not parse is left out.
func containersStatus(root string, last spec.Spec) []RegistryStatus {
	var files []registries.File
	var names []string
	if data, err := os.ReadFile(filepath.Join(root, registries.MainFile)); err == nil {
		if f, err := registries.Parse(data); err == nil {
			files, names = append(files, f), append(names, registries.MainFile)
		}
	}
	dropIns, _ := filepath.Glob(filepath.Join(root, registries.Dir, "*.conf"))
	slices.Sort(dropIns)
	for _, file := range dropIns {
		data, err := os.ReadFile(file)
		if err != nil {
			continue
		}
		if f, err := registries.Parse(data); err == nil {
			files = append(files, f)
			names = append(names, path.Join(registries.Dir, filepath.Base(file)))
		}
	}

	out := []RegistryStatus{}
	for _, r := range registries.Effective(files...) {
		if len(r.Mirrors) == 0 {
			continue
		}
		rs := RegistryStatus{Host: r.Prefix, Source: "not mirrord's"}
		for i := len(files) - 1; i >= 0; i-- {
			if slices.ContainsFunc(files[i].Registries, func(x registries.Registry) bool {
				return x.Prefix == r.Prefix
			}) {
				rs.File = names[i]
				if files[i].Managed {
					rs.Source = managedSource(last, r.Prefix)
				}
				break
			}
		}
		for _, m := range r.Mirrors {
			rs.Mirrors = append(rs.Mirrors, m.Location)
		}
		out = append(out, rs)
	}
	return out
}

// rancherStatus lists the mirrors of the registries.yaml of k3s or RKE2.
func rancherStatus(root string, rt config.Runtime, last spec.Spec) []RegistryStatus {
	file := rancherFile(rt)
	out := []RegistryStatus{}
	data, err := os.ReadFile(filepath.Join(root, file))
	if err != nil {
		return out
	}
	f, err := k3s.Parse(data)
	if err != nil {
		return out
	}

	for _, m := range f.Mirrors {
		rs := RegistryStatus{Host: m.Registry, Mirrors: m.Endpoints, Source: "not mirrord's",
			File: file}
		if m.Managed {
			rs.Source = managedSource(last, m.Registry)
		}
		out = append(out, rs)
	}
	return out
}

// managedSource names the source of a registry mirrord wrote: its layer
// as the last apply recorded it, or just "mirrord".
func managedSource(last spec.Spec, host string) string {
	if r, ok := last.Lookup(host); ok {
		return r.Source.String()
	}
	return "mirrord"
}
