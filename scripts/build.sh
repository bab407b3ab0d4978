#!/usr/bin/env bash
# Builds the static mirrord binary with its version, commit and build date
# stamped in: dist/mirrord-<os>-<arch>, or the file OUT names. GOARCH picks
# the architecture (amd64, arm64); VERSION overrides the version taken from
# git.
set -euo pipefail
cd "$(dirname "$0")/.."

version=${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}
commit=$(git rev-parse HEAD 2>/dev/null || echo unknown)
# The commit time, not the wall clock, keeps the build reproducible.
date=$(git log -1 --format=%cI 2>/dev/null || echo unknown)
goos=${GOOS:-linux}
goarch=${GOARCH:-$(go env GOARCH)}

out=${OUT:-dist/mirrord-$goos-$goarch}
mkdir -p "$(dirname "$out")"
CGO_ENABLED=0 GOOS=$goos GOARCH=$goarch go build -trimpath -buildvcs=false \
	-ldflags "-s -w -X main.version=$version -X main.commit=$commit -X main.date=$date" \
	-o "$out" ./cmd/mirrord
echo "$out"
