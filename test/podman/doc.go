// Package podmantest proves on a real podman that the registries.conf
// drop-in of package registries works: Debian's podman 4.3, rootful, with
// vfs storage, pulls docker.io/library/<image> and a quay.io image through
// docker-registry mirrors on loopback, and skips a pull-only mirror
// (pull-from-mirror = "digest-only") for a pull by tag but uses it for a
// pull by digest. The proof is each mirror's own access log.
//
// Every podman command runs inside a network namespace the test made, with
// only loopback, so a fallback to the real registries fails fast instead of
// passing quietly; and inside a private mount namespace where temporary
// directories are bound over /etc/containers and /var/lib/containers, so
// the host's configuration and storage are neither read nor touched.
// Storage, run root and temporary files live in the test's directories.
//
// The package holds tests only. They run when MIRRORD_E2E=1, as root, and
// skip otherwise; with MIRRORD_E2E=1 a missing tool (podman, skopeo,
// docker-registry, ip, nsenter, unshare) is a failure. Install them with
// scripts/install-test-deps.sh:
//
//	sudo scripts/install-test-deps.sh
//	sudo MIRRORD_E2E=1 go test ./test/podman/
package podmantest
