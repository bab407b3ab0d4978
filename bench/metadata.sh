#!/usr/bin/env bash
# Prints the cost of mirrord's metadata step (internal/metadata), each figure
# next to a baseline measured in the same run:
#   in-process  one Fetch per provider against its emulator on loopback,
#               a new connection each time, against a no-op Fetch (provider
#               none) in alternation;
#   process     `metadatabench fetch` (a process doing one Fetch against the
#               gce or aws emulator, served by another process) against
#               `metadatabench` alone (the same binary doing a no-op Fetch),
#               through bench/timeit; the difference of the medians is what
#               the metadata step adds to a process on the boot path (aim: a
#               few milliseconds);
#   boot path   a no-op `mirrord apply --no-reload` on a copy of examples/node
#               taking both keys from the gce emulator, against the same
#               apply with MIRRORD_METADATA=none on another copy, through
#               bench/timeit: what metadata adds to the boot-time apply;
#   give-up     how long Fetch takes to give up at 169.254.169.254 with no
#               route (a network namespace with loopback only) and with a
#               black-holed route (a veth to a peer namespace that drops the
#               packets), with the default 2 s bound. Namespaces need root;
#               without it, no route is tried in a user namespace (unshare
#               -rn) and the black hole is skipped with a note.
# It judges nothing: it exits 0 unless something failed to build or run.
# BENCH_RUNS sets the number of timed runs of each command (default 200).
set -euo pipefail
cd "$(dirname "$0")/.."

runs=${BENCH_RUNS:-200}
work=$(mktemp -d)
servers=()
namespaces=()
cleanup() {
	for pid in "${servers[@]}"; do kill "$pid" 2>/dev/null || true; done
	for ns in "${namespaces[@]}"; do ip netns delete "$ns" 2>/dev/null || true; done
	rm -rf "$work"
}
trap cleanup EXIT

echo "== build"
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$work/metadatabench" ./bench/metadatabench
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$work/mirrord" ./cmd/mirrord
go build -o "$work/timeit" ./bench/timeit
echo "$(go version), $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)"

echo
echo "== in-process: Fetch against each emulator vs a no-op Fetch"
"$work/metadatabench" inproc -n "$runs"

# serve starts provider's emulator in the background and sets url to its
# URL. It runs in this shell, not in $(...), so that cleanup knows the pid.
serve() {
	local out="$work/serve-$1"
	"$work/metadatabench" serve -provider "$1" >"$out" &
	servers+=("$!")
	for _ in $(seq 100); do
		if [ -s "$out" ]; then
			url=$(head -n1 "$out")
			return
		fi
		sleep 0.05
	done
	echo "bench: the $1 emulator did not start" >&2
	exit 1
}

# median_cost prints the difference of the two medians in $work/timing:
# the first timing line is the baseline's, the second the command's; each
# figure follows the word "median".
median_cost() {
	awk '/ median +[0-9.]+ ms/ {
		for (i = 1; i < NF; i++) if ($i == "median") { v[n++] = $(i + 1); break }
	} END {
		if (n != 2) { print "bench: cannot read the medians" > "/dev/stderr"; exit 1 }
		printf "cost of the metadata step: median %.3f ms over the no-op\n", v[1] - v[0]
	}' "$work/timing"
}

for provider in gce aws; do
	serve "$provider"
	declare "url_$provider=$url"
	echo
	echo "== process: metadatabench fetch -provider $provider vs metadatabench (no-op Fetch)"
	"$work/timeit" -n "$runs" -base "$work/metadatabench" -label "fetch $provider" -- \
		"$work/metadatabench" fetch -provider "$provider" -endpoint "$url" | tee "$work/timing"
	median_cost
done

echo
echo "== boot path: no-op mirrord apply reading gce metadata vs the same with MIRRORD_METADATA=none"
# Two copies of the sample node, each applied once so that every timed
# apply is a no-op: one takes both keys from the gce emulator, the other
# has metadata off. Both run through the same /bin/sh wrapper.
unset MIRRORD_MIRRORS MIRRORD_RUNTIMES MIRRORD_ROOT MIRRORD_CONFIG MIRRORD_METADATA \
	MIRRORD_METADATA_ENDPOINT MIRRORD_METADATA_TIMEOUT
for kind in md none; do
	cp -a examples/node "$work/node-$kind"
	{
		echo '#!/bin/sh'
		if [ "$kind" = md ]; then
			echo "export MIRRORD_METADATA=gce MIRRORD_METADATA_ENDPOINT=$url_gce"
		else
			echo "export MIRRORD_METADATA=none"
		fi
		echo "exec '$work/mirrord' apply --root '$work/node-$kind' --no-reload"
	} >"$work/apply-$kind"
	chmod +x "$work/apply-$kind"
	if ! "$work/apply-$kind" >"$work/first-apply-$kind.log" 2>&1; then
		cat "$work/first-apply-$kind.log" >&2
		echo "bench: the first apply ($kind) failed" >&2
		exit 1
	fi
done
if ! grep -q quay-mirror.example.net "$work/node-md/etc/containerd/certs.d/quay.io/hosts.toml"; then
	echo "bench: the apply with metadata did not take the emulator's mirrors" >&2
	exit 1
fi
"$work/timeit" -n "$runs" -base "$work/apply-none" -label "apply+gce" -- "$work/apply-md" |
	tee "$work/timing"
median_cost

echo
echo "== give-up times at 169.254.169.254 (bound 2s)"
if [ "$(id -u)" -eq 0 ] && command -v ip >/dev/null && command -v nsenter >/dev/null; then
	ns="mirrord-mdbench-$$"
	ip netns add "$ns-lo"
	namespaces+=("$ns-lo")
	ip -n "$ns-lo" link set lo up
	echo "-- no route (namespace with loopback only)"
	for provider in gce aws azure openstack; do
		nsenter --net="/run/netns/$ns-lo" -- "$work/metadatabench" giveup -provider "$provider"
	done

	ip netns add "$ns-a"
	namespaces+=("$ns-a")
	ip netns add "$ns-b"
	namespaces+=("$ns-b")
	ip -n "$ns-a" link set lo up
	ip -n "$ns-b" link set lo up
	ip -n "$ns-a" link add veth0 type veth peer name veth0 netns "$ns-b"
	ip -n "$ns-a" addr add 10.254.0.1/30 dev veth0
	ip -n "$ns-a" link set veth0 up
	ip -n "$ns-b" addr add 10.254.0.2/30 dev veth0
	ip -n "$ns-b" link set veth0 up
	ip -n "$ns-a" route add 169.254.169.254/32 via 10.254.0.2
	echo "-- black hole (route via a peer that does not forward: SYNs dropped silently)"
	for provider in gce aws azure openstack; do
		nsenter --net="/run/netns/$ns-a" -- "$work/metadatabench" giveup -provider "$provider"
	done
elif unshare -rn true 2>/dev/null; then
	echo "-- no route (user and network namespace with nothing up)"
	for provider in gce aws azure openstack; do
		unshare -rn "$work/metadatabench" giveup -provider "$provider"
	done
	echo "-- black hole: skipped, needs root to join two namespaces with a veth"
else
	echo "-- no route and black hole: skipped, need root (or unprivileged user namespaces)"
fi
