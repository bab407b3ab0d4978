#!/usr/bin/env bash
# build-rootfs.sh builds the root filesystem that test/systemd boots with
# systemd-nspawn: a minimal Debian 12 (bookworm) with systemd as init, dbus,
# containerd, runc, docker.io, conmon (for CRI-O, which the tests bring),
# cloud-init and curl, made by mmdebstrap from Debian's packages. It is
# cached, keyed by a hash of this script and the package list, and built
# only when missing:
#
#   ${MIRRORD_TOOLS_DIR:-$HOME/.cache/mirrord-tools}/rootfs-<hash>/
#
# Run it as root. It installs what it needs on the host (mmdebstrap,
# systemd-container, zstd) with apt-get, prints nothing but the rootfs path
# on success, and shows the failing step's output otherwise. The tree is
# built in a scratch directory beside the cache and renamed into place whole,
# so a failed or interrupted build leaves nothing that looks finished.
#
# The tree is a shared, read-only lower layer: the tests mount an overlay on
# it per machine and never write to it. The archive is the host's own: its
# apt sources that name the suite are handed to mmdebstrap as they are, so
# the tree comes from wherever this machine gets its Debian packages.
# DEBIAN_SOURCES names other sources files instead (space separated).
set -euo pipefail

suite=bookworm
# Order does not matter; keep it sorted. locales-all keeps cloud-init's
# locale module from failing (see FACTS.md 8.2); curl is how the cloud-init
# examples fetch the deb, as on a cloud image.
packages=(
	ca-certificates
	cloud-init
	conmon
	containerd
	curl
	dbus
	docker.io
	iproute2
	locales-all
	procps
	runc
	systemd
	systemd-sysv
)
# Units that slow the boot, need the network or write on a timer; a test
# machine has loopback only and lives for seconds.
masked=(
	apt-daily.timer
	apt-daily-upgrade.timer
	dpkg-db-backup.timer
	e2scrub_all.timer
	e2scrub_reap.service
	fstrim.timer
	systemd-networkd-wait-online.service
	systemd-timesyncd.service
)
host_packages=(mmdebstrap systemd-container zstd)

tools_dir=${MIRRORD_TOOLS_DIR:-$HOME/.cache/mirrord-tools}
work=$(mktemp -d)
tmp_root=""

cleanup() {
	if [[ -n $tmp_root ]]; then
		rm -rf "$tmp_root"
	fi
	rm -rf "$work"
}
trap cleanup EXIT

# quiet runs a command with its output in a log, shown only if it fails.
quiet() {
	if ! "$@" >"$work/step.log" 2>&1; then
		echo "build-rootfs: failed: $*" >&2
		cat "$work/step.log" >&2
		exit 1
	fi
}

if [[ $(id -u) != 0 ]]; then
	echo "build-rootfs: run me as root (mmdebstrap and the tests need it)" >&2
	exit 1
fi

# 1. The cache key: this script (which holds the masks and hooks) and the
# package list, so a change to either builds a new tree beside the old one.
key=$( { cat "${BASH_SOURCE[0]}"; printf '%s\n' "$suite" "${packages[@]}"; } |
	sha256sum | cut -c1-16)
rootfs=$tools_dir/rootfs-$key

if [[ -x $rootfs/usr/lib/systemd/systemd ]]; then
	echo "$rootfs"
	exit 0
fi

# 2. Host tools. Skip apt entirely when everything is installed.
missing=()
for p in "${host_packages[@]}"; do
	status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
	if [[ $status != "install ok installed" ]]; then
		missing+=("$p")
	fi
done
if ((${#missing[@]} > 0)); then
	export DEBIAN_FRONTEND=noninteractive
	quiet apt-get update -q
	quiet apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# The host's sources for this suite, in either apt format.
read -r -a sources <<<"${DEBIAN_SOURCES:-}"
if ((${#sources[@]} == 0)); then
	for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
		/etc/apt/sources.list.d/*.sources; do
		if [[ -f $f ]] && grep -qE "^[^#]*[[:space:]]$suite([[:space:]]|\$)" "$f"; then
			sources+=("$f")
		fi
	done
fi
if ((${#sources[@]} == 0)); then
	echo "build-rootfs: no apt sources for $suite on this host; set DEBIAN_SOURCES" >&2
	exit 1
fi

# 3. One build at a time per cache; a second caller waits, then finds the
# tree the first one built.
mkdir -p "$tools_dir"
exec 9>"$tools_dir/.rootfs.lock"
flock 9
if [[ -x $rootfs/usr/lib/systemd/systemd ]]; then
	echo "$rootfs"
	exit 0
fi

# 4. The tree. mmdebstrap wants a target that does not exist yet; build it
# beside the cache (same filesystem) so the final rename is atomic.
tmp_root=$tools_dir/.rootfs-$key.tmp.$$
rm -rf "$tmp_root"

mask_hook="chroot \"\$1\" systemctl mask --quiet ${masked[*]}"
# No recommends (docker.io would pull in git, apparmor, xz and more), no
# documentation, and an empty machine-id so each boot makes its own.
quiet mmdebstrap \
	--variant=minbase \
	--mode=root \
	--aptopt='APT::Install-Recommends "false"' \
	--dpkgopt='path-exclude=/usr/share/man/*' \
	--dpkgopt='path-exclude=/usr/share/info/*' \
	--dpkgopt='path-exclude=/usr/share/doc/*' \
	--dpkgopt='path-include=/usr/share/doc/*/copyright' \
	--include="$(IFS=,; echo "${packages[*]}")" \
	--customize-hook="$mask_hook" \
	--customize-hook='echo mirrord-test >"$1/etc/hostname"' \
	--customize-hook=': >"$1/etc/machine-id"' \
	--customize-hook='rm -f "$1/var/lib/dbus/machine-id"' \
	"$suite" "$tmp_root" "${sources[@]}"

# 5. Check what the tests rely on before the tree counts as built.
for f in usr/lib/systemd/systemd usr/bin/containerd usr/sbin/dockerd usr/bin/runc \
	usr/bin/dbus-daemon usr/bin/cloud-init usr/bin/curl; do
	if [[ ! -x $tmp_root/$f ]]; then
		echo "build-rootfs: built tree lacks /$f" >&2
		exit 1
	fi
done
for unit in containerd.service docker.service; do
	if ! chroot "$tmp_root" systemctl is-enabled --quiet "$unit"; then
		echo "build-rootfs: $unit is not enabled in the built tree" >&2
		exit 1
	fi
done

mv "$tmp_root" "$rootfs"
tmp_root=""
echo "$rootfs"
