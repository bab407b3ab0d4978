// Package docker turns a mirror spec into dockerd's daemon.json settings and
// edits daemon.json without disturbing anything else in it; for dockerd with
// the containerd image store it also renders /etc/docker/certs.d hosts.toml
// files.
//
// Everything here is a pure function of its inputs except CheckUnitFlags,
// DetectVersion and CertsD, which read files under a root directory (and
// DetectVersion may run dockerd --version). Nothing here writes files or
// talks to dockerd; the apply engine does that with what these functions
// return.
//
// With its classic image store dockerd mirrors Docker Hub only (FACTS.md §3):
// registry-mirrors is the list of Hub mirrors, and insecure-registries lets
// it reach the plain-HTTP ones. From Docker 28, with the containerd image
// store, it also reads CertsDir/<host>/hosts.toml, which gives mirrors to
// every registry (FACTS.md §3.3): DetectImageStore and ReadsHostsTOML say
// whether to write those files, CertsD renders them. daemon.json keeps its
// mirrors either way, for a store that changes back.
package docker

import (
	"fmt"
	"slices"

	"github.com/mirrord/mirrord/internal/spec"
)

// DaemonJSON is where dockerd reads its configuration, relative to the
// node's root.
const DaemonJSON = "/etc/docker/daemon.json"

// hub is the registry host whose mirrors dockerd can use.
const hub = "docker.io"

// pathMirrorsSince is the first dockerd release that accepts a mirror URL
// with a path (moby commit c587ba3422, Docker 25.0.0).
var pathMirrorsSince = Version{Major: 25}

// Version is a dockerd release as major.minor ("20.10", "25.0"). The zero
// Version means the release is unknown.
type Version struct{ Major, Minor int }

// Known reports whether v names a release.
func (v Version) Known() bool { return v != Version{} }

// AtLeast reports whether v is known and not older than w.
func (v Version) AtLeast(w Version) bool {
	if !v.Known() {
		return false
	}
	return v.Major > w.Major || v.Major == w.Major && v.Minor >= w.Minor
}

// String renders v as "major.minor", or "unknown" for the zero Version.
func (v Version) String() string {
	if !v.Known() {
		return "unknown"
	}
	return fmt.Sprintf("%d.%d", v.Major, v.Minor)
}

// Settings are the two daemon.json keys that mirrord manages.
type Settings struct {
	// Mirrors is registry-mirrors: Docker Hub mirror URLs, in the order
	// dockerd tries them.
	Mirrors []string `json:"registry-mirrors"`

	// Insecure is the host[:port] entries of insecure-registries. From
	// Desired it holds only what mirrord wants there; from ReadSettings it
	// is the whole list in the file.
	Insecure []string `json:"insecure-registries"`
}

// Desired returns what daemon.json should say for s, and warnings for what
// it cannot say.
//
// The mirrors are those s applies to docker.io (s.Effective, so a wildcard
// list applies to Hub when docker.io has none of its own), in spec order;
// Insecure holds the host[:port] of each of them served over plain HTTP,
// once each. A mirror with a path needs dockerd 25.0 or later: for an older
// or unknown v it is left out, with a warning that names it. Other warnings
// name what daemon.json cannot express: no_upstream, pull-only mirrors, a CA
// file, skip_verify. Registries other than docker.io are ignored without a
// warning: dockerd mirrors only Docker Hub, as documented.
func Desired(s spec.Spec, v Version) (Settings, []string) {
	var out Settings
	var warnings []string
	r, ok := s.Effective(hub)
	if !ok {
		return out, nil
	}

	from := "docker.io"
	if r.Host == spec.Wildcard {
		from = "docker.io (from *)"
	}
	for _, m := range r.Mirrors {
		if why := leftOut(m); why != "" {
			warnings = append(warnings, fmt.Sprintf("%s mirror %s left out of daemon.json: %s",
				from, m.URL, why))
			continue
		}
		if m.Path() != "" && !v.AtLeast(pathMirrorsSince) {
			warnings = append(warnings, pathWarning(from, m.URL, v))
			continue
		}
		out.Mirrors = append(out.Mirrors, m.URL)
		if m.Scheme() == "http" && !slices.Contains(out.Insecure, m.Host()) {
			out.Insecure = append(out.Insecure, m.Host())
		}
		warnings = append(warnings, mirrorWarnings(from, m)...)
	}

	if r.NoUpstream {
		warnings = append(warnings, fmt.Sprintf("%s: no_upstream cannot be expressed in "+
			"daemon.json; dockerd still falls back to Docker Hub when every mirror fails", from))
	}
	return out, warnings
}

// leftOut says why m cannot go into daemon.json at all, or "" when it can:
// dockerd resolves tags on every mirror (so an untrusted one would name
// content), sends no credentials to mirrors, and knows registry roots only,
// never a repository prefix.
func leftOut(m spec.Mirror) string {
	switch {
	case m.Untrusted:
		return "it is untrusted (trusted = false), and dockerd would resolve tags on it"
	case m.Auth != nil:
		return "it needs credentials, which daemon.json cannot carry"
	case m.Prefix() != "":
		return "it serves a repository prefix (/v2/" + m.Prefix() + "), which dockerd " +
			"cannot use as a mirror"
	}
	return ""
}

// pathWarning explains why a mirror with a path was left out.
func pathWarning(from, url string, v Version) string {
	if !v.Known() {
		return fmt.Sprintf("%s mirror %s left out of daemon.json: it has a path, which needs "+
			"dockerd 25.0 or later, and the dockerd version is unknown", from, url)
	}
	return fmt.Sprintf("%s mirror %s left out of daemon.json: it has a path, which needs "+
		"dockerd 25.0 or later, and dockerd is %s", from, url, v)
}

// mirrorWarnings names the options of m that daemon.json cannot carry.
func mirrorWarnings(from string, m spec.Mirror) []string {
	var w []string
	if !m.Has(spec.Pull) || !m.Has(spec.Resolve) {
		w = append(w, fmt.Sprintf("%s mirror %s: capabilities %v cannot be expressed in "+
			"daemon.json; dockerd uses a mirror for tags and content alike", from, m.URL,
			m.Capabilities))
	}
	if m.CAFile != "" {
		w = append(w, fmt.Sprintf("%s mirror %s: ca_file cannot be expressed in daemon.json; "+
			"dockerd reads CA files from /etc/docker/certs.d/%s/", from, m.URL, m.Host()))
	}
	if m.SkipVerify {
		w = append(w, fmt.Sprintf("%s mirror %s: skip_verify cannot be expressed in "+
			"daemon.json; dockerd verifies the mirror's certificate unless %s is in "+
			"insecure-registries", from, m.URL, m.Host()))
	}
	return w
}
