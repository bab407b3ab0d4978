package spec

import (
	"fmt"
	"strings"
)

// defaultCanaries are the images probes ask for when a registry names none:
// small, public and long-lived on each registry.
var defaultCanaries = map[string]string{
	"docker.io":       "library/busybox:latest",
	"registry.k8s.io": "pause:3.10",
}

// DefaultCanary returns the canary of a registry that names none, "" when
// mirrord knows none for it (probes then ask for /v2/ only).
func DefaultCanary(host string) string {
	return defaultCanaries[host]
}

// isTag reports whether s is a tag as image references allow one: a word
// character, then up to 127 of word characters, '.' and '-'.
func isTag(s string) bool {
	if s == "" || len(s) > 128 || s[0] == '.' || s[0] == '-' {
		return false
	}
	for _, c := range []byte(s) {
		if !isAlnum(c) && c != '_' && c != '.' && c != '-' {
			return false
		}
	}
	return true
}

// isDigest reports whether s is sha256: and 64 lowercase hex digits.
func isDigest(s string) bool {
	hex, ok := strings.CutPrefix(s, "sha256:")
	if !ok || len(hex) != 64 {
		return false
	}
	for _, c := range []byte(hex) {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

func isAlnum(c byte) bool {
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
}

// ParseCanary checks a canary for the registry host and returns it. The
// form is REPO:TAG or REPO@sha256:HEX, and for Wildcard, which has no
// registry of its own, HOST/REPO:TAG. The error says what would be valid.
func ParseCanary(raw, host string) (string, error) {
	want := "want REPO:TAG or REPO@sha256:DIGEST, e.g. library/busybox:latest"
	if host == Wildcard {
		want = "want HOST/REPO:TAG for the registry the probes ask through *, " +
			"e.g. quay.io/prometheus/busybox:latest"
	}

	repo, ref, hasDigest := strings.Cut(raw, "@")
	if !hasDigest {
		i := strings.LastIndex(raw, ":")
		if i < 0 || strings.Contains(raw[i:], "/") {
			return "", fmt.Errorf("names no tag; %s", want)
		}
		repo, ref = raw[:i], raw[i+1:]
		if !isTag(ref) {
			return "", fmt.Errorf("tag %q is not valid; %s", ref, want)
		}
	} else if !isDigest(ref) {
		return "", fmt.Errorf("digest %q is not sha256:<64 hex digits>; %s", ref, want)
	}

	if host == Wildcard {
		reg, rest, ok := strings.Cut(repo, "/")
		h, err := NormalizeHost(reg)
		if !ok || err != nil || h == Wildcard || !strings.ContainsAny(reg, ".:") {
			return "", fmt.Errorf("names no registry host; %s", want)
		}
		repo = rest
	}
	for _, seg := range strings.Split(repo, "/") {
		if !isPathSegment(seg) {
			return "", fmt.Errorf("repository %q is not valid (lowercase letters, digits "+
				"and . _ - between /); %s", repo, want)
		}
	}
	return raw, nil
}

// SplitCanary returns the registry (for Wildcard's HOST/REPO form, "" for
// the others), the repository and the reference (a tag or a digest) of a
// canary ParseCanary accepted.
func SplitCanary(canary string, wildcard bool) (registry, repo, ref string) {
	repo, ref, hasDigest := strings.Cut(canary, "@")
	if !hasDigest {
		i := strings.LastIndex(canary, ":")
		repo, ref = canary[:i], canary[i+1:]
	}
	if wildcard {
		registry, repo, _ = strings.Cut(repo, "/")
		registry, _ = NormalizeHost(registry)
	}
	return registry, repo, ref
}
