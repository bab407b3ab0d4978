// Package registries renders what mirrord writes for CRI-O and podman: one
// drop-in under /etc/containers/registries.conf.d in the version 2 format of
// containers-registries.conf(5), and reads such a drop-in back for status.
//
// Both runtimes read registries through the containers/image library: the
// main registries.conf first, then every *.conf drop-in in byte order, where
// a [[registry]] whose prefix an earlier file already named replaces that
// entry whole (containers-registries.conf.d(5)). mirrord writes one
// [[registry]] per registry of the spec and nothing else: no
// unqualified-search-registries, no aliases, no other file under
// /etc/containers.
//
// Everything here is a pure function of its inputs. Nothing here writes a
// file or signals a runtime; the apply engine does that. After a change,
// CRI-O needs a reload (SIGHUP, its unit's ExecReload); podman reads the
// files on every command and needs nothing.
package registries

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/mirrord/mirrord/internal/spec"
)

// MainFile is the main registries.conf, read before the drop-ins.
const MainFile = "/etc/containers/registries.conf"

// Dir is the drop-in directory that CRI-O and rootful podman read.
const Dir = "/etc/containers/registries.conf.d"

// DropIn is the node path of mirrord's drop-in.
//
// The 90 places it after the drop-ins that distributions and most tools
// ship (Fedora's 000-shortnames.conf, 01-* and 50-* files, Debian's
// shortnames.conf sorts later but holds only aliases), so for the registries
// of the spec mirrord's entry is the one that counts: a later file replaces
// an earlier [[registry]] of the same prefix. It still leaves room after it:
// an operator who must override mirrord for one prefix by hand names a file
// that sorts later, such as 95-local.conf or local.conf.
const DropIn = Dir + "/90-mirrord.conf"

// managedMarker opens the first line of the drop-in.
const managedMarker = "# Managed by mirrord"

// The values of a mirror's pull-from-mirror key.
const (
	PullAll        = "all"
	PullDigestOnly = "digest-only"
	PullTagOnly    = "tag-only"
)

// Render returns mirrord's drop-in for s, and warnings for what the format
// cannot say; nil data means no registry of s can be expressed and the
// drop-in should not exist.
//
// Registries come sorted by host, each a [[registry]] with prefix and
// location set to the host and a comment naming its source; its mirrors
// follow as [[registry.mirror]] tables in spec order, the order
// containers/image tries them in before location. A mirror's location is
// its host[:port]. It gets insecure = true when it is plain HTTP or
// skip_verify is set: containers/image then allows HTTP and unverified TLS.
// A mirror without the resolve capability gets pull-from-mirror =
// "digest-only", so tags are never resolved on it. With NoUpstream the last
// mirror becomes the registry's location, so nothing reaches the registry
// itself.
//
// Warned and skipped: the wildcard registry (a prefix names one registry or
// *.domain, never every registry), a mirror with a path (in registries.conf a
// path is a repository namespace on the mirror, not the root /v2/ is served
// under, as the spec means it), a mirror with resolve but not pull, and a
// registry left with no mirror. Warned and kept: a mirror with a CA file
// (containers/image takes CAs only from /etc/containers/certs.d/<host>/),
// and a NoUpstream registry whose last mirror cannot resolve tags (as the
// location it resolves them anyway).
func Render(s spec.Spec) ([]byte, []string) {
	regs := slices.Clone(s.Registries)
	slices.SortFunc(regs, func(a, b spec.Registry) int { return strings.Compare(a.Host, b.Host) })

	var entries []Registry
	var sources []string
	var warnings []string
	for _, r := range regs {
		e, w, ok := entry(r)
		warnings = append(warnings, w...)
		if ok {
			entries = append(entries, e)
			sources = append(sources, r.Source.String())
		}
	}
	if len(entries) == 0 {
		return nil, warnings
	}

	var b bytes.Buffer
	fmt.Fprintf(&b, "%s: CRI-O and podman read this registries.conf drop-in; "+
		"edits are overwritten.\n", managedMarker)
	b.WriteString("# Change the mirrord spec instead. A later drop-in replaces a [[registry]] " +
		"of the same prefix.\n")
	for i, e := range entries {
		writeRegistry(&b, e, sources[i])
	}
	return b.Bytes(), warnings
}

// entry converts one registry of the spec, with warnings for what it had
// to leave out. ok is false when nothing of r can be expressed.
func entry(r spec.Registry) (e Registry, warnings []string, ok bool) {
	if r.Host == spec.Wildcard {
		return Registry{}, []string{"registry *: cannot be expressed in registries.conf " +
			"(a prefix names one registry or *.domain, never every registry); " +
			"skipped for CRI-O and podman"}, false
	}

	if !utf8.ValidString(r.Host) {
		return Registry{}, []string{fmt.Sprintf("registry %q: not valid UTF-8, which TOML "+
			"cannot hold; skipped for CRI-O and podman", r.Host)}, false
	}

	e = Registry{Prefix: r.Host, Location: r.Host}
	for _, m := range r.Mirrors {
		mir, w, keep := convertMirror(r.Host, m)
		warnings = append(warnings, w...)
		if keep {
			e.Mirrors = append(e.Mirrors, mir)
		}
	}
	if len(e.Mirrors) == 0 {
		warnings = append(warnings, fmt.Sprintf("registry %s: no mirror can be expressed in "+
			"registries.conf; left out, so CRI-O and podman do what the other "+
			"registries.conf files say for it", r.Host))
		return Registry{}, warnings, false
	}

	if r.NoUpstream {
		last := e.Mirrors[len(e.Mirrors)-1]
		e.Mirrors = e.Mirrors[:len(e.Mirrors)-1]
		e.Location = last.Location
		e.Insecure = last.Insecure
		if last.PullFromMirror == PullDigestOnly {
			warnings = append(warnings, fmt.Sprintf("registry %s mirror %s: no_upstream makes "+
				"it the location, where CRI-O and podman resolve tags too, despite its "+
				"pull-only capabilities", r.Host, last.Location))
		}
	}
	return e, warnings, true
}

// convertMirror converts one mirror of registry host.
func convertMirror(host string, m spec.Mirror) (Mirror, []string, bool) {
	if !utf8.ValidString(m.URL) {
		return Mirror{}, []string{fmt.Sprintf("registry %s mirror %q: not valid UTF-8, "+
			"which TOML cannot hold; left out of registries.conf", host, m.URL)}, false
	}
	if m.Auth != nil {
		return Mirror{}, []string{fmt.Sprintf("registry %s mirror %s: left out of "+
			"registries.conf: it needs credentials, which CRI-O and podman take from "+
			"auth.json, not from mirrord", host, m.URL)}, false
	}
	if m.Path() != "" && m.Prefix() == "" {
		return Mirror{}, []string{fmt.Sprintf("registry %s mirror %s: left out of "+
			"registries.conf: it has a path, which containers/image would read as a "+
			"repository namespace on %s, not as the root /v2/ is served under",
			host, m.URL, m.Host())}, false
	}
	if !m.Has(spec.Pull) {
		return Mirror{}, []string{fmt.Sprintf("registry %s mirror %s: left out of "+
			"registries.conf: it may resolve tags but not serve content, which "+
			"containers/image cannot express", host, m.URL)}, false
	}

	// A repository prefix is what containers/image calls a namespace.
	location := m.Host()
	if m.Prefix() != "" {
		location += "/" + m.Prefix()
	}
	mir := Mirror{Location: location, Insecure: m.Scheme() == "http" || m.SkipVerify}
	if !m.Has(spec.Resolve) {
		mir.PullFromMirror = PullDigestOnly
	}

	var warnings []string
	if m.CAFile != "" {
		warnings = append(warnings, fmt.Sprintf("registry %s mirror %s: ca_file cannot be "+
			"expressed in registries.conf; CRI-O and podman read CA files from "+
			"/etc/containers/certs.d/%s/*.crt", host, m.URL, m.Host()))
	}
	return mir, warnings, true
}

// writeRegistry writes one [[registry]] table and its mirrors.
func writeRegistry(b *bytes.Buffer, e Registry, source string) {
	if source == "" {
		fmt.Fprintf(b, "\n# %s\n", e.Prefix)
	} else {
		fmt.Fprintf(b, "\n# %s: from %s\n", e.Prefix, comment(source))
	}
	b.WriteString("[[registry]]\n")
	fmt.Fprintf(b, "prefix = %s\n", quote(e.Prefix))
	fmt.Fprintf(b, "location = %s\n", quote(e.Location))
	if e.Insecure {
		b.WriteString("insecure = true\n")
	}

	for _, m := range e.Mirrors {
		b.WriteString("\n[[registry.mirror]]\n")
		fmt.Fprintf(b, "location = %s\n", quote(m.Location))
		if m.Insecure {
			b.WriteString("insecure = true\n")
		}
		if m.PullFromMirror != "" {
			fmt.Fprintf(b, "pull-from-mirror = %s\n", quote(m.PullFromMirror))
		}
	}
}

// comment makes s fit on one TOML comment line: valid UTF-8, with control
// characters, which a comment may not hold, turned into spaces.
func comment(s string) string {
	s = strings.ToValidUTF8(s, "?")
	return strings.Map(func(r rune) rune {
		if r < 0x20 && r != '\t' || r == 0x7f {
			return ' '
		}
		return r
	}, s)
}

// quote renders s as a TOML basic string.
func quote(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\u%04X`, r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}
