// Package hoststest checks hosts.toml files the way containerd reads them,
// for the tests and fuzz targets of every package that renders one
// (containerd's certs.d, dockerd's certs.d, the whole apply). It is
// imported by tests only and never built into mirrord.
package hoststest

import (
	"bytes"
	"net/url"
	"slices"
	"testing"

	"github.com/pelletier/go-toml/v2"
)

// HostFields are the fields of containerd's hostFileConfig that containerd
// 1.5 and later read (core/remotes/docker/config/hosts.go), without
// dial_timeout (2.1+) or referrers (2.2+): a file that decodes strictly
// into them holds nothing an older containerd would choke on.
type HostFields struct {
	Capabilities []string       `toml:"capabilities"`
	CACert       any            `toml:"ca"`
	Client       any            `toml:"client"`
	SkipVerify   *bool          `toml:"skip_verify"`
	Header       map[string]any `toml:"header"`
	OverridePath bool           `toml:"override_path"`
}

// Hosts is the document containerd decodes a hosts.toml into: the fields
// of the top-level host (server) beside server itself, and a table of
// host tables keyed by URL.
type Hosts struct {
	HostFields
	Server      string                `toml:"server"`
	HostConfigs map[string]HostFields `toml:"host"`
}

// Capabilities are the capabilities containerd knows.
var Capabilities = []string{"pull", "resolve", "push"}

// Decode decodes data into containerd's schema. With strict set, a key
// containerd 1.5 does not know is an error, as mirrord's own files must
// never hold one; without it unknown keys are ignored, as containerd
// ignores them in a file someone else wrote. A value of the wrong type is
// an error either way, as it is for containerd.
func Decode(data []byte, strict bool) (Hosts, error) {
	var h Hosts
	dec := toml.NewDecoder(bytes.NewReader(data))
	if strict {
		dec.DisallowUnknownFields()
	}
	if err := dec.Decode(&h); err != nil {
		return Hosts{}, err
	}
	return h, nil
}

// Check fails t unless data, the hosts.toml at path, decodes strictly in
// containerd's schema, with only capabilities containerd knows and with
// server and every host an absolute http or https URL.
func Check(t testing.TB, path string, data []byte) {
	t.Helper()

	h, err := Decode(data, true)
	if err != nil {
		t.Fatalf("%s does not decode in containerd's schema: %v\n%s", path, err, data)
	}

	checkCapabilities(t, path, "the top level", h.Capabilities)
	hosts := []string{}
	if h.Server != "" {
		hosts = append(hosts, h.Server)
	}
	for host, entry := range h.HostConfigs {
		hosts = append(hosts, host)
		checkCapabilities(t, path, "host "+host, entry.Capabilities)
	}
	for _, host := range hosts {
		u, err := url.Parse(host)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			t.Fatalf("%s: host %q is not an absolute http(s) URL: %v\n%s", path, host, err, data)
		}
	}
}

func checkCapabilities(t testing.TB, path, where string, caps []string) {
	t.Helper()

	for _, c := range caps {
		if !slices.Contains(Capabilities, c) {
			t.Fatalf("%s: %s: capability %q unknown to containerd", path, where, c)
		}
	}
}
