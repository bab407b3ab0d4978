package containerd

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/mirrord/mirrord/internal/containerd/hoststest"
	"github.com/mirrord/mirrord/internal/spec"
)

// FuzzEditConfig checks, for any input, that EditConfig either fails or
// returns a file that decodes to the input document with only config_path
// and the legacy mirrors changed, and that editing that file again changes
// nothing. It is seeded with every golden input.
func FuzzEditConfig(f *testing.F) {
	for _, dir := range []string{"testdata/config", "testdata/config_errors"} {
		entries, err := os.ReadDir(dir)
		if err != nil {
			f.Fatal(err)
		}
		for _, e := range entries {
			data, err := os.ReadFile(filepath.Join(dir, e.Name(), "in.toml"))
			if err != nil {
				f.Fatal(err)
			}
			for _, major := range []uint8{0, 1, 2} {
				f.Add(data, major)
			}
		}
	}

	f.Fuzz(func(t *testing.T, src []byte, major uint8) {
		m := int(major % 3)
		ed, err := EditConfig(src, m)
		if err != nil {
			return
		}
		if ed.CRIDisabled && !bytes.Equal(ed.Data, src) {
			t.Fatalf("CRIDisabled, yet the data changed")
		}
		checkSameDocument(t, src, ed)
		checkIdempotent(t, ed, m)
	})
}

// FuzzParseHosts checks, for any hosts.toml, that ParseHosts refuses only
// files that containerd's schema refuses too, and otherwise reports the
// file's server and a mirror for each [host."<url>"] table containerd
// reads, each once, as registry roots. Then it renders a registry built
// from the fuzzed names and checks that the file decodes strictly in
// containerd's schema and parses back to its server and mirrors in order.
// It is seeded with every golden hosts.toml.
func FuzzParseHosts(f *testing.F) {
	seeds, _ := filepath.Glob(filepath.Join("testdata", "hosts", "*.toml"))
	for _, p := range seeds {
		data, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data, "docker.io", "https://mirror.gcr.io", "http://10.0.0.9:5000/hub", uint8(0))
	}
	f.Add([]byte("server = 1\n"), "*", "https://m", "", uint8(1))
	f.Add([]byte("host = \"x\"\n"), "127.0.0.1:5000", "http://[::1]:5001", "", uint8(2))
	f.Add([]byte("[host.\"https://a/v2/\"]\n[host.\"https://a\"]\n"), "quay.io",
		"https://q.example.net/quay", "https://b", uint8(7))

	f.Fuzz(func(t *testing.T, data []byte, host, url1, url2 string, flags uint8) {
		hf, err := ParseHosts(data)
		lax, laxErr := hoststest.Decode(data, false)
		switch {
		case err != nil && laxErr == nil:
			t.Fatalf("ParseHosts refuses a file containerd reads: %v\n%s", err, data)
		case err == nil:
			checkParsedHosts(t, data, hf, lax, laxErr)
		}

		r, ok := fuzzRegistry(host, url1, url2, flags)
		if !ok {
			return
		}
		out := RenderHosts(r)
		hoststest.Check(t, "hosts.toml", out)
		got, err := ParseHosts(out)
		if err != nil {
			t.Fatalf("ParseHosts refuses RenderHosts's file: %v\n%s", err, out)
		}
		if diff := cmp.Diff(renderedHosts(r), got); diff != "" {
			t.Fatalf("ParseHosts(RenderHosts) (-want +got):\n%s\n%s", diff, out)
		}
	})
}

// checkParsedHosts compares what ParseHosts read from data with
// containerd's decode of it, when that succeeds.
func checkParsedHosts(t *testing.T, data []byte, hf HostsFile, lax hoststest.Hosts,
	laxErr error) {
	t.Helper()

	if hf.Managed != bytes.HasPrefix(data, []byte(managedMarker)) {
		t.Fatalf("Managed = %v for a file that starts %q", hf.Managed, data[:min(20,
			len(data))])
	}
	seen := map[string]bool{}
	for _, m := range hf.Mirrors {
		if seen[m] {
			t.Fatalf("mirror %q reported twice", m)
		}
		seen[m] = true
	}
	if laxErr != nil {
		return
	}
	if hf.Server != registryRoot(lax.Server) {
		t.Fatalf("server %q; containerd reads %q", hf.Server, lax.Server)
	}
	roots := map[string]bool{}
	for u := range lax.HostConfigs {
		roots[registryRoot(u)] = true
	}
	for _, m := range hf.Mirrors {
		if !roots[m] {
			t.Fatalf("mirror %q is no host table containerd reads: %v", m, lax.HostConfigs)
		}
	}
}

// fuzzRegistry builds a valid registry from fuzzed names, or reports that
// they make none. Bits of flags: pull only for each mirror, skip_verify for
// each mirror, no upstream, a CA file.
func fuzzRegistry(host, url1, url2 string, flags uint8) (spec.Registry, bool) {
	var mirrors []spec.Mirror
	for i, raw := range []string{url1, url2} {
		m, err := spec.NewMirror(raw)
		if err != nil {
			continue
		}
		if flags&(1<<i) != 0 {
			m.Capabilities = []spec.Capability{spec.Pull}
		}
		m.SkipVerify = flags&(4<<i) != 0
		if flags&0x20 != 0 {
			m.CAFile = "/etc/ssl/mirror \"ca\".pem"
		}
		mirrors = append(mirrors, m)
	}
	s, err := spec.New([]spec.Registry{{Host: host, Mirrors: mirrors, NoUpstream: flags&0x10 != 0,
		Source: spec.Source{Layer: spec.LayerEnv, Name: host}}})
	if err != nil || len(mirrors) == 0 || spec.CheckMirrors(s.Registries[0]) != nil {
		return spec.Registry{}, false
	}
	return s.Registries[0], true
}

// renderedHosts is what ParseHosts should read from RenderHosts(r).
func renderedHosts(r spec.Registry) HostsFile {
	want := HostsFile{Managed: true}
	mirrors := r.Mirrors
	switch {
	case r.NoUpstream:
		want.Server = mirrors[len(mirrors)-1].URL
		mirrors = mirrors[:len(mirrors)-1]
	case r.Host != spec.Wildcard && !isLocalhost(hostname(r.Host)):
		want.Server = spec.Upstream(r.Host)
	}
	for _, m := range mirrors {
		want.Mirrors = append(want.Mirrors, m.URL)
	}
	return want
}
