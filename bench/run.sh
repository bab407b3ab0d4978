#!/usr/bin/env bash
# Prints mirrord's benchmark figures, each as a ratio to a baseline measured
# in the same run (these machines are shared and noisy):
#   size  the static mirrord binary against a trivial static Go program, and
#         in MiB against the 10 MiB aim;
#   time  a no-op `mirrord apply --no-reload` on a copy of examples/node
#         against running the trivial program, in alternation (aim: 3x).
# It judges nothing: it exits 0 unless something failed to build or run.
# BENCH_RUNS sets the number of timed runs of each command (default 200).
set -euo pipefail
cd "$(dirname "$0")/.."

runs=${BENCH_RUNS:-200}
aim_mib=10
aim_ratio=3

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The same flags as the release build (FACTS.md §7), without the version
# stamp, which changes nothing measurable.
build_static() {
	CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$1" "$2"
}

echo "== build"
build_static "$work/mirrord" ./cmd/mirrord
build_static "$work/trivial" ./bench/trivial
go build -o "$work/timeit" ./bench/timeit
echo "$(go version), $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)"

echo
echo "== binary size (static, -trimpath, -s -w)"
size_m=$(stat -c %s "$work/mirrord")
size_t=$(stat -c %s "$work/trivial")
awk -v m="$size_m" -v t="$size_t" -v aim="$aim_mib" 'BEGIN {
	mib = 1024 * 1024
	printf "trivial  %9d bytes  %5.2f MiB\n", t, t / mib
	printf "mirrord  %9d bytes  %5.2f MiB\n", m, m / mib
	printf "ratio to trivial: %.2fx\n", m / t
	printf "against the aim: %.2f MiB of %d MiB (%.0f%%)\n", m / mib, aim, 100 * m / (aim * mib)
}'

echo
echo "== no-op apply: mirrord apply --root <copy of examples/node> --no-reload"
if [ ! -d examples/node/etc ]; then
	echo "bench: examples/node/etc is missing; run from a checkout of the repository" >&2
	exit 1
fi
cp -a examples/node "$work/node"
# Variables of the caller's environment would change what apply does.
unset MIRRORD_MIRRORS MIRRORD_RUNTIMES MIRRORD_ROOT MIRRORD_CONFIG MIRRORD_METADATA
apply=("$work/mirrord" apply --root "$work/node" --no-reload)

# The first apply writes the files; every later one must find nothing to do.
if ! "${apply[@]}" >"$work/first-apply.log" 2>&1; then
	cat "$work/first-apply.log" >&2
	echo "bench: the first apply failed" >&2
	exit 1
fi
snapshot() { find "$work/node/etc" -type f -printf '%P %s %T@\n' | sort; }
before=$(snapshot)
"$work/timeit" -n "$runs" -base "$work/trivial" -label "no-op apply" -- "${apply[@]}" |
	tee "$work/timing"
if [ "$(snapshot)" != "$before" ]; then
	echo "note: files under etc/ changed during the timed runs: apply was not a no-op"
fi
awk -v aim="$aim_ratio" '/^ratio:/ {
	sub(/x$/, "", $3)
	printf "against the aim: median ratio %.2fx of at most %dx\n", $3, aim
}' "$work/timing"
