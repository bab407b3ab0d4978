#!/usr/bin/env bash
# Builds mirrord's container image for linux/amd64 and linux/arm64 without a
# container engine: the static binaries (scripts/build.sh), then
# hack/imagebuild puts each alone in a layer on an empty base and writes an
# OCI image index, as an OCI layout and as an oci-archive:
#
#   build/image/oci              OCI image layout (index.json names VERSION)
#   build/image/mirrord.oci.tar  the same layout in one tar
#
# Every timestamp is SOURCE_DATE_EPOCH (default: the last commit's time), so
# two builds of one commit give the same bytes. OUT overrides build/image;
# VERSION the version taken from git; SOURCE the source URL in the labels.
# Then it checks and lists the image (imagebuild verify). Load it with e.g.
#   skopeo copy oci-archive:build/image/mirrord.oci.tar docker://REGISTRY/mirrord:VERSION
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"

out=${OUT:-build/image}
version=${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
epoch=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}
source=${SOURCE:-https://github.com/mirrord/mirrord}

tool=$(mktemp -d)
trap 'rm -rf "$tool"' EXIT

# OUT names this script's output, not build.sh's: each binary goes to the
# scratch directory.
bins=()
for arch in amd64 arm64; do
	bin=$(OUT="$tool/mirrord-linux-$arch" GOARCH=$arch VERSION=$version bash scripts/build.sh)
	bins+=(-bin "linux/$arch=$bin")
done

mkdir -p "$out"
CGO_ENABLED=0 go build -trimpath -o "$tool/imagebuild" ./hack/imagebuild
"$tool/imagebuild" build -out "$out" -version "$version" -revision "$revision" \
	-source "$source" -epoch "$epoch" "${bins[@]}"
"$tool/imagebuild" verify "$out"
