package spec

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestValidateMirrorURL(t *testing.T) {
	tests := []struct {
		in, want, wantErr string
	}{
		{in: "https://Mirror.Example.NET/", want: "https://mirror.example.net"},
		{in: "http://10.0.0.5:5000", want: "http://10.0.0.5:5000"},
		{in: "https://[fd00::5]:5000/hub/", want: "https://[fd00::5]:5000/hub"},
		{in: "https://m.example.net/a/b", want: "https://m.example.net/a/b"},
		{in: "https://m.example.net/./a//b/../hub/", want: "https://m.example.net/a/hub"},
		{in: "https://m.example.net/%2e/hub%20x/.", want: "https://m.example.net/hub%20x"},
		{in: "http://0/.", want: "http://0"},
		{in: "https://m.example.net/v2/x/..", wantErr: "mirror URL path ends in /v2"},
		{in: "ftp://m.example.net", wantErr: `mirror URL scheme "ftp" is not supported`},
		{in: "m.example.net", wantErr: `mirror URL scheme "" is not supported`},
		{in: "https://", wantErr: "mirror URL has no host"},
		{in: "https://user@m.example.net", wantErr: "mirror URL carries credentials"},
		{in: "https://m.example.net?", wantErr: "mirror URL has a query"},
		{in: "https://m.example.net/#", wantErr: "mirror URL has a fragment"},
		{in: "https://m.example.net/v2/", wantErr: "mirror URL path ends in /v2"},
		{in: "https://m.example.net/hub/v2", wantErr: "mirror URL path ends in /v2"},
		{in: "https://m.example.net/v2/hub-proxy/", want: "https://m.example.net/v2/hub-proxy"},
		{in: "https://m.example.net/hub/v2/x", wantErr: "mirror URL path /hub/v2/x would yield a doubled /v2"},
		{in: "https://m.example.net/v2/a/v2", wantErr: "mirror URL path /v2/a/v2 would yield a doubled /v2"},
		{in: "https://m.example.net/v2/v2", wantErr: "mirror URL path /v2/v2 would yield a doubled /v2"},
		{in: "https://m.example.net/ hub", wantErr: "mirror URL contains white space"},
		{in: "https://m.example.net:port", wantErr: "mirror URL does not parse"},
		{in: "", wantErr: "mirror URL is empty"},
	}
	for _, tt := range tests {
		t.Run(strings.NewReplacer("/", "_", " ", "_").Replace(tt.in), func(t *testing.T) {
			got, err := ValidateMirrorURL(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.HasPrefix(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want prefix %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("got %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestMirrorParts(t *testing.T) {
	m := Mirror{URL: "https://m.example.net:8443/hub/x"}
	if m.Scheme() != "https" || m.Host() != "m.example.net:8443" || m.Path() != "/hub/x" {
		t.Errorf("parts = %q %q %q", m.Scheme(), m.Host(), m.Path())
	}
	if p := (Mirror{URL: "http://m"}).Path(); p != "" {
		t.Errorf("root mirror path = %q", p)
	}
}

func TestMirrorAPI(t *testing.T) {
	for url, want := range map[string][2]string{
		"https://m.example.net":                  {"", "https://m.example.net/v2"},
		"https://m.example.net/hub":              {"", "https://m.example.net/hub/v2"},
		"https://m.example.net/v2/group/dp/cont": {"group/dp/cont", "https://m.example.net/v2/group/dp/cont"},
	} {
		m := Mirror{URL: url}
		if m.Prefix() != want[0] || m.API() != want[1] {
			t.Errorf("%s: Prefix %q API %q, want %q %q", url, m.Prefix(), m.API(), want[0], want[1])
		}
	}
}

func TestNormalizeHost(t *testing.T) {
	for in, want := range map[string]string{
		"Docker.IO": "docker.io", "index.docker.io": "docker.io",
		"registry-1.docker.io": "docker.io", "*": "*", "10.0.0.5:5000": "10.0.0.5:5000",
		" quay.io ": "quay.io",
	} {
		if got, err := NormalizeHost(in); err != nil || got != want {
			t.Errorf("NormalizeHost(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := NormalizeHost(strings.Repeat("a", 253)); err != nil {
		t.Errorf("NormalizeHost of 253 bytes: %v", err)
	}
	for _, bad := range []string{"", "quay.io/ns", "https://quay.io", "a b", "*.example.net",
		strings.Repeat("a", 250) + ":5000", strings.Repeat("\x80", 90)} {
		if _, err := NormalizeHost(bad); err == nil {
			t.Errorf("NormalizeHost(%q) succeeded", bad)
		}
	}
}

func TestOverlayReplacesWholeList(t *testing.T) {
	low, err := ParseCompact("docker.io=https://a.example.net,https://b.example.net;"+
		"quay.io=https://q.example.net", Source{Layer: LayerFile})
	if err != nil {
		t.Fatal(err)
	}
	high, err := ParseCompact("docker.io=https://c.example.net;*=https://all.example.net",
		Source{Layer: LayerEnv})
	if err != nil {
		t.Fatal(err)
	}

	got := low.Overlay(high)
	var summary []string
	for _, r := range got.Registries {
		summary = append(summary, r.Host+" "+string(r.Source.Layer)+" "+r.Mirrors[0].URL+
			" "+strings.Repeat("+", len(r.Mirrors)-1))
	}
	want := []string{
		"* env https://all.example.net ",
		"docker.io env https://c.example.net ",
		"quay.io file https://q.example.net ",
	}
	if diff := cmp.Diff(want, summary); diff != "" {
		t.Errorf("overlay (-want +got):\n%s", diff)
	}

	if r, ok := got.Effective("ghcr.io"); !ok || r.Host != Wildcard {
		t.Errorf("Effective(ghcr.io) = %v, %v; want the wildcard", r.Host, ok)
	}
}

func TestParseCompactSeparators(t *testing.T) {
	s, err := ParseCompact("\n docker.io = https://a.example.net , https://b.example.net ;;\n"+
		"quay.io=https://q.example.net\n", Source{Layer: LayerEnv})
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Registries) != 2 || len(s.Registries[0].Mirrors) != 2 {
		t.Errorf("parsed %+v", s)
	}
}

// FuzzParseCompact checks that a parse either fails or yields a spec whose
// every host and URL passes validation again unchanged.
func FuzzParseCompact(f *testing.F) {
	for _, seed := range []string{
		"docker.io=https://a.example.net",
		"docker.io=https://a.example.net,http://10.0.0.5:5000/x;quay.io=https://q",
		"*=https://all.example.net\nghcr.io=https://g.example.net/",
		"=;;=,",
		"docker.io=https://u:p@x",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, text string) {
		s, err := ParseCompact(text, Source{Layer: LayerEnv})
		if err != nil {
			return
		}
		for _, r := range s.Registries {
			if h, err := NormalizeHost(r.Host); err != nil || h != r.Host {
				t.Fatalf("host %q does not normalise to itself: %q, %v", r.Host, h, err)
			}
			if len(r.Mirrors) == 0 {
				t.Fatalf("registry %q without mirrors", r.Host)
			}
			for _, m := range r.Mirrors {
				if u, err := ValidateMirrorURL(m.URL); err != nil || u != m.URL {
					t.Fatalf("mirror %q does not validate to itself: %q, %v", m.URL, u, err)
				}
			}
		}
	})
}
