package docker

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/mirrord/mirrord/internal/spec"
)

func TestDesired(t *testing.T) {
	v20, v24, v25 := Version{20, 10}, Version{24, 0}, Version{25, 0}
	tests := []struct {
		name     string
		compact  string
		edit     func(*spec.Spec)
		v        Version
		want     Settings
		warnings []string
	}{
		{
			name:    "no_hub",
			compact: "quay.io=https://quay-mirror.example.net",
			v:       v20,
		},
		{
			name: "hub_in_order",
			compact: "docker.io=https://a.example.net,https://b.example.net;" +
				"quay.io=https://q.example.net",
			v:    v20,
			want: Settings{Mirrors: []string{"https://a.example.net", "https://b.example.net"}},
		},
		{
			name:    "http_mirrors_insecure_once",
			compact: "docker.io=http://10.0.0.7:5000,https://a.example.net,http://10.0.0.7:5000/x",
			v:       v25,
			want: Settings{
				Mirrors: []string{"http://10.0.0.7:5000", "https://a.example.net",
					"http://10.0.0.7:5000/x"},
				Insecure: []string{"10.0.0.7:5000"},
			},
		},
		{
			name:    "wildcard_applies_to_hub",
			compact: "*=https://all.example.net;quay.io=https://q.example.net",
			v:       v20,
			want:    Settings{Mirrors: []string{"https://all.example.net"}},
		},
		{
			name:    "hub_list_beats_wildcard",
			compact: "*=https://all.example.net;docker.io=https://hub.example.net",
			v:       v20,
			want:    Settings{Mirrors: []string{"https://hub.example.net"}},
		},
		{
			name: "untrusted_credentials_prefix_left_out",
			compact: "docker.io=https://u.example.net,https://c.example.net," +
				"https://h.example.net/v2/hub-proxy,https://a.example.net",
			edit: func(s *spec.Spec) {
				ms := s.Registries[0].Mirrors
				ms[0].Untrusted, ms[0].Capabilities = true, []spec.Capability{spec.Pull}
				ms[1].Auth = &spec.Auth{Username: "u", Password: spec.NewSecret("p"),
					Key: spec.KeyPasswordEnv, Name: "P"}
			},
			v:    v25,
			want: Settings{Mirrors: []string{"https://a.example.net"}},
			warnings: []string{
				"docker.io mirror https://u.example.net left out of daemon.json: it is untrusted (trusted = false), and dockerd would resolve tags on it",
				"docker.io mirror https://c.example.net left out of daemon.json: it needs credentials, which daemon.json cannot carry",
				"docker.io mirror https://h.example.net/v2/hub-proxy left out of daemon.json: it serves a repository prefix (/v2/hub-proxy), which dockerd cannot use as a mirror",
			},
		},
		{
			name:    "path_mirror_v25",
			compact: "docker.io=https://cr.example.net/mirror,https://a.example.net",
			v:       v25,
			want: Settings{Mirrors: []string{"https://cr.example.net/mirror",
				"https://a.example.net"}},
		},
		{
			name: "path_mirror_v24",
			compact: "docker.io=https://cr.example.net/mirror,http://10.0.0.7:5000/hub," +
				"https://a.example.net",
			v:    v24,
			want: Settings{Mirrors: []string{"https://a.example.net"}},
			warnings: []string{
				"docker.io mirror https://cr.example.net/mirror left out of daemon.json: it has a " +
					"path, which needs dockerd 25.0 or later, and dockerd is 24.0",
				"docker.io mirror http://10.0.0.7:5000/hub left out of daemon.json: it has a " +
					"path, which needs dockerd 25.0 or later, and dockerd is 24.0",
			},
		},
		{
			name:    "path_mirror_unknown_version",
			compact: "*=https://cr.example.net/mirror",
			want:    Settings{},
			warnings: []string{
				"docker.io (from *) mirror https://cr.example.net/mirror left out of daemon.json: " +
					"it has a path, which needs dockerd 25.0 or later, and the dockerd version " +
					"is unknown",
			},
		},
		{
			name:    "inexpressible_options",
			compact: "docker.io=https://a.example.net",
			edit: func(s *spec.Spec) {
				r := &s.Registries[0]
				r.NoUpstream = true
				r.Mirrors[0].Capabilities = []spec.Capability{spec.Pull}
				r.Mirrors[0].CAFile = "/etc/ssl/mirror.pem"
				r.Mirrors[0].SkipVerify = true
			},
			v:    v25,
			want: Settings{Mirrors: []string{"https://a.example.net"}},
			warnings: []string{
				"docker.io mirror https://a.example.net: capabilities [pull] cannot be expressed " +
					"in daemon.json; dockerd uses a mirror for tags and content alike",
				"docker.io mirror https://a.example.net: ca_file cannot be expressed in " +
					"daemon.json; dockerd reads CA files from /etc/docker/certs.d/a.example.net/",
				"docker.io mirror https://a.example.net: skip_verify cannot be expressed in " +
					"daemon.json; dockerd verifies the mirror's certificate unless " +
					"a.example.net is in insecure-registries",
				"docker.io: no_upstream cannot be expressed in daemon.json; dockerd still falls " +
					"back to Docker Hub when every mirror fails",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := spec.ParseCompact(tt.compact, spec.Source{Layer: spec.LayerEnv})
			if err != nil {
				t.Fatal(err)
			}
			if tt.edit != nil {
				tt.edit(&s)
			}

			got, warnings := Desired(s, tt.v)
			if diff := cmp.Diff(tt.want, got, cmpEmpty); diff != "" {
				t.Errorf("settings (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.warnings, warnings, cmpEmpty); diff != "" {
				t.Errorf("warnings (-want +got):\n%s", diff)
			}
		})
	}
}

func TestVersion(t *testing.T) {
	tests := []struct {
		v       Version
		str     string
		atLeast bool // 25.0
	}{
		{Version{}, "unknown", false},
		{Version{20, 10}, "20.10", false},
		{Version{24, 9}, "24.9", false},
		{Version{25, 0}, "25.0", true},
		{Version{28, 3}, "28.3", true},
	}
	for _, tt := range tests {
		t.Run(tt.str, func(t *testing.T) {
			if got := tt.v.String(); got != tt.str {
				t.Errorf("String() = %q, want %q", got, tt.str)
			}
			if got := tt.v.AtLeast(pathMirrorsSince); got != tt.atLeast {
				t.Errorf("AtLeast(25.0) = %v, want %v", got, tt.atLeast)
			}
		})
	}
}
