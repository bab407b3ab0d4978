// Package spec holds mirrord's desired state: which mirrors serve which
// registry, in which order, with which options, and which source said so.
//
// A Spec is built by package config from its layered sources and is always
// valid once built: every registry host is normalised and unique, and every
// mirror URL has passed ValidateMirrorURL. The renderers of each runtime take
// a Spec as it is and never fail on its content.
package spec

import (
	"fmt"
	"net/url"
	"path"
	"slices"
	"strings"
)

// Wildcard is the registry host that stands for every registry without a
// spec of its own.
const Wildcard = "*"

// Capability names what a mirror may be asked for. containerd's hosts.toml
// knows both; the other runtimes only pull through mirrors.
type Capability string

// The capabilities a mirror may have. Resolve means tags are resolved on the
// mirror; a mirror with Pull only serves content by digest.
const (
	Pull    Capability = "pull"
	Resolve Capability = "resolve"
)

// DefaultCapabilities is what a mirror gets when its spec names none.
var DefaultCapabilities = []Capability{Pull, Resolve}

// Layer is the kind of source a registry's mirror list came from. Layers are
// ordered: a registry named by a higher layer takes its whole list from it.
type Layer string

// The layers, lowest first. Legacy is the set of registry.mirrors tables that
// mirrord moved out of containerd's config.toml; it sits below everything the
// operator states to mirrord directly. Metadata is the instance's metadata.
const (
	LayerLegacy   Layer = "legacy"
	LayerMetadata Layer = "metadata"
	LayerFile     Layer = "file"
	LayerEnv      Layer = "env"
	LayerFlag     Layer = "flag"
)

// Source says where a registry's mirror list came from: the layer and the
// exact place in it (a file path, an environment variable, a flag).
type Source struct {
	Layer Layer  `json:"layer"`
	Name  string `json:"name"`
}

// String renders the source as it appears in errors and logs, for example
// "env MIRRORD_MIRRORS" or "file /etc/mirrord/conf.d/10-hub.toml".
func (s Source) String() string {
	if s.Name == "" {
		return string(s.Layer)
	}
	return string(s.Layer) + " " + s.Name
}

// Mirror is one mirror of a registry.
type Mirror struct {
	// URL is the mirror's registry root, normalised: scheme http or https,
	// lowercase host, no trailing slash, no user info, query or fragment.
	// A path, if any, is the root under which the mirror serves /v2/.
	URL string `json:"url"`

	// Capabilities is never empty in a valid Spec; it keeps the order pull,
	// resolve.
	Capabilities []Capability `json:"capabilities"`

	// CAFile is a PEM bundle that verifies the mirror's certificate, as an
	// absolute path on the node; empty means the system roots.
	CAFile string `json:"ca_file,omitempty"`

	// SkipVerify turns off TLS verification for this mirror.
	SkipVerify bool `json:"skip_verify,omitempty"`

	// Auth, when set, holds the credentials sent to this mirror only.
	Auth *Auth `json:"auth,omitempty"`

	// Untrusted marks a mirror that may serve content but not name it:
	// its capabilities are Pull only, so tags are resolved elsewhere (the
	// next mirror that may resolve, or the upstream) and the mirror can
	// only serve blobs and manifests by the digest that host named.
	Untrusted bool `json:"untrusted,omitempty"`
}

// Scheme returns "http" or "https".
func (m Mirror) Scheme() string {
	s, _, _ := strings.Cut(m.URL, "://")
	return s
}

// Host returns the mirror's host[:port].
func (m Mirror) Host() string {
	_, rest, _ := strings.Cut(m.URL, "://")
	host, _, _ := strings.Cut(rest, "/")
	return host
}

// Path returns the mirror's path without a trailing slash, or "" when the
// mirror serves /v2/ at its root.
func (m Mirror) Path() string {
	_, rest, _ := strings.Cut(m.URL, "://")
	_, path, found := strings.Cut(rest, "/")
	if !found {
		return ""
	}
	return "/" + path
}

// Prefix returns the repository prefix of a mirror that serves a registry
// under a namespace of its own API (URL https://host/v2/PREFIX: GitLab's
// dependency proxy, a Harbor proxy project), or "" for a mirror whose URL
// is a registry root.
func (m Mirror) Prefix() string {
	p, ok := strings.CutPrefix(m.Path(), "/v2/")
	if !ok {
		return ""
	}
	return p
}

// API returns the URL that a repository path is appended to: the root's
// /v2 for a mirror at a registry root (https://m/v2, https://m/hub/v2), or
// the URL itself for a mirror at a repository prefix (https://m/v2/PREFIX).
// A request for repo's manifest goes to API()+"/"+repo+"/manifests/"+ref.
func (m Mirror) API() string {
	if m.Prefix() != "" {
		return m.URL
	}
	return m.URL + "/v2"
}

// Has reports whether the mirror has capability c.
func (m Mirror) Has(c Capability) bool {
	return slices.Contains(m.Capabilities, c)
}

// Registry is the mirror list of one registry host.
type Registry struct {
	// Host is the normalised registry host[:port] ("docker.io", "quay.io",
	// "127.0.0.1:5000"), or Wildcard.
	Host string `json:"host"`

	// Mirrors are tried in this order, then the upstream unless NoUpstream.
	Mirrors []Mirror `json:"mirrors"`

	// NoUpstream drops the registry itself as the last resort: pulls then
	// fail when every mirror fails.
	NoUpstream bool `json:"no_upstream,omitempty"`

	// Source is where this list came from.
	Source Source `json:"source"`

	// Canary is the image that mirrord check and the watch's probes ask
	// each mirror for, as REPO:TAG or REPO@DIGEST (HOST/REPO:TAG for
	// Wildcard); "" means DefaultCanary unless NoCanary.
	Canary string `json:"canary,omitempty"`

	// NoCanary turns the canary off: probes then only ask for /v2/.
	NoCanary bool `json:"no_canary,omitempty"`
}

// CanaryRef returns the canary the probes ask for, "" for none.
func (r Registry) CanaryRef() string {
	switch {
	case r.NoCanary:
		return ""
	case r.Canary != "":
		return r.Canary
	}
	return DefaultCanary(r.Host)
}

// Spec is the whole desired state: at most one Registry per host, sorted by
// host with Wildcard first.
type Spec struct {
	Registries []Registry `json:"registries"`
}

// Lookup returns the registry with the given normalised host.
func (s Spec) Lookup(host string) (Registry, bool) {
	for _, r := range s.Registries {
		if r.Host == host {
			return r, true
		}
	}
	return Registry{}, false
}

// Effective returns the mirror list that applies to host: its own, or the
// wildcard's when it has none.
func (s Spec) Effective(host string) (Registry, bool) {
	if r, ok := s.Lookup(host); ok {
		return r, true
	}
	return s.Lookup(Wildcard)
}

// Overlay returns a Spec where every registry of upper replaces the same host
// of s whole; registries that only s names stay.
func (s Spec) Overlay(upper Spec) Spec {
	merged := slices.Clone(upper.Registries)
	for _, r := range s.Registries {
		if _, ok := upper.Lookup(r.Host); !ok {
			merged = append(merged, r)
		}
	}
	sortRegistries(merged)
	return Spec{Registries: merged}
}

func sortRegistries(rs []Registry) {
	slices.SortFunc(rs, func(a, b Registry) int {
		switch {
		case a.Host == b.Host:
			return 0
		case a.Host == Wildcard:
			return -1
		case b.Host == Wildcard:
			return 1
		}
		return strings.Compare(a.Host, b.Host)
	})
}

// New builds a Spec from registries, normalising each host and checking that
// no host appears twice. It does not validate mirrors; callers build them
// with NewMirror.
func New(rs []Registry) (Spec, error) {
	seen := make(map[string]Source, len(rs))
	out := make([]Registry, 0, len(rs))
	for _, r := range rs {
		host, err := NormalizeHost(r.Host)
		if err != nil {
			return Spec{}, err
		}
		if prev, dup := seen[host]; dup {
			return Spec{}, fmt.Errorf("registry %q given twice (also in %s); "+
				"name each registry once", r.Host, prev)
		}
		seen[host] = r.Source
		r.Host = host
		out = append(out, r)
	}
	sortRegistries(out)
	return Spec{Registries: out}, nil
}

// dockerHubAliases are the names Docker Hub answers to; all mean docker.io.
var dockerHubAliases = []string{"docker.io", "index.docker.io", "registry-1.docker.io"}

// NormalizeHost lowercases a registry host and folds Docker Hub's aliases
// into "docker.io". It accepts host, host:port and Wildcard, and refuses
// anything with a scheme, path or space, or longer than 253 bytes.
func NormalizeHost(host string) (string, error) {
	h := strings.ToLower(strings.TrimSpace(host))
	switch {
	case h == "":
		return "", fmt.Errorf("registry name is empty; want a host such as docker.io, " +
			"a host:port, or * for every registry")
	case h == Wildcard:
		return h, nil
	case strings.Contains(h, "://"):
		return "", fmt.Errorf("registry %q has a scheme; want a bare host such as quay.io", host)
	case strings.ContainsAny(h, "/ \t?#@*"):
		return "", fmt.Errorf("registry %q is not a host; want a host such as quay.io "+
			"or a host:port such as 10.0.0.5:5000", host)
	}
	u, err := url.Parse("https://" + h)
	if err != nil || u.Host != h || u.Hostname() == "" {
		return "", fmt.Errorf("registry %q is not a host; want a host such as quay.io "+
			"or a host:port such as 10.0.0.5:5000", host)
	}
	if len(h) > maxHostLen {
		return "", fmt.Errorf("registry %q is %d bytes long; a host[:port] has at most %d",
			clip(host), len(h), maxHostLen)
	}
	if slices.Contains(dockerHubAliases, h) {
		return "docker.io", nil
	}
	return h, nil
}

// maxHostLen is the longest registry host[:port], in bytes once normalised:
// a DNS name has at most 253 characters, and the host names a directory
// (containerd's certs.d/<host>), which no file system lets be longer than
// 255 bytes.
const maxHostLen = 253

// clip shortens s for an error message.
func clip(s string) string {
	if r := []rune(s); len(r) > 40 {
		return string(r[:40]) + "..."
	}
	return s
}

// Upstream returns the URL of the registry itself, as containerd's server
// line names it. Docker Hub's API lives on registry-1.docker.io. Wildcard has
// no single upstream and yields "".
func Upstream(host string) string {
	switch host {
	case Wildcard:
		return ""
	case "docker.io":
		return "https://registry-1.docker.io"
	}
	return "https://" + host
}

// NewMirror validates raw as a mirror URL and returns the mirror with the
// default capabilities.
func NewMirror(raw string) (Mirror, error) {
	u, err := ValidateMirrorURL(raw)
	if err != nil {
		return Mirror{}, err
	}
	return Mirror{URL: u, Capabilities: slices.Clone(DefaultCapabilities)}, nil
}

// ValidateMirrorURL checks that raw is a URL a runtime can use as a mirror
// and returns it normalised. The error says what is wrong and what would be
// valid; it does not repeat raw, which the caller names with its source.
func ValidateMirrorURL(raw string) (string, error) {
	if strings.TrimSpace(raw) == "" {
		return "", fmt.Errorf("mirror URL is empty; want http(s)://host[:port][/path]")
	}
	if strings.ContainsAny(raw, " \t\r\n") {
		return "", fmt.Errorf("mirror URL contains white space; want http(s)://host[:port][/path]")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("mirror URL does not parse (%v); want http(s)://host[:port][/path]",
			unwrapURLError(err))
	}

	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return "", fmt.Errorf("mirror URL scheme %q is not supported; want http:// or https://",
			u.Scheme)
	case u.Opaque != "" || u.Host == "":
		return "", fmt.Errorf("mirror URL has no host; want http(s)://host[:port][/path]")
	case u.User != nil:
		return "", fmt.Errorf("mirror URL carries credentials; put them in the mirror's " +
			"credentials, never in the URL")
	case u.RawQuery != "" || u.ForceQuery:
		return "", fmt.Errorf("mirror URL has a query; want http(s)://host[:port][/path] " +
			"without ?")
	case u.Fragment != "" || strings.Contains(raw, "#"):
		return "", fmt.Errorf("mirror URL has a fragment; want http(s)://host[:port][/path] " +
			"without #")
	case u.Hostname() == "":
		return "", fmt.Errorf("mirror URL has no host; want http(s)://host[:port][/path]")
	}

	// Dot segments and doubled slashes go: the path is sent as it is
	// written, and containerd and k3s take it verbatim as the API root.
	if u.Path != "" {
		u.Path, u.RawPath = path.Clean("/"+u.Path), ""
	}
	root := strings.TrimRight(u.EscapedPath(), "/")
	if err := checkV2(root); err != nil {
		return "", err
	}
	return u.Scheme + "://" + strings.ToLower(u.Host) + root, nil
}

// checkV2 accepts the two forms of a mirror path: a registry root
// (/hub: the API is /hub/v2/...) or, starting with /v2/, a repository
// prefix in the API (/v2/group/dependency_proxy/containers). Any other /v2
// segment would make the runtimes ask for a doubled /v2.
func checkV2(path string) error {
	if path == "" {
		return nil
	}
	if path == "/v2" {
		return fmt.Errorf("mirror URL path ends in /v2; give the registry root " +
			"(mirrord and the runtimes add /v2 themselves)")
	}

	segs := strings.Split(strings.TrimPrefix(path, "/"), "/")
	rest := segs
	if segs[0] == "v2" {
		rest = segs[1:]
	}
	for i, s := range rest {
		if s != "v2" {
			continue
		}
		if i == len(rest)-1 && segs[0] != "v2" {
			return fmt.Errorf("mirror URL path ends in /v2; give the registry root " +
				"(mirrord and the runtimes add /v2 themselves)")
		}
		return fmt.Errorf("mirror URL path %s would yield a doubled /v2; give the registry "+
			"root (https://host/hub for /hub/v2/...) or, for a mirror at a repository "+
			"prefix, /v2/ then the prefix alone (https://host/v2/group/dependency_proxy/"+
			"containers)", path)
	}
	return nil
}

func unwrapURLError(err error) error {
	if ue, ok := err.(*url.Error); ok {
		return ue.Err
	}
	return err
}

// ParseCapabilities checks names against the known capabilities and returns
// them in canonical order without duplicates.
func ParseCapabilities(names []string) ([]Capability, error) {
	if len(names) == 0 {
		return nil, fmt.Errorf("capabilities are empty; want \"pull\", \"resolve\" or both")
	}
	var out []Capability
	for _, c := range []Capability{Pull, Resolve} {
		if slices.Contains(names, string(c)) {
			out = append(out, c)
		}
	}
	for _, n := range names {
		if n != string(Pull) && n != string(Resolve) {
			return nil, fmt.Errorf("capability %q is not known; want \"pull\", \"resolve\" or both", n)
		}
	}
	return out, nil
}
