package spec

import (
	"fmt"
	"slices"
	"strings"
)

// Preset is a short name for a public mirror, or for a mirror product whose
// URL has a fixed shape, that expands into the mirror URL runtimes need.
// The README documents each one.
type Preset struct {
	// Name is what the spec says: the whole mirror entry ("google"), or the
	// part before ':' of NAME:ARG ("gitlab:gitlab.example.com/platform").
	Name string

	// Arg describes the argument, "" when the preset takes none.
	Arg string

	// Registries lists the registries the preset can mirror; nil means any.
	Registries []string

	// Form is the URL it expands into, with ARG parts in capitals.
	Form string

	expand func(host, path string) string
}

// Presets lists every preset, in the order the README and errors name them.
var Presets = []Preset{
	{
		Name: "google", Registries: []string{"docker.io"},
		Form:   "https://mirror.gcr.io",
		expand: func(string, string) string { return "https://mirror.gcr.io" },
	},
	{
		Name: "ecr-public", Registries: []string{"docker.io"},
		Form:   "https://public.ecr.aws/v2/docker",
		expand: func(string, string) string { return "https://public.ecr.aws/v2/docker" },
	},
	{
		Name: "gitlab", Arg: "HOST/GROUP", Registries: []string{"docker.io"},
		Form: "https://HOST/v2/GROUP/dependency_proxy/containers",
		expand: func(host, path string) string {
			return "https://" + host + "/v2/" + path + "/dependency_proxy/containers"
		},
	},
	{
		Name: "harbor", Arg: "HOST/PROJECT",
		Form:   "https://HOST/v2/PROJECT",
		expand: func(host, path string) string { return "https://" + host + "/v2/" + path },
	},
	{
		Name: "artifactory", Arg: "HOST/REPOSITORY",
		Form:   "https://HOST/v2/REPOSITORY",
		expand: func(host, path string) string { return "https://" + host + "/v2/" + path },
	},
}

// presetNames lists the presets as an error shows them.
func presetNames() string {
	var names []string
	for _, p := range Presets {
		n := p.Name
		if p.Arg != "" {
			n += ":" + p.Arg
		}
		names = append(names, n)
	}
	return strings.Join(names, ", ")
}

// isPathSegment reports whether s is one segment of a repository path as
// image references allow it: lowercase alphanumerics separated by '.',
// '_', '__' or runs of '-'.
func isPathSegment(s string) bool {
	lowerAlnum := func(c byte) bool { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') }
	if s == "" || !lowerAlnum(s[0]) || !lowerAlnum(s[len(s)-1]) {
		return false
	}
	for i := 0; i < len(s); {
		if lowerAlnum(s[i]) {
			i++
			continue
		}
		// A separator: '.', '_', '__' or '-'+, between alphanumerics.
		j := i
		switch {
		case s[i] == '.':
			j++
		case strings.HasPrefix(s[i:], "__"):
			j += 2
		case s[i] == '_':
			j++
		case s[i] == '-':
			for j < len(s) && s[j] == '-' {
				j++
			}
		default:
			return false
		}
		if !lowerAlnum(s[j]) {
			return false
		}
		i = j
	}
	return true
}

// isPreset reports whether raw is meant as a preset rather than a URL: it
// has no "://".
func isPreset(raw string) bool {
	return !strings.Contains(raw, "://")
}

// ExpandPreset returns the mirror URL a preset entry stands for, for the
// registry host (normalised, or Wildcard). Its errors say what is wrong
// and what would be valid, without repeating raw, which the caller names.
func ExpandPreset(raw, host string) (string, error) {
	name, arg, hasArg := strings.Cut(strings.TrimSpace(raw), ":")
	i := slices.IndexFunc(Presets, func(p Preset) bool { return p.Name == name })
	if i < 0 {
		return "", fmt.Errorf("neither a URL nor a preset; want http(s)://host[:port][/path] "+
			"or one of the presets %s", presetNames())
	}
	p := Presets[i]

	if p.Registries != nil && !slices.Contains(p.Registries, host) {
		return "", fmt.Errorf("preset %s mirrors %s only, not %s", p.Name,
			strings.Join(p.Registries, ", "), host)
	}
	if p.Arg == "" {
		if hasArg {
			return "", fmt.Errorf("preset %s takes no argument; want %s alone", p.Name, p.Name)
		}
		return p.expand("", ""), nil
	}

	want := fmt.Sprintf("want %s:%s, e.g. %s:%s.example.net/%s", p.Name, p.Arg,
		p.Name, p.Name, strings.ToLower(strings.SplitN(p.Arg, "/", 2)[1]))
	regHost, path, ok := strings.Cut(arg, "/")
	if !hasArg || !ok || path == "" {
		return "", fmt.Errorf("preset %s needs %s; %s", p.Name, p.Arg, want)
	}
	normHost, err := NormalizeHost(regHost)
	if err != nil || normHost == Wildcard {
		return "", fmt.Errorf("preset %s: %q is not a host; %s", p.Name, regHost, want)
	}
	for _, seg := range strings.Split(path, "/") {
		if !isPathSegment(seg) || seg == "v2" {
			return "", fmt.Errorf("preset %s: path %q is not a repository path (lowercase "+
				"letters, digits and . _ - between /); %s", p.Name, path, want)
		}
	}
	return p.expand(normHost, path), nil
}

// NewMirrorFor returns the mirror raw names for registry host: a URL,
// validated, or a preset, expanded. It has the default capabilities.
func NewMirrorFor(raw, host string) (Mirror, error) {
	if !isPreset(raw) || strings.TrimSpace(raw) == "" {
		return NewMirror(raw)
	}
	u, err := ExpandPreset(raw, host)
	if err != nil {
		return Mirror{}, err
	}
	return NewMirror(u)
}
