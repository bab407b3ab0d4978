// Package systemdtest proves mirrord's systemd integration under a real
// systemd as PID 1: each test boots its own minimal Debian 12 with
// systemd-nspawn, with containerd and dockerd as packaged by Debian, puts the
// mirrord binary built from this tree and the units of packaging/systemd in
// it before boot, and drives it from outside by entering its namespaces with
// nsenter.
//
// The tests show that mirrord.service writes the mirrors before the runtimes
// start at boot, that a live spec change restarts containerd only when
// config.toml changed and reloads dockerd for docker mirror changes, that
// "systemctl enable --now mirrord" on a running system does not deadlock,
// that mirrord-watch.service repairs drift within a second inside its
// restart budget, that both units keep a systemd-analyze security
// exposure of 2.0 or less, and that the DaemonSet of deploy/kubernetes,
// run from the image's binary with the manifest's mounts and no
// capability, restarts containerd through the mounted bus socket, follows
// a ConfigMap update and reverts on stop when armed (daemonset_test.go).
//
// The package tests start from a machine without mirrord: the deb that
// scripts/build-deb.sh builds is installed, upgraded, removed and purged
// with dpkg while containerd and dockerd run, and each user-data of
// cloud-init/ is booted as a NoCloud seed, the deb served from a file in
// the machine, the first pulls served by a docker-registry that the test
// starts on the machine's loopback.
//
// Every machine is an overlay on one cached root filesystem, mounted in a
// private mount namespace that ends with the machine, with only a loopback
// network (--private-network). The root filesystem is built once by
// scripts/build-rootfs.sh into
// ${MIRRORD_TOOLS_DIR:-$HOME/.cache/mirrord-tools}/rootfs-<hash>; the tests
// run that script themselves, and it returns at once when the tree exists.
//
// The package holds tests only. They run when MIRRORD_E2E=1, as root, and
// skip otherwise; with MIRRORD_E2E=1 a missing tool or root filesystem is a
// failure:
//
//	sudo scripts/build-rootfs.sh
//	sudo MIRRORD_E2E=1 go test ./test/systemd/
//
// MIRRORD_ROOTFS names a root filesystem to use instead of running the
// script, and the -units flag a directory of unit files to test instead of
// packaging/systemd. If the test process dies without its cleanups, each
// machine gets SIGTERM and powers itself off; the next run removes the
// cgroups it left.
package systemdtest
