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

step "fuzz targets, briefly (a longer run: see README)"
# A count, not a duration: with a duration Go 1.26's fuzz coordinator may
# report "context deadline exceeded" as a failure when the time runs out on a
# loaded machine (go.dev/issue/75804, fixed in Go 1.27).
fuzztime=${MIRRORD_FUZZTIME:-20000x}
for pkg in $(go list ./internal/...); do
	for target in $(go test -list '^Fuzz' "$pkg" | grep '^Fuzz' || true); do
		go test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" -fuzzminimizetime 1000x "$pkg"
	done
done

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
