#!/usr/bin/env bash
# Runs every fuzz target of ./internal/... for TIME each, one after another,
# and prints a line per target: its package, its name, how many inputs it
# ran, how many new interesting inputs it found, and ok or FAIL. It exits 1
# if any target failed; the failing input is then in the package's
# testdata/fuzz/<target>/, to be kept as a regression seed once fixed.
#
#   scripts/fuzz.sh [TIME [REGEX]]   TIME per target (default 2m), the targets whose
#                                    "internal/<package> <target>" matches REGEX
#   scripts/fuzz.sh --list           the targets, "package target" a line
#
# MIRRORD_FUZZ_PARALLEL sets -parallel (default: go test's, GOMAXPROCS);
# MIRRORD_FUZZ_MINIMIZE sets -fuzzminimizetime (default 10s);
# MIRRORD_FUZZ_LOGS keeps each target's go test output in that directory.
# On a shared machine run it as: nice -n 15 env MIRRORD_FUZZ_PARALLEL=1 scripts/fuzz.sh 3m
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"

targets() {
	for pkg in $(go list ./internal/...); do
		for target in $(go test -list '^Fuzz' "$pkg" | grep '^Fuzz' || true); do
			echo "$pkg $target"
		done
	done
}

if [ "${1:-}" = "--list" ]; then
	targets
	exit 0
fi

fuzztime=${1:-2m}
filter=${2:-.}
logs=${MIRRORD_FUZZ_LOGS:-$(mktemp -d)}
mkdir -p "$logs"
flags=(-run '^$' -fuzztime "$fuzztime" -fuzzminimizetime "${MIRRORD_FUZZ_MINIMIZE:-10s}" -timeout 0)
if [ -n "${MIRRORD_FUZZ_PARALLEL:-}" ]; then
	flags+=(-parallel "$MIRRORD_FUZZ_PARALLEL")
fi

failed=0
printf '%-40s %-20s %12s %12s  %s\n' package target execs interesting result
while read -r pkg target; do
	[[ "${pkg#github.com/mirrord/mirrord/} $target" =~ $filter ]] || continue
	log="$logs/${pkg##*/}.$target.log"
	result=ok
	if ! go test "${flags[@]}" -fuzz "^${target}\$" "$pkg" >"$log" 2>&1; then
		# Go 1.26's coordinator may fail a run whose time ran out on a loaded
		# machine with a bare "context deadline exceeded" (go.dev/issue/75804,
		# fixed in Go 1.27): no input failed, none was written.
		if grep -q 'context deadline exceeded' "$log" && ! grep -q 'Failing input' "$log"; then
			result="ok (go.dev/issue/75804)"
		else
			result=FAIL
			failed=1
		fi
	fi

	# The last progress line: "fuzz: elapsed: 2m0s, execs: 123 (1/sec), new interesting: 4 ..."
	last=$(grep 'fuzz: elapsed:.*execs:' "$log" | tail -1 || true)
	execs=$(sed -n 's/.*execs: \([0-9]*\).*/\1/p' <<<"$last")
	found=$(sed -n 's/.*new interesting: \([0-9]*\).*/\1/p' <<<"$last")
	printf '%-40s %-20s %12s %12s  %s\n' "${pkg#github.com/mirrord/mirrord/}" "$target" \
		"${execs:-?}" "${found:-?}" "$result"
	if [ "$result" = FAIL ]; then
		grep -v '^fuzz: elapsed' "$log" | tail -20 | sed 's/^/    /'
	fi
done < <(targets)

echo "logs: $logs"
exit "$failed"
