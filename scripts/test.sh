#!/usr/bin/env bash
# Installs what the tests need (Debian packages, containerd 2.x, crictl and
# CRI-O built from the Go module proxy, the Debian root filesystem the
# systemd tests boot) and runs the whole suite: static checks, unit and golden tests
# with the race detector (the Kubernetes manifests' validation among them),
# short fuzz runs, the container image, the tests on real runtimes, under a
# real systemd (the DaemonSet's pod included) and in network namespaces, and
# the benchmark figures. Run as root on Debian 12.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"

step() { printf '\n== %s\n' "$*"; }

step "install test dependencies"
bash scripts/install-test-deps.sh
bash scripts/build-rootfs.sh

step "gofmt, go vet, staticcheck"
unformatted=$(gofmt -l $(git ls-files '*.go'))
if [ -n "$unformatted" ]; then
	echo "gofmt would change: $unformatted" >&2
	exit 1
fi
go vet ./...
go tool staticcheck ./...

step "unit and golden tests (race detector)"
go test -race -count=1 $(go list ./... | grep -v /test/e2e)

step "fuzz targets, briefly (a longer run: scripts/fuzz.sh, see README)"
# About 150 s of fuzzing in all, shared out over the targets (at least 5 s
# each); MIRRORD_FUZZTIME sets the time per target instead.
ntargets=$(bash scripts/fuzz.sh --list | wc -l)
per=$(( ${MIRRORD_FUZZBUDGET:-150} / ntargets ))
[ "$per" -ge 5 ] || per=5
fuzztime=${MIRRORD_FUZZTIME:-${per}s}
MIRRORD_FUZZ_MINIMIZE=2s bash scripts/fuzz.sh "$fuzztime"

step "the deb: built for amd64 and arm64, lintian, contents, conffiles, man page"
MIRRORD_E2E=1 go test -count=1 -v ./test/deb/

step "real runtimes: containerd 1.6 and 2.x, dockerd 20.10"
MIRRORD_E2E=1 go test -count=1 -v ./test/e2e/

step "podman pulls through mirrord's registries.conf.d drop-in"
MIRRORD_E2E=1 go test -count=1 -v ./test/podman/

step "container image: built twice (same bytes), listed, run with podman"
MIRRORD_E2E=1 go test -count=1 -v ./test/image/

step "under systemd as PID 1: boot, live changes, enable --now, drift, CRI-O, k3s, the deb," \
	"cloud-init, the DaemonSet's pod, security"
MIRRORD_E2E=1 go test -count=1 -v ./test/systemd/

step "faults: a full and a read-only filesystem"
MIRRORD_E2E=1 go test -count=1 -v -run 'DiskFull|ReadOnly' ./test/faults/

step "instance metadata: giving up in network namespaces"
MIRRORD_E2E=1 go test -count=1 -v ./test/metadata/

step "benchmark figures"
bash bench/run.sh
bash bench/watch.sh
BENCH_RUNS=${BENCH_RUNS:-100} bash bench/metadata.sh
