// Package metadatatest proves, in network namespaces it makes, how the
// metadata step of package metadata gives up on a service that is not
// there, using the real link-local address 169.254.169.254 with no
// endpoint override:
//
//   - no route, an unreachable route, a local blackhole route, and a
//     refused connection end the step at once;
//   - a route to a peer that silently drops the packets (forwarding off)
//     is abandoned at the bound, not after the kernel's ≈130 s of SYN
//     retries;
//   - an emulator listening on 169.254.169.254:80 in the peer namespace is
//     read with the default endpoint, even with HTTP_PROXY set.
//
// Fetch runs in a child process (the test binary itself) entered into the
// namespace with nsenter; every address it reaches lives in a namespace
// the test made.
//
// The package holds tests only. They run when MIRRORD_E2E=1, as root, and
// skip otherwise; with MIRRORD_E2E=1 a missing tool (ip, nsenter) is a
// failure:
//
//	sudo MIRRORD_E2E=1 go test ./test/metadata/
package metadatatest
