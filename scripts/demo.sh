#!/usr/bin/env bash
# Runs mirrord's main job against a copy of the sample node tree in
# examples/node, so a newcomer sees the plan, the apply and the result without
# touching /etc. Needs only Go.
set -euo pipefail
cd "$(dirname "$0")/.."

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -a examples/node "$work/node"
CGO_ENABLED=0 go build -o "$work/mirrord" ./cmd/mirrord
m() { (set -x; "$work/mirrord" "$@" --root "$work/node"); }

echo "== what apply would change"
m plan
echo
echo "== apply (writes files, reports the action each runtime needs)"
m apply --no-reload
echo
echo "== a second apply changes nothing"
m apply --no-reload
echo
echo "== the result"
m status
echo
echo "== docker.io's hosts.toml"
cat "$work/node/etc/containerd/certs.d/docker.io/hosts.toml"
echo
echo "== revert puts every file back as it was"
m revert
diff -r examples/node/etc "$work/node/etc" && echo "etc/ is byte-identical to the original"
