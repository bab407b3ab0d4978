#!/usr/bin/env bash
# install-test-deps.sh installs what mirrord's end-to-end tests (test/e2e) run:
# Debian's containerd 1.6, runc, dockerd 20.10, docker-registry, skopeo,
# iproute2 and lintian (test/deb checks the deb with it) from apt, plus
# containerd 2.2.9 (containerd, containerd-shim-runc-v2, ctr), crictl 1.34.0
# and CRI-O 1.34.0 (crio, static, without cgo) built from the Go module proxy
# into a versioned cache:
#
#   ${MIRRORD_TOOLS_DIR:-$HOME/.cache/mirrord-tools}/containerd-v2.2.9/bin
#   ${MIRRORD_TOOLS_DIR:-$HOME/.cache/mirrord-tools}/crictl-v1.34.0/bin
#   ${MIRRORD_TOOLS_DIR:-$HOME/.cache/mirrord-tools}/crio-v1.34.0/bin
#
# Run it as root. It is idempotent: installed packages and built binaries are
# kept. It starts and enables no daemon, prints nothing but the tools dir on
# success, and shows the failing step's output otherwise. Building containerd
# takes about 3 minutes on 2 cores, CRI-O about as long; both need Go 1.25 or
# later.
set -euo pipefail

containerd_version=v2.2.9
crictl_version=v1.34.0
crio_version=v1.34.0
packages=(containerd runc docker.io docker-registry skopeo iproute2 util-linux podman lintian)

tools_dir=${MIRRORD_TOOLS_DIR:-$HOME/.cache/mirrord-tools}
work=$(mktemp -d)
created_policy=""

cleanup() {
	if [[ -n $created_policy ]]; then
		rm -f /usr/sbin/policy-rc.d
	fi
	rm -rf "$work"
}
trap cleanup EXIT

# quiet runs a command with its output in a log, shown only if it fails.
quiet() {
	if ! "$@" >"$work/step.log" 2>&1; then
		echo "install-test-deps: failed: $*" >&2
		cat "$work/step.log" >&2
		exit 1
	fi
}

if [[ $(id -u) != 0 ]]; then
	echo "install-test-deps: run me as root (apt-get and the tests need it)" >&2
	exit 1
fi

# 1. Debian packages. Skip apt entirely when everything is installed.
missing=()
for p in "${packages[@]}"; do
	status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
	if [[ $status != "install ok installed" ]]; then
		missing+=("$p")
	fi
done

if ((${#missing[@]} > 0)); then
	# Keep the packages' maintainer scripts from starting daemons: with
	# policy-rc.d answering 101, invoke-rc.d and deb-systemd-invoke start
	# nothing. An existing policy is left as it is.
	if [[ ! -e /usr/sbin/policy-rc.d ]]; then
		printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
		chmod 0755 /usr/sbin/policy-rc.d
		created_policy=yes
	fi

	export DEBIAN_FRONTEND=noninteractive
	quiet apt-get update -q
	quiet apt-get install -y -q --no-install-recommends \
		-o Dpkg::Options::=--force-confold "${missing[@]}"

	# Under systemd, postinst scripts enable the units they ship; the tests
	# start their own daemons, so leave the units of new packages disabled.
	if [[ -d /run/systemd/system ]]; then
		for p in "${missing[@]}"; do
			case $p in
			containerd) units=(containerd.service) ;;
			docker.io) units=(docker.service docker.socket) ;;
			docker-registry) units=(docker-registry.service) ;;
			*) units=() ;;
			esac
			for unit in "${units[@]}"; do
				systemctl disable --quiet "$unit" 2>/dev/null || true
			done
		done
	fi
fi

# 2. Go-built tools, each in its own versioned directory, built into a
# scratch directory and moved into place whole so a failed build leaves
# nothing that looks finished.
if ! command -v go >/dev/null && [[ -x /usr/local/go/bin/go ]]; then
	PATH=$PATH:/usr/local/go/bin
fi
if ! command -v go >/dev/null; then
	echo "install-test-deps: go not found; install Go 1.25 or later first" >&2
	exit 1
fi

# build DIR PKG... installs the packages with GOBIN=DIR/bin unless every
# binary is already there.
build() {
	local dir=$1
	shift

	local built=yes
	for pkg in "$@"; do
		local name=${pkg%@*}
		name=${name##*/}
		[[ -x $dir/bin/$name ]] || built=""
	done
	if [[ -n $built ]]; then
		return 0
	fi

	local tmp
	tmp="$work/$(basename "$dir")"
	mkdir -p "$tmp/bin"
	for pkg in "$@"; do
		(cd "$work" && quiet env GOBIN="$tmp/bin" CGO_ENABLED=0 go install "$pkg")
	done

	mkdir -p "$dir"
	rm -rf "$dir/bin"
	mv "$tmp/bin" "$dir/bin"
}

# build_in_module DIR MODULE@VERSION PKG TAGS builds PKG into DIR/bin from a
# scratch module that requires MODULE@VERSION, for a module whose
# "go install PKG@VERSION" the proxy refuses (it cannot list the module's
# versions to check for a deprecation).
build_in_module() {
	local dir=$1 mod=$2 pkg=$3 tags=$4
	local name=${pkg##*/}
	if [[ -x $dir/bin/$name ]]; then
		return 0
	fi

	local tmp
	tmp="$work/$(basename "$dir")"
	mkdir -p "$tmp/src" "$tmp/bin"
	(
		cd "$tmp/src"
		quiet go mod init mirrord-tools-build
		quiet go get "$pkg@${mod#*@}"
		quiet env CGO_ENABLED=0 go build -trimpath -tags "$tags" -o "$tmp/bin/$name" "$pkg"
	)

	mkdir -p "$dir"
	rm -rf "$dir/bin"
	mv "$tmp/bin" "$dir/bin"
}

build "$tools_dir/containerd-$containerd_version" \
	"github.com/containerd/containerd/v2/cmd/containerd@$containerd_version" \
	"github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2@$containerd_version" \
	"github.com/containerd/containerd/v2/cmd/ctr@$containerd_version"
build "$tools_dir/crictl-$crictl_version" \
	"sigs.k8s.io/cri-tools/cmd/crictl@$crictl_version"

# CRI-O without cgo: no gpgme (openpgp instead), no btrfs or devicemapper
# graph drivers; the tests use vfs storage and never run a container.
build_in_module "$tools_dir/crio-$crio_version" "github.com/cri-o/cri-o@$crio_version" \
	github.com/cri-o/cri-o/cmd/crio \
	"containers_image_openpgp exclude_graphdriver_btrfs exclude_graphdriver_devicemapper"

echo "$tools_dir"
