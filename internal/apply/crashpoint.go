//go:build !crashtest

package apply

// crashPoint marks a moment of a write at which a crash must leave the node
// consistent. It does nothing in a normal build; built with the crashtest
// tag (crashpoint_crashtest.go), it kills the process at the point that
// MIRRORD_CRASH_AT numbers, for the crash tests of test/faults.
func crashPoint(moment, path string) {}
