package registries

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/pelletier/go-toml/v2"
)

// File is what Parse reads from a registries.conf drop-in.
type File struct {
	// Registries are the [[registry]] tables in file order.
	Registries []Registry

	// Managed reports that the file opens with mirrord's header.
	Managed bool
}

// Registry is one [[registry]] table of registries.conf version 2.
type Registry struct {
	// Prefix is the image name prefix the table applies to; Parse fills it
	// with Location when the file leaves it out, as containers/image does.
	Prefix string

	// Location is where images of the prefix are pulled from when no
	// mirror serves them; "" only for a *.domain prefix.
	Location string

	// Insecure allows plain HTTP and unverified TLS to Location; Blocked
	// refuses every pull of the prefix; MirrorByDigestOnly limits all its
	// mirrors to pulls by digest.
	Insecure           bool
	Blocked            bool
	MirrorByDigestOnly bool

	// Mirrors are the [[registry.mirror]] tables in file order, the order
	// containers/image tries them in.
	Mirrors []Mirror
}

// Mirror is one [[registry.mirror]] table.
type Mirror struct {
	// Location is the mirror's host[:port][/namespace], no scheme.
	Location string

	// Insecure allows plain HTTP and unverified TLS to the mirror.
	Insecure bool

	// PullFromMirror is "", PullAll, PullDigestOnly or PullTagOnly.
	PullFromMirror string
}

// schema is the document containers/image decodes registries.conf into,
// cut to what a version 2 drop-in may hold that Parse reports or checks.
// Other keys (unqualified-search-registries, aliases, short-name-mode,
// credential-helpers) are allowed and ignored.
type schema struct {
	Registries []registrySchema `toml:"registry"`

	// V1 is the version 1 format's [registries.search] and friends, which
	// containers/image refuses in a drop-in.
	V1 map[string]any `toml:"registries"`
}

type registrySchema struct {
	Prefix             string         `toml:"prefix"`
	Location           string         `toml:"location"`
	Insecure           bool           `toml:"insecure"`
	Blocked            bool           `toml:"blocked"`
	MirrorByDigestOnly bool           `toml:"mirror-by-digest-only"`
	PullFromMirror     string         `toml:"pull-from-mirror"`
	Mirrors            []mirrorSchema `toml:"mirror"`
}

type mirrorSchema struct {
	Location       string `toml:"location"`
	Insecure       bool   `toml:"insecure"`
	PullFromMirror string `toml:"pull-from-mirror"`
}

// Parse reads a registries.conf drop-in written by anyone and checks it as
// containers/image would before using it; a drop-in it refuses makes every
// podman command and every CRI-O pull fail. It refuses, naming the table:
// a file that is not TOML or gives a key the wrong type; version 1 tables
// ([registries.search] and the like); a location or prefix with an http://
// or https:// scheme; a registry with neither location nor a *.domain
// prefix; pull-from-mirror on a registry rather than a mirror; a mirror
// without location; an unknown pull-from-mirror value; pull-from-mirror
// next to the registry's mirror-by-digest-only; and one location given
// twice with different insecure or blocked settings. Trailing slashes of
// locations and prefixes are dropped, as containers/image drops them.
func Parse(data []byte) (File, error) {
	var doc schema
	if err := toml.Unmarshal(data, &doc); err != nil {
		var de *toml.DecodeError
		if errors.As(err, &de) {
			line, _ := de.Position()
			return File{}, fmt.Errorf("parse registries.conf drop-in: line %d: %s", line,
				strings.TrimPrefix(de.Error(), "toml: "))
		}
		return File{}, fmt.Errorf("parse registries.conf drop-in: %w", err)
	}
	if doc.V1 != nil {
		return File{}, fmt.Errorf("parse registries.conf drop-in: [registries.*] tables are " +
			"the version 1 format; a drop-in must use [[registry]] tables (version 2)")
	}

	f := File{Managed: bytes.HasPrefix(data, []byte(managedMarker))}
	for i, rs := range doc.Registries {
		r, err := checkRegistry(rs)
		if err != nil {
			return File{}, fmt.Errorf("parse registries.conf drop-in: [[registry]] #%d: %w",
				i+1, err)
		}
		f.Registries = append(f.Registries, r)
	}

	if err := checkConflicts(f.Registries); err != nil {
		return File{}, fmt.Errorf("parse registries.conf drop-in: %w", err)
	}
	return f, nil
}

// checkRegistry validates one [[registry]] table and converts it.
func checkRegistry(rs registrySchema) (Registry, error) {
	r := Registry{
		Insecure:           rs.Insecure,
		Blocked:            rs.Blocked,
		MirrorByDigestOnly: rs.MirrorByDigestOnly,
	}
	var err error
	if r.Location, err = location("location", rs.Location); err != nil {
		return Registry{}, err
	}
	if r.Prefix, err = location("prefix", rs.Prefix); err != nil {
		return Registry{}, err
	}

	switch {
	case r.Prefix == "" && r.Location == "":
		return Registry{}, fmt.Errorf("neither prefix nor location is set; want location " +
			"= \"host[:port][/namespace]\"")
	case r.Prefix == "":
		r.Prefix = r.Location
	case r.Location == "" && !strings.HasPrefix(r.Prefix, "*."):
		return Registry{}, fmt.Errorf("prefix %q has no location; only a *.domain prefix "+
			"may leave location out", r.Prefix)
	}
	if rs.PullFromMirror != "" {
		return Registry{}, fmt.Errorf("prefix %q: pull-from-mirror belongs in its "+
			"[[registry.mirror]] tables, not in [[registry]]", r.Prefix)
	}

	for j, ms := range rs.Mirrors {
		m, err := checkMirror(ms, r.MirrorByDigestOnly)
		if err != nil {
			return Registry{}, fmt.Errorf("prefix %q mirror #%d: %w", r.Prefix, j+1, err)
		}
		r.Mirrors = append(r.Mirrors, m)
	}
	return r, nil
}

// checkMirror validates one [[registry.mirror]] table and converts it.
func checkMirror(ms mirrorSchema, byDigestOnly bool) (Mirror, error) {
	loc, err := location("location", ms.Location)
	if err != nil {
		return Mirror{}, err
	}
	if loc == "" {
		return Mirror{}, fmt.Errorf("location is not set; want location = \"host[:port]\"")
	}

	switch ms.PullFromMirror {
	case "", PullAll, PullDigestOnly, PullTagOnly:
	default:
		return Mirror{}, fmt.Errorf("pull-from-mirror %q is not known; want %q, %q or %q",
			ms.PullFromMirror, PullAll, PullDigestOnly, PullTagOnly)
	}
	if byDigestOnly && ms.PullFromMirror != "" {
		return Mirror{}, fmt.Errorf("pull-from-mirror is set while the registry sets " +
			"mirror-by-digest-only; set one of them")
	}
	return Mirror{Location: loc, Insecure: ms.Insecure, PullFromMirror: ms.PullFromMirror}, nil
}

// location checks a location or prefix value as containers/image does and
// returns it without trailing slashes.
func location(key, v string) (string, error) {
	if strings.HasPrefix(v, "http://") || strings.HasPrefix(v, "https://") {
		return "", fmt.Errorf("%s %q has a URL scheme; want host[:port][/namespace] "+
			"without http:// or https://", key, v)
	}
	return strings.TrimRight(v, "/"), nil
}

// checkConflicts refuses one location given twice with different insecure
// or blocked settings, which containers/image refuses too.
func checkConflicts(regs []Registry) error {
	type flags struct{ insecure, blocked bool }
	seen := map[string]flags{}
	for _, r := range regs {
		key := r.Location
		if key == "" {
			key = r.Prefix
		}
		f := flags{r.Insecure, r.Blocked}
		if prev, ok := seen[key]; ok && prev != f {
			return fmt.Errorf("location %q is given twice with different insecure or "+
				"blocked settings; give them the same", key)
		}
		seen[key] = f
	}
	return nil
}

// Effective merges parsed files in the order containers/image loads them:
// the main registries.conf, then each drop-in in byte order of its name. A
// [[registry]] replaces whole the entry of the same prefix from an earlier
// file; the result is sorted by prefix, as containers/image sorts it. Which
// entry applies to an image is then the one with the longest matching
// prefix, wherever it sits.
func Effective(files ...File) []Registry {
	byPrefix := map[string]Registry{}
	for _, f := range files {
		for _, r := range f.Registries {
			byPrefix[r.Prefix] = r
		}
	}

	out := make([]Registry, 0, len(byPrefix))
	for _, r := range byPrefix {
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b Registry) int { return strings.Compare(a.Prefix, b.Prefix) })
	return out
}
