// Package e2e proves on real runtimes that what mirrord writes works: that
// containerd 1.x and 2.x, started with the config.toml and hosts.toml files
// mirrord edited, pull through the configured mirror, that a hosts.toml-only
// change takes effect without a restart, and that dockerd started with
// mirrord's daemon.json pulls through the mirror and takes a new mirror on
// SIGHUP without stopping a running container.
//
// The proof is the mirror's own access log: each test runs a docker-registry
// serving a small image built by the test itself, and asserts the manifest
// request with the runtime's user agent. Every test runs in a network
// namespace of its own with only loopback, so a fallback to the real Docker
// Hub fails fast instead of passing quietly.
//
// The package holds tests only. They run when MIRRORD_E2E=1, as root, and
// skip otherwise; with MIRRORD_E2E=1 a missing tool is a failure. Install
// the tools with scripts/install-test-deps.sh, which also builds containerd
// 2.x and crictl into ${MIRRORD_TOOLS_DIR:-$HOME/.cache/mirrord-tools}:
//
//	sudo scripts/install-test-deps.sh
//	sudo MIRRORD_E2E=1 go test ./test/e2e/
package e2e
