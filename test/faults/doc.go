// Package faults shows that mirrord keeps a node consistent when its runs
// are killed, run at once, or meet a full or read-only filesystem.
//
//   - Crashes: a mirrord built with the crashtest tag kills itself with
//     SIGKILL at the Nth crash point of its writes (a temporary file made,
//     half written, synced, renamed before the directory's fsync, written),
//     for every N of an apply and of a revert on a copy of examples/node.
//     After each, every file is its old or its new version, never a mix or
//     empty; the next apply finishes the job (files, no temporary file left,
//     the runtime actions still pending and reported), and revert brings back
//     the node's original files byte for byte.
//   - Concurrency: two applies and a watch started together on one node:
//     the lock serializes them, no file is torn, one run writes and reports
//     the actions, the others find nothing to do.
//   - Full and read-only filesystems (root only, MIRRORD_E2E=1): a small
//     tmpfs filled up, and a read-only bind mount, in a private mount
//     namespace: a clear error, no temporary file left behind, the old files
//     intact.
//
// The crash and concurrency tests need only Go and run with go test; the
// filesystem tests skip unless MIRRORD_E2E=1 and root.
package faults
