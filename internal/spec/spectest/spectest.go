// Package spectest builds spec values for the tests of the packages that
// render them. It is imported by tests only and never built into mirrord.
package spectest

import (
	"testing"

	"github.com/mirrord/mirrord/internal/spec"
)

// Mirror returns the mirror at raw, with caps as its capabilities when any
// are given, failing t when raw is not a valid mirror URL.
func Mirror(t testing.TB, raw string, caps ...spec.Capability) spec.Mirror {
	t.Helper()

	m, err := spec.NewMirror(raw)
	if err != nil {
		t.Fatalf("NewMirror(%q): %v", raw, err)
	}
	if len(caps) > 0 {
		m.Capabilities = caps
	}
	return m
}
