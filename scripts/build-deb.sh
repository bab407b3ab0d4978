#!/usr/bin/env bash
# Builds the mirrord deb for each architecture: the static binary through
# scripts/build.sh (CGO_ENABLED=0, -trimpath, version, commit and date
# stamped in), the gzipped man page and changelog, then the package with
# "go tool nfpm" from nfpm.yaml. Prints the path of each deb it writes:
#
#   dist/mirrord_<version>_<arch>.deb
#
#   ARCHES   Debian architectures, space separated (default "amd64 arm64")
#   VERSION  the package version (default: the tag v<version> when HEAD has
#            one, else <version of the changelog's top entry>~git<commit
#            time>.<commit>, a pre-release of that version; ".dirty" is
#            added when tracked files differ from HEAD)
#   DIST     the directory the debs go to (default dist)
#
# The build is reproducible: every time stamp is the commit's
# (SOURCE_DATE_EPOCH, unless set).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"

read -r -a arches <<<"${ARCHES:-amd64 arm64}"
dist=$(mkdir -p "${DIST:-dist}" && cd "${DIST:-dist}" && pwd)
changelog=packaging/deb/changelog

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

die() {
	echo "build-deb: $*" >&2
	exit 1
}

# 1. The version. The changelog's top entry names the release being worked
# on; a tagged release must be that entry.
top=$(sed -n '1s/^mirrord (\([^)]*\)) .*/\1/p' "$changelog")
[[ -n $top ]] || die "$changelog: the first line is not 'mirrord (VERSION) ...'"

version=${VERSION:-}
if [[ -z $version ]]; then
	if tag=$(git describe --tags --exact-match --match 'v[0-9]*' 2>/dev/null); then
		version=${tag#v}
		[[ $version == "$top" ]] ||
			die "tag $tag: the top entry of $changelog is $top; add an entry for $version"
	else
		when=$(TZ=UTC git log -1 --format=%cd --date=format-local:%Y%m%d%H%M%S)
		version="$top~git$when.$(git rev-parse --short=7 HEAD)"
		if [[ -n $(git status --porcelain --untracked-files=no) ]]; then
			version+=.dirty
		fi
	fi
fi
# No '-': the package is its own upstream (a native package).
[[ $version =~ ^[0-9][A-Za-z0-9.+~]*$ ]] ||
	die "VERSION $version: want a digit, then letters, digits, '.', '+' or '~'"

export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct)}

# 2. One deb per architecture.
for arch in "${arches[@]}"; do
	case $arch in
	amd64 | arm64) goarch=$arch ;;
	*) die "architecture $arch: want amd64 or arm64" ;;
	esac

	stage=$work/$arch
	mkdir -p "$stage"
	OUT=$stage/mirrord GOARCH=$goarch VERSION=$version bash scripts/build.sh >/dev/null
	gzip -9n <packaging/deb/mirrord.8 >"$stage/mirrord.8.gz"
	# The top entry carries the version being built.
	sed "1s/^mirrord ([^)]*)/mirrord ($version)/" "$changelog" | gzip -9n >"$stage/changelog.gz"

	deb=$dist/mirrord_${version}_$arch.deb
	MIRRORD_DEB_VERSION=$version MIRRORD_DEB_ARCH=$arch MIRRORD_DEB_STAGE=$stage \
		go tool nfpm package --config nfpm.yaml --packager deb --target "$deb" >/dev/null
	echo "$deb"
done
