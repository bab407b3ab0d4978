package spec

import (
	"fmt"
	"strings"
)

// ParseCompact reads the compact form used by MIRRORD_MIRRORS and by the
// metadata key of the same meaning: registries separated by ';' or newlines,
// each REGISTRY=URL[,URL...], where a URL may also be a preset (see
// Presets). Blank entries are skipped. Every registry it
// returns carries src. Errors name the entry at fault and what would be
// valid; the caller adds the source.
func ParseCompact(text string, src Source) (Spec, error) {
	var rs []Registry
	entries := strings.FieldsFunc(text, func(r rune) bool { return r == ';' || r == '\n' })
	for _, entry := range entries {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			continue
		}

		name, list, ok := strings.Cut(entry, "=")
		if !ok {
			return Spec{}, fmt.Errorf("entry %q has no '='; want REGISTRY=URL[,URL...]", entry)
		}
		host, err := NormalizeHost(name)
		if err != nil {
			return Spec{}, fmt.Errorf("entry %q: %w", entry, err)
		}

		r := Registry{Host: host, Source: src}
		for _, raw := range strings.Split(list, ",") {
			m, err := NewMirrorFor(strings.TrimSpace(raw), host)
			if err != nil {
				return Spec{}, fmt.Errorf("registry %s: mirror %q: %w", name, raw, err)
			}
			r.Mirrors = append(r.Mirrors, m)
		}
		if err := checkDuplicateMirrors(r); err != nil {
			return Spec{}, err
		}
		rs = append(rs, r)
	}
	return New(rs)
}

// checkDuplicateMirrors refuses a registry that names one mirror twice.
func checkDuplicateMirrors(r Registry) error {
	seen := make(map[string]bool, len(r.Mirrors))
	for _, m := range r.Mirrors {
		if seen[m.URL] {
			return fmt.Errorf("registry %s: mirror %q given twice; name each mirror once",
				r.Host, m.URL)
		}
		seen[m.URL] = true
	}
	return nil
}

// CheckMirrors validates a registry built outside ParseCompact: at least one
// mirror, none twice.
func CheckMirrors(r Registry) error {
	if len(r.Mirrors) == 0 {
		return fmt.Errorf("registry %s has no mirrors; give at least one URL", r.Host)
	}
	return checkDuplicateMirrors(r)
}
