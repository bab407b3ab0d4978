// Package containerd renders what mirrord writes for containerd: one
// hosts.toml per registry under CertsDir, and a byte-preserving edit of
// config.toml that points the CRI plugin's config_path at CertsDir.
//
// Every function here is pure except DetectMajor, which reads under a root
// directory and may run the containerd binary it finds there. Nothing in this
// package writes a file; the apply engine does that.
//
// The config.toml edit never re-encodes the file. It decodes the document
// with go-toml to learn what it says, locates the bytes to change with
// go-toml's unstable parser, and splices only those: comments, blank lines,
// indentation, key order and other plugins stay as they were. Before it
// returns, it decodes its own output and checks that nothing but the intended
// keys differ.
package containerd

import "github.com/mirrord/mirrord/internal/spec"

// CertsDir is the value mirrord gives config_path: one directory, never a
// colon-separated list, because from containerd 2.2 the transfer service
// that serves CRI pulls reads a list as one directory name and silently falls
// back to the upstream registry (containerd#12415).
const CertsDir = "/etc/containerd/certs.d"

// ConfigFile is where containerd reads its configuration by default.
const ConfigFile = "/etc/containerd/config.toml"

// defaultDir is the directory name containerd looks up for a registry that
// has no directory of its own.
const defaultDir = "_default"

// HostDir returns the directory under CertsDir that holds host's hosts.toml:
// the host[:port] as it is ("127.0.0.1:5000" stays, which containerd looks
// up after "127.0.0.1_5000_"), or "_default" for spec.Wildcard. host must be
// normalised as spec.NormalizeHost does.
func HostDir(host string) string {
	if host == spec.Wildcard {
		return defaultDir
	}
	return host
}
