package containerd

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/mirrord/mirrord/internal/containerd/hoststest"
	"github.com/mirrord/mirrord/internal/golden"
	"github.com/mirrord/mirrord/internal/spec"
	"github.com/mirrord/mirrord/internal/spec/spectest"
)

func TestRenderHosts(t *testing.T) {
	env := spec.Source{Layer: spec.LayerEnv, Name: "MIRRORD_MIRRORS"}
	file := spec.Source{Layer: spec.LayerFile, Name: "/etc/mirrord/mirrord.toml"}
	withCA := spectest.Mirror(t, "https://cache.internal.example:8443")
	withCA.CAFile = "/etc/mirrord/ca/internal.pem"
	insecure := spectest.Mirror(t, "https://10.0.0.5:5000")
	insecure.SkipVerify = true
	withAuth := spectest.Mirror(t, "https://gitlab.example.net/v2/platform/dependency_proxy/containers")
	withAuth.Auth = &spec.Auth{Username: "robot", Password: spec.NewSecret("glpat-s3cret"),
		Key: spec.KeyPasswordFile, Name: "/etc/mirrord/secrets/gitlab"}
	serverAuth := spectest.Mirror(t, "https://quay-b.example.net")
	serverAuth.Auth = &spec.Auth{Username: "bot", Password: spec.NewSecret("t0ken"),
		Key: spec.KeyPasswordEnv, Name: "QUAY_TOKEN"}

	tests := []struct {
		name        string
		reg         spec.Registry
		wantServer  string
		wantMirrors []string
	}{{
		name: "plain",
		reg: spec.Registry{Host: "docker.io", Source: env, Mirrors: []spec.Mirror{
			spectest.Mirror(t, "https://mirror.gcr.io"), spectest.Mirror(t, "http://10.0.0.9:5000")}},
		wantServer:  "https://registry-1.docker.io",
		wantMirrors: []string{"https://mirror.gcr.io", "http://10.0.0.9:5000"},
	}, {
		name: "path_mirror",
		reg: spec.Registry{Host: "docker.io", Source: env, Mirrors: []spec.Mirror{
			spectest.Mirror(t, "https://cr.example.net/mirror/dockerhub"), spectest.Mirror(t, "https://mirror.gcr.io")}},
		wantServer:  "https://registry-1.docker.io",
		wantMirrors: []string{"https://cr.example.net/mirror/dockerhub", "https://mirror.gcr.io"},
	}, {
		name: "wildcard",
		reg: spec.Registry{Host: spec.Wildcard, Source: file, Mirrors: []spec.Mirror{
			spectest.Mirror(t, "https://pull-through.example.net")}},
		wantMirrors: []string{"https://pull-through.example.net"},
	}, {
		name: "no_upstream",
		reg: spec.Registry{Host: "quay.io", Source: file, NoUpstream: true, Mirrors: []spec.Mirror{
			spectest.Mirror(t, "https://quay-a.example.net"), spectest.Mirror(t, "https://quay-b.example.net/quay")}},
		wantServer:  "https://quay-b.example.net/quay",
		wantMirrors: []string{"https://quay-a.example.net"},
	}, {
		name: "ca_and_skip_verify",
		reg: spec.Registry{Host: "registry.k8s.io", Source: file,
			Mirrors: []spec.Mirror{withCA, insecure}},
		wantServer:  "https://registry.k8s.io",
		wantMirrors: []string{"https://cache.internal.example:8443", "https://10.0.0.5:5000"},
	}, {
		name: "pull_only",
		reg: spec.Registry{Host: "ghcr.io", Source: env, Mirrors: []spec.Mirror{
			spectest.Mirror(t, "https://ghcr-cache.example.net", spec.Pull)}},
		wantServer:  "https://ghcr.io",
		wantMirrors: []string{"https://ghcr-cache.example.net"},
	}, {
		name: "prefix_mirror",
		reg: spec.Registry{Host: "docker.io", Source: file, Mirrors: []spec.Mirror{
			spectest.Mirror(t, "https://harbor.example.net/v2/hub-proxy"),
			spectest.Mirror(t, "https://nexus.example.net/repository/hub")}},
		wantServer: "https://registry-1.docker.io",
		wantMirrors: []string{"https://harbor.example.net/v2/hub-proxy",
			"https://nexus.example.net/repository/hub"},
	}, {
		name: "credentials",
		reg: spec.Registry{Host: "docker.io", Source: file, Mirrors: []spec.Mirror{
			withAuth, spectest.Mirror(t, "https://mirror.gcr.io")}},
		wantServer: "https://registry-1.docker.io",
		wantMirrors: []string{"https://gitlab.example.net/v2/platform/dependency_proxy/containers",
			"https://mirror.gcr.io"},
	}, {
		name: "credentials_server",
		reg: spec.Registry{Host: "quay.io", Source: file, NoUpstream: true, Mirrors: []spec.Mirror{
			spectest.Mirror(t, "https://quay-a.example.net"), serverAuth}},
		wantServer:  "https://quay-b.example.net",
		wantMirrors: []string{"https://quay-a.example.net"},
	}, {
		name: "port_host_odd_source",
		reg: spec.Registry{Host: "127.0.0.1:5000",
			Source:  spec.Source{Layer: spec.LayerFlag, Name: "--mirror\nx"},
			Mirrors: []spec.Mirror{spectest.Mirror(t, "http://127.0.0.1:5001")}},
		wantMirrors: []string{"http://127.0.0.1:5001"},
	}, {
		name: "source_not_utf8",
		reg: spec.Registry{Host: "docker.io",
			Source:  spec.Source{Layer: spec.LayerFile, Name: "/etc/mirrord/conf.d/\x80\x01.toml"},
			Mirrors: []spec.Mirror{spectest.Mirror(t, "https://mirror.gcr.io")}},
		wantServer:  "https://registry-1.docker.io",
		wantMirrors: []string{"https://mirror.gcr.io"},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := RenderHosts(tt.reg)
			golden.Check(t, filepath.Join("testdata/hosts", tt.name+".toml"), got)

			hoststest.Check(t, tt.name, got)
			if bytes.Contains(got, []byte("referrers")) || bytes.Contains(got, []byte("dial_timeout")) {
				t.Errorf("file names referrers or dial_timeout:\n%s", got)
			}

			hf, err := ParseHosts(got)
			if err != nil {
				t.Fatalf("ParseHosts: %v", err)
			}
			want := HostsFile{Server: tt.wantServer, Mirrors: tt.wantMirrors, Managed: true}
			if diff := cmp.Diff(want, hf); diff != "" {
				t.Errorf("ParseHosts(RenderHosts) (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseHosts(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    HostsFile
		wantErr string
	}{{
		name: "containerd_docs_style",
		in: "server = \"https://registry-1.docker.io\"\n\n" +
			"[host.\"https://mirror-b.example\"]\n  capabilities = [\"pull\"]\n" +
			"[host.\"https://mirror-a.example/v2/\"]\n  capabilities = [\"pull\", \"resolve\"]\n" +
			"[host.\"https://mirror-a.example/v2/\".header]\n  x-foo = \"bar\"\n",
		want: HostsFile{Server: "https://registry-1.docker.io",
			Mirrors: []string{"https://mirror-b.example", "https://mirror-a.example"}},
	}, {
		name: "override_path_kept_as_written",
		in: "[host.\"http://m.example/v2/dockerhub\"]\n  override_path = true\n" +
			"[host.\"http://m.example/proxy/v2\"]\n  override_path = true\n",
		want: HostsFile{Mirrors: []string{"http://m.example/v2/dockerhub", "http://m.example/proxy"}},
	}, {
		name: "inline_hosts_ignored_like_containerd",
		in:   "server = \"quay.io\"\nhost = { \"https://q.example\" = { capabilities = [\"pull\"] } }\n",
		want: HostsFile{Server: "quay.io"},
	}, {
		name: "managed_header",
		in: managedMarker + ": written from env X; edits are overwritten.\n" +
			"server = \"https://ghcr.io\"\n",
		want: HostsFile{Server: "https://ghcr.io", Managed: true},
	}, {
		name: "empty",
		in:   "",
		want: HostsFile{},
	}, {
		name:    "not_toml",
		in:      "server = \"https://a\"\n[host.\"https://b\"\n",
		wantErr: "parse hosts.toml: line 2: expected ']' to close table name",
	}, {
		name: "value_too_large_elsewhere",
		in: "server = \"https://r.example\"\nx = 10000000000000000000\n" +
			"[host.\"https://m.example\"]\n  y = 10000000000000000000\n",
		want: HostsFile{Server: "https://r.example", Mirrors: []string{"https://m.example"}},
	}, {
		name:    "server_not_a_string",
		in:      "server = 1\n",
		wantErr: "parse hosts.toml: server is an integer; want a URL string",
	}, {
		name:    "host_not_a_table",
		in:      "host = \"x\"\n",
		wantErr: "parse hosts.toml: host is a string; want a table",
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseHosts([]byte(tt.in))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseHosts error = %v; want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseHosts: %v", err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("ParseHosts (-want +got):\n%s", diff)
			}
		})
	}
}

func TestHostDir(t *testing.T) {
	for host, want := range map[string]string{
		"docker.io":      "docker.io",
		"127.0.0.1:5000": "127.0.0.1:5000",
		spec.Wildcard:    "_default",
	} {
		if got := HostDir(host); got != want {
			t.Errorf("HostDir(%q) = %q; want %q", host, got, want)
		}
	}
}
