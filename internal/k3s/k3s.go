// Package k3s merges mirrord's mirrors into the registries.yaml of k3s and
// RKE2, which both render their embedded containerd's hosts.toml files from
// it when the service starts (FACTS.md §5): mirrord never writes under their
// data directories, which they regenerate.
//
// The file is shared with the operator. mirrord owns only the entries it
// marks, each with a head comment that reads "# Managed by mirrord; ...":
// mirrors.<registry> for the registries of the spec, and configs.<mirror
// host> for a mirror that needs a CA file or skip_verify. Everything else is
// the operator's and stays: mirrors of other registries, rewrites, configs
// with auth and tls, unknown keys. Removing a registry from the spec removes
// its marked entry.
//
// Everything here is a pure function of its inputs except Detect, which
// looks for files under a root directory. Nothing here writes a file or
// restarts a unit; the apply engine does that, and k3s and RKE2 take the
// file only when restarted.
package k3s

import (
	"os"
	"path/filepath"
)

// Flavor is one of the distributions that read a registries.yaml.
type Flavor struct {
	// Name is "k3s" or "rke2".
	Name string

	// File is the node path of its registries.yaml.
	File string

	// Units are the units that read File, server first: a node runs one
	// of them. Restart whichever is active after File changed.
	Units []string
}

// The two flavors. RKE2 reads the same format as k3s, from its own path.
var (
	K3s = Flavor{Name: "k3s", File: "/etc/rancher/k3s/registries.yaml",
		Units: []string{"k3s.service", "k3s-agent.service"}}
	RKE2 = Flavor{Name: "rke2", File: "/etc/rancher/rke2/registries.yaml",
		Units: []string{"rke2-server.service", "rke2-agent.service"}}
)

// unitDirs are where Detect looks for the flavors' unit files.
var unitDirs = []string{"etc/systemd/system", "usr/lib/systemd/system", "lib/systemd/system",
	"usr/local/lib/systemd/system"}

// binaries are where the install scripts and packages put each binary.
var binaries = map[string][]string{
	"k3s":  {"usr/local/bin/k3s", "usr/bin/k3s"},
	"rke2": {"usr/local/bin/rke2", "usr/bin/rke2", "opt/rke2/bin/rke2"},
}

// Detect returns the flavors installed under root, k3s first: those with a
// unit file of theirs in a systemd unit directory or their binary where
// the install script or package puts it. It reads nothing else and runs
// nothing.
func Detect(root string) []Flavor {
	if root == "" {
		root = "/"
	}

	var found []Flavor
	for _, f := range []Flavor{K3s, RKE2} {
		if installed(root, f) {
			found = append(found, f)
		}
	}
	return found
}

// installed reports whether a unit file or the binary of f exists.
func installed(root string, f Flavor) bool {
	var paths []string
	for _, dir := range unitDirs {
		for _, u := range f.Units {
			paths = append(paths, filepath.Join(dir, u))
		}
	}
	paths = append(paths, binaries[f.Name]...)

	for _, p := range paths {
		if _, err := os.Stat(filepath.Join(root, p)); err == nil {
			return true
		}
	}
	return false
}
