package registries

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/mirrord/mirrord/internal/spec"
)

// FuzzParse checks, for any input, that Parse either fails or returns
// registries that containers/image would accept, and that writing them out
// again gives a file that parses to the same registries: nothing an
// operator put in a registry or mirror table is lost or changed on the way.
// It is seeded with every drop-in under testdata.
func FuzzParse(f *testing.F) {
	seeds, _ := filepath.Glob(filepath.Join("testdata", "*", "*.conf"))
	more, _ := filepath.Glob(filepath.Join("testdata", "*", "*", "*.conf"))
	for _, p := range append(seeds, more...) {
		data, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte("[[registry]]\nprefix = \"*.example.com\"\n[[registry.mirror]]\nlocation = \"m/\"\n"))

	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := Parse(data)
		if err != nil {
			return
		}

		for _, r := range got.Registries {
			if r.Prefix == "" || strings.Contains(r.Prefix, "://") ||
				strings.Contains(r.Location, "://") {
				t.Fatalf("accepted registry %+v", r)
			}
			if r.Location == "" && !strings.HasPrefix(r.Prefix, "*.") {
				t.Fatalf("accepted registry without location %+v", r)
			}
			for _, m := range r.Mirrors {
				if m.Location == "" || strings.Contains(m.Location, "://") {
					t.Fatalf("accepted mirror %+v", m)
				}
			}
		}

		out := encode(got.Registries)
		again, err := Parse(out)
		if err != nil {
			t.Fatalf("re-encoded file does not parse: %v\n%s", err, out)
		}
		if diff := cmp.Diff(got.Registries, again.Registries); diff != "" {
			t.Fatalf("registries changed on the way (-first +again):\n%s\n%s", diff, out)
		}
	})
}

// encode writes registries as a drop-in, every key of Registry and Mirror
// spelt out.
func encode(regs []Registry) []byte {
	var b strings.Builder
	for _, r := range regs {
		b.WriteString("[[registry]]\n")
		b.WriteString("prefix = " + quote(r.Prefix) + "\n")
		b.WriteString("location = " + quote(r.Location) + "\n")
		for _, kv := range []struct {
			k string
			v bool
		}{{"insecure", r.Insecure}, {"blocked", r.Blocked},
			{"mirror-by-digest-only", r.MirrorByDigestOnly}} {
			if kv.v {
				b.WriteString(kv.k + " = true\n")
			}
		}
		for _, m := range r.Mirrors {
			b.WriteString("[[registry.mirror]]\nlocation = " + quote(m.Location) + "\n")
			if m.Insecure {
				b.WriteString("insecure = true\n")
			}
			if m.PullFromMirror != "" {
				b.WriteString("pull-from-mirror = " + quote(m.PullFromMirror) + "\n")
			}
		}
	}
	return []byte(b.String())
}

// FuzzRender checks that whatever valid spec it is given, Render writes a
// drop-in that Parse accepts, with the spec's registries and mirrors.
func FuzzRender(f *testing.F) {
	f.Add("docker.io", "https://mirror.gcr.io", "http://10.0.0.9:5000", uint8(3), false)
	f.Add("quay.io", "https://q.example.net/quay", "https://b.example.net", uint8(1), true)
	f.Add("*", "https://m.example.net", "", uint8(2), false)
	f.Add("127.0.0.1:5000", "http://[::1]:5001", "https://Ü.example", uint8(0), true)

	f.Fuzz(func(t *testing.T, host, url1, url2 string, flags uint8, noUpstream bool) {
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
			mirrors = append(mirrors, m)
		}
		s, err := spec.New([]spec.Registry{{Host: host, Mirrors: mirrors,
			NoUpstream: noUpstream, Source: spec.Source{Layer: spec.LayerEnv, Name: host}}})
		if err != nil || len(mirrors) == 0 {
			return
		}

		data, _ := Render(s)
		if data == nil {
			return
		}
		got, err := Parse(data)
		if err != nil {
			t.Fatalf("Render wrote a drop-in Parse refuses: %v\n%s", err, data)
		}
		if len(got.Registries) != 1 {
			t.Fatalf("want one registry, got %+v\n%s", got.Registries, data)
		}
		checkAgainstSpec(t, s, got)
	})
}
