// Package debtest checks the mirrord deb that scripts/build-deb.sh builds
// from nfpm.yaml, for amd64 and arm64, without installing it: lintian finds
// no error, warning, info or pedantic tag beyond the overrides in
// packaging/deb/lintian-overrides, and every override is used and explains
// itself; the package holds exactly the files, modes, conffiles and
// maintainer scripts it should; the binary is static, stamped with the
// package's version and carries only the Go modules the copyright file
// names; the conffiles as shipped change nothing on a node, and their
// examples, once uncommented, are valid; the man page and "mirrord help"
// cover every command, flag, key and environment variable; a second build
// gives the same bytes.
//
// What the package does on a node (install, upgrade, remove, purge) is
// shown under a real systemd by test/systemd.
//
// The package holds tests only. They run when MIRRORD_E2E=1 and skip
// otherwise; they need lintian and dpkg-deb (scripts/install-test-deps.sh),
// not root:
//
//	MIRRORD_E2E=1 go test ./test/deb/
package debtest
