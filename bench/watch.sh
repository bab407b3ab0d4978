#!/usr/bin/env bash
# Prints the figures of `mirrord watch` on a copy of examples/node, run as
# under mirrord-watch.service but without systemd (NOTIFY_SOCKET unset) and
# with --no-reload, each next to a baseline measured in the same run:
#   drift repair  a foreign in-place write of a managed hosts.toml until
#                 mirrord has put it back: median, p90 and max over
#                 BENCH_WRITES writes (default 100); aim < 100 ms. Baseline:
#                 watchbench's trivial repairer (inotify, no debounce, no
#                 parsing) on a copy of the same file.
#   memory        VmRSS and VmHWM after the drift runs; aim < 15 MiB.
#                 Baseline: an idle Go program (watchbench sleep).
#   idle wakeups  context switches of all threads per second over
#                 BENCH_IDLE seconds (default 10), BENCH_SETTLE seconds
#                 (default 5) after the drift runs; aim ~0 besides the
#                 timers: watchdog ping every 15 s (WatchdogSec=30), resync
#                 every 5 min. Baseline: the idle Go program.
# The fight protection is off for the run (MIRRORD_WATCH_FIGHT=off): 100
# repairs of one file in seconds is what it is there to stop.
# It judges nothing: it exits 0 unless something failed to build or run.
set -euo pipefail
cd "$(dirname "$0")/.."

writes=${BENCH_WRITES:-100}
idle=${BENCH_IDLE:-10}
settle=${BENCH_SETTLE:-5}

work=$(mktemp -d)
pids=()
cleanup() {
	for p in "${pids[@]}"; do
		kill "$p" 2>/dev/null || true
	done
	rm -rf "$work"
}
trap cleanup EXIT

echo "== build"
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$work/mirrord" ./cmd/mirrord
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$work/watchbench" ./bench/watchbench
echo "$(go version), $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)"

if [ ! -d examples/node/etc ]; then
	echo "bench: examples/node/etc is missing; run from a checkout of the repository" >&2
	exit 1
fi
cp -a examples/node "$work/node"
# Variables of the caller's environment would change what the watch does.
unset MIRRORD_MIRRORS MIRRORD_RUNTIMES MIRRORD_ROOT MIRRORD_CONFIG MIRRORD_METADATA \
	NOTIFY_SOCKET WATCHDOG_PID JOURNAL_STREAM

# The watchdog interval of mirrord-watch.service, so that its ping timer
# runs as under systemd (the pings go nowhere without NOTIFY_SOCKET).
# The probes of the health order are off: the sample node's mirrors are
# not reachable from here, and the figures compare with the baselines of a
# watch that has none.
MIRRORD_WATCH_FIGHT=off MIRRORD_PROBE_INTERVAL=off WATCHDOG_USEC=30000000 \
	"$work/mirrord" watch --root "$work/node" --no-reload >"$work/watch.log" 2>&1 &
watch_pid=$!
pids+=("$watch_pid")
"$work/watchbench" sleep &
sleep_pid=$!
pids+=("$sleep_pid")

hosts="$work/node/etc/containerd/certs.d/docker.io/hosts.toml"
for _ in $(seq 100); do
	[ -s "$hosts" ] && break
	sleep 0.05
done
if [ ! -s "$hosts" ] || ! kill -0 "$watch_pid" 2>/dev/null; then
	cat "$work/watch.log" >&2
	echo "bench: the watch did not write $hosts" >&2
	exit 1
fi
sleep 0.5 # the first pass's follow-up

echo
echo "== drift repair: $writes foreign writes of etc/containerd/certs.d/docker.io/hosts.toml"
mkdir "$work/base"
cp "$hosts" "$work/base/hosts.toml"
"$work/watchbench" repairer -file "$work/base/hosts.toml" &
repairer_pid=$!
pids+=("$repairer_pid")
sleep 0.2
"$work/watchbench" drift -file "$work/base/hosts.toml" -n "$writes" >"$work/base.txt"
kill "$repairer_pid"
"$work/watchbench" drift -file "$hosts" -n "$writes" >"$work/mirrord.txt"
awk '
	{ for (i = 1; i < NF; i += 2) v[FILENAME, $i] = $(i + 1) }
	END {
		b = ARGV[1]; m = ARGV[2]
		printf "baseline  median %7.2f ms  p90 %7.2f ms  max %7.2f ms  (%d repaired, %d timed out)\n",
			v[b, "median"], v[b, "p90"], v[b, "max"], v[b, "repairs"], v[b, "timeouts"]
		printf "mirrord   median %7.2f ms  p90 %7.2f ms  max %7.2f ms  (%d repaired, %d timed out)\n",
			v[m, "median"], v[m, "p90"], v[m, "max"], v[m, "repairs"], v[m, "timeouts"]
		printf "ratio to baseline: median %.1fx  p90 %.1fx\n", v[m, "median"] / v[b, "median"],
			v[m, "p90"] / v[b, "p90"]
		printf "against the aim: median %.2f ms of 100 ms (%.0f%%; the debounce is 20 ms)\n",
			v[m, "median"], v[m, "median"]
	}' "$work/base.txt" "$work/mirrord.txt"

echo
echo "== resident memory after the drift runs"
mem() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }
rss_m=$(mem "$watch_pid" VmRSS)
hwm_m=$(mem "$watch_pid" VmHWM)
rss_b=$(mem "$sleep_pid" VmRSS)
hwm_b=$(mem "$sleep_pid" VmHWM)
awk -v rm="$rss_m" -v hm="$hwm_m" -v rb="$rss_b" -v hb="$hwm_b" 'BEGIN {
	printf "idle Go program  VmRSS %6.2f MiB  VmHWM %6.2f MiB\n", rb / 1024, hb / 1024
	printf "mirrord watch    VmRSS %6.2f MiB  VmHWM %6.2f MiB\n", rm / 1024, hm / 1024
	printf "ratio to baseline: VmRSS %.1fx  VmHWM %.1fx\n", rm / rb, hm / hb
	printf "against the aim: VmHWM %.2f MiB of 15 MiB (%.0f%%)\n", hm / 1024, 100 * hm / (15 * 1024)
}'

echo
echo "== idle wakeups over ${idle}s, ${settle}s after the drift runs" \
	"(voluntary + involuntary context switches, all threads)"
switches() {
	cat /proc/"$1"/task/*/status 2>/dev/null |
		awk '/^(voluntary|nonvoluntary)_ctxt_switches:/ { n += $2 } END { print n + 0 }'
}
threads() { ls /proc/"$1"/task | wc -l; }
sleep "$settle" # the garbage collector and scavenger finish after the drift runs
m0=$(switches "$watch_pid")
b0=$(switches "$sleep_pid")
sleep "$idle"
m1=$(switches "$watch_pid")
b1=$(switches "$sleep_pid")
awk -v m="$((m1 - m0))" -v b="$((b1 - b0))" -v s="$idle" \
	-v tm="$(threads "$watch_pid")" -v tb="$(threads "$sleep_pid")" 'BEGIN {
	printf "idle Go program  %4d switches  %5.2f/s  (%d threads)\n", b, b / s, tb
	printf "mirrord watch    %4d switches  %5.2f/s  (%d threads)\n", m, m / s, tm
	printf "above baseline: %.2f/s\n", (m - b) / s
	printf "timers: a watchdog ping every 15 s (WatchdogSec=30), a resync every 5 min;\n"
	printf "after each, the Go runtime (sysmon) spins down over some tens of switches\n"
}'

echo
echo "== stop"
kill -TERM "$watch_pid"
status=0
wait "$watch_pid" || status=$?
echo "mirrord watch exited with status $status after SIGTERM"
if grep -q 'level=ERROR' "$work/watch.log"; then
	echo "note: the watch logged errors:"
	grep 'level=ERROR' "$work/watch.log"
fi
[ "$status" -eq 0 ]
