package containerd

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"path"
	"slices"
	"strings"

	"github.com/pelletier/go-toml/v2"
	"github.com/pelletier/go-toml/v2/unstable"

	"github.com/mirrord/mirrord/internal/spec"
)

// managedMarker opens the first line of every hosts.toml mirrord writes.
const managedMarker = "# Managed by mirrord"

// RenderHosts returns the hosts.toml of one registry, for
// CertsDir/HostDir(r.Host)/hosts.toml.
//
// The first line is a comment marking the file as mirrord's and naming
// r.Source. Then comes server, the registry's upstream, except for the
// wildcard (containerd then uses each image's own registry) and for a
// loopback registry (containerd then picks http or unverified https itself,
// which an explicit server would undo). With r.NoUpstream the last mirror
// is the server instead, its options at the top level, so nothing falls
// back to the registry. Every other mirror gets a [host."<url>"] table in
// spec order, the order containerd tries them in.
//
// A mirror with a path is written as its API URL with override_path =
// true: <path>/v2 for a mirror at a registry root (the API root containerd
// would derive anyway, made explicit), the URL as given for a mirror at a
// repository prefix (https://m/v2/PREFIX, which containerd must not append
// /v2 to). Only keys that containerd 1.5 and later read are written, never
// referrers (2.2+) or dial_timeout (2.1+), which make older versions ignore
// the whole file.
//
// A mirror with credentials gets an [host."<url>".header] table with its
// Authorization header, sent to that host only: such a file must be written
// 0600 (see HasCredentials).
func RenderHosts(r spec.Registry) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s: written from %s; edits are overwritten. "+
		"Change the mirrord spec instead.\n", managedMarker, commentText(r.Source.String()))

	hosts := r.Mirrors
	switch {
	case r.NoUpstream && len(hosts) > 0:
		server := hosts[len(hosts)-1]
		hosts = hosts[:len(hosts)-1]
		fmt.Fprintf(&b, "server = %s\n", quote(hostURL(server)))
		writeHostKeys(&b, server, "")
		if server.Auth != nil {
			writeHeader(&b, server, "[header]", "")
		}
	case r.Host != spec.Wildcard && !isLocalhost(hostname(r.Host)):
		fmt.Fprintf(&b, "server = %s\n", quote(spec.Upstream(r.Host)))
	}

	for _, m := range hosts {
		fmt.Fprintf(&b, "\n[host.%s]\n", quote(hostURL(m)))
		writeHostKeys(&b, m, "  ")
		if m.Auth != nil {
			writeHeader(&b, m, "[host."+quote(hostURL(m))+".header]", "  ")
		}
	}
	return b.Bytes()
}

// commentText makes s fit in a TOML comment line: valid UTF-8, and control
// characters, which a comment may not hold, turned into spaces. A source
// names a file as it is called, and a drop-in's name may hold any byte; a
// comment that breaks the TOML would make containerd refuse the whole file.
func commentText(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 && r != '\t' || r == 0x7f {
			return ' '
		}
		return r
	}, strings.ToValidUTF8(s, "?"))
}

// hostname strips the port from a host[:port].
func hostname(hostport string) string {
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		return h
	}
	return hostport
}

// hostURL is the URL containerd is given for m: the mirror itself, or for a
// mirror with a path, its API URL.
func hostURL(m spec.Mirror) string {
	if m.Path() != "" {
		return m.API()
	}
	return m.URL
}

// writeHeader writes the header table of m, whose Auth is set, indented
// one step below the table it belongs to.
func writeHeader(b *bytes.Buffer, m spec.Mirror, table, indent string) {
	fmt.Fprintf(b, "\n%s%s\n", indent, table)
	fmt.Fprintf(b, "%s  %s = %s\n", indent, AuthorizationKey, quote(m.Auth.Header().Reveal()))
}

// AuthorizationKey is the header key mirrord writes credentials under.
const AuthorizationKey = "Authorization"

// HasCredentials reports whether a hosts.toml of r carries credentials,
// and so must be written 0600.
func HasCredentials(r spec.Registry) bool {
	for _, m := range r.Mirrors {
		if m.Auth != nil {
			return true
		}
	}
	return false
}

// writeHostKeys writes the keys of one host, each line indented by indent.
func writeHostKeys(b *bytes.Buffer, m spec.Mirror, indent string) {
	caps := make([]string, len(m.Capabilities))
	for i, c := range m.Capabilities {
		caps[i] = quote(string(c))
	}
	fmt.Fprintf(b, "%scapabilities = [%s]\n", indent, strings.Join(caps, ", "))
	if m.CAFile != "" {
		fmt.Fprintf(b, "%sca = %s\n", indent, quote(m.CAFile))
	}
	if m.SkipVerify {
		fmt.Fprintf(b, "%sskip_verify = true\n", indent)
	}
	if m.Path() != "" {
		fmt.Fprintf(b, "%soverride_path = true\n", indent)
	}
}

// HostsFile is what ParseHosts reads from a hosts.toml.
type HostsFile struct {
	// Server is the top-level server, "" when the file has none (containerd
	// then uses the image's registry).
	Server string

	// Mirrors are the [host."<url>"] tables in file order, the order
	// containerd tries them in.
	Mirrors []string

	// Managed reports that the file opens with mirrord's header.
	Managed bool
}

// ParseHosts reads a hosts.toml written by anyone. Server and Mirrors are
// given as registry roots, the form spec.Mirror.URL uses: a trailing "/v2"
// (or "/v2/"), which containerd adds when it is missing, is dropped; any
// other URL is kept as written. Like containerd, it takes mirrors only from
// [host."<url>"] table headers. It fails only when the file is not TOML or
// server or host has the wrong type, which containerd would not read either.
func ParseHosts(data []byte) (HostsFile, error) {
	// Only server and the names of the host tables, as containerd decodes
	// the file into its schema: a value elsewhere that go-toml cannot hold
	// (an integer past 64 bits, say) fails neither.
	var doc struct {
		Server any                 `toml:"server"`
		Host   map[string]struct{} `toml:"host"`
	}
	if err := toml.Unmarshal(data, &doc); err != nil {
		return HostsFile{}, hostsError(data, err)
	}

	var hf HostsFile
	if v := doc.Server; v != nil {
		s, isString := v.(string)
		if !isString {
			return HostsFile{}, fmt.Errorf("parse hosts.toml: server is %s; want a URL string",
				tomlType(v))
		}
		hf.Server = registryRoot(s)
	}

	var p unstable.Parser
	p.Reset(data)
	for p.NextExpression() {
		n := p.Expression()
		if n.Kind != unstable.Table {
			continue
		}
		parts, _, _ := keyPath(n)
		if len(parts) < 2 || parts[0] != "host" {
			continue
		}
		if u := registryRoot(parts[1]); !slices.Contains(hf.Mirrors, u) {
			hf.Mirrors = append(hf.Mirrors, u)
		}
	}
	if err := p.Error(); err != nil {
		return HostsFile{}, fmt.Errorf("parse hosts.toml: %w", err)
	}

	hf.Managed = bytes.HasPrefix(data, []byte(managedMarker))
	return hf, nil
}

// hostsError says why a hosts.toml did not decode: host is not a table of
// tables, or what go-toml says, with the line.
func hostsError(data []byte, err error) error {
	var kinds struct {
		Host any `toml:"host"`
	}
	if toml.Unmarshal(data, &kinds) == nil && kinds.Host != nil {
		if _, isTable := kinds.Host.(map[string]any); !isTable {
			return fmt.Errorf("parse hosts.toml: host is %s; want a table of "+
				"[host.\"<url>\"] tables", tomlType(kinds.Host))
		}
	}

	var de *toml.DecodeError
	if errors.As(err, &de) {
		line, _ := de.Position()
		return fmt.Errorf("parse hosts.toml: line %d: %s", line,
			strings.TrimPrefix(de.Error(), "toml: "))
	}
	return fmt.Errorf("parse hosts.toml: %w", err)
}

// registryRoot drops the /v2 API suffix from a host URL.
func registryRoot(u string) string {
	scheme, rest, ok := strings.Cut(u, "://")
	if !ok {
		return u
	}
	host, p, hasPath := strings.Cut(rest, "/")
	if !hasPath {
		return u
	}
	p = path.Clean("/" + p)
	if p == "/v2" {
		return scheme + "://" + host
	}
	if strings.HasSuffix(p, "/v2") {
		return scheme + "://" + host + strings.TrimSuffix(p, "/v2")
	}
	return u
}
