package config

import (
	"log/slog"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/mirrord/mirrord/internal/metadata"
)

// gceValues returns values as the gce provider gives them, with the keys
// that are not empty.
func gceValues(mirrors, config string) *metadata.Values {
	v := &metadata.Values{Provider: metadata.GCE, Mirrors: mirrors, Source: map[string]string{}}
	if mirrors != "" {
		v.Source[metadata.KeyMirrors] = "gce instance attribute mirrord-mirrors"
	}
	if config != "" {
		v.Config = []byte(config)
		v.Source[metadata.KeyConfig] = "gce project attribute mirrord-config"
	}
	return v
}

// TestMetadataLayer checks that metadata is the lowest layer: the TOML of
// mirrord-config is its base, mirrord-mirrors replaces the registries it
// names, and the file, the environment and the flag replace both.
func TestMetadataLayer(t *testing.T) {
	const mdConfig = `
runtimes = ["docker"]

[registries."docker.io"]
mirrors = ["https://md-config-hub.example.net"]

[registries."quay.io"]
mirrors = ["https://md-config-quay.example.net"]

[registries."ghcr.io"]
mirrors = ["https://md-config-ghcr.example.net"]

[registries."gcr.io"]
mirrors = ["https://md-config-gcr.example.net"]
`
	const mdMirrors = "quay.io=https://md-compact-quay.example.net;" +
		"registry.k8s.io=https://md-compact-k8s.example.net"

	tests := []struct {
		name         string
		values       *metadata.Values
		file         string
		env          map[string]string
		flag         string
		want         map[string]string
		wantRuntimes []Runtime
		wantFrom     string
		wantKeys     []MetadataKey
	}{
		{
			name:   "config_base_compact_replaces",
			values: gceValues(mdMirrors, mdConfig),
			want: map[string]string{
				"docker.io":       "https://md-config-hub.example.net (metadata)",
				"quay.io":         "https://md-compact-quay.example.net (metadata)",
				"ghcr.io":         "https://md-config-ghcr.example.net (metadata)",
				"gcr.io":          "https://md-config-gcr.example.net (metadata)",
				"registry.k8s.io": "https://md-compact-k8s.example.net (metadata)",
			},
			wantRuntimes: []Runtime{Docker},
			wantFrom:     "metadata gce project attribute mirrord-config",
			wantKeys: []MetadataKey{
				{Key: "mirrord-config", Source: "gce project attribute mirrord-config",
					Bytes: len(mdConfig), Registries: []string{"docker.io", "gcr.io", "ghcr.io",
						"quay.io"}, Runtimes: true},
				{Key: "mirrord-mirrors", Source: "gce instance attribute mirrord-mirrors",
					Bytes: len(mdMirrors), Registries: []string{"quay.io", "registry.k8s.io"}},
			},
		},
		{
			name:   "higher_layers_override",
			values: gceValues(mdMirrors, mdConfig),
			file: "runtimes = [\"containerd\"]\n[registries.\"docker.io\"]\n" +
				"mirrors = [\"https://file-hub.example.net\"]\n",
			env:  map[string]string{"MIRRORD_MIRRORS": "quay.io=https://env-quay.example.net"},
			flag: "ghcr.io=https://flag-ghcr.example.net",
			want: map[string]string{
				"docker.io":       "https://file-hub.example.net (file)",
				"quay.io":         "https://env-quay.example.net (env)",
				"ghcr.io":         "https://flag-ghcr.example.net (flag)",
				"gcr.io":          "https://md-config-gcr.example.net (metadata)",
				"registry.k8s.io": "https://md-compact-k8s.example.net (metadata)",
			},
			wantRuntimes: []Runtime{Containerd},
			wantFrom:     "file /etc/mirrord/mirrord.toml",
			wantKeys: []MetadataKey{
				{Key: "mirrord-config", Source: "gce project attribute mirrord-config",
					Bytes: len(mdConfig), Registries: []string{"docker.io", "gcr.io", "ghcr.io",
						"quay.io"}, Runtimes: true},
				{Key: "mirrord-mirrors", Source: "gce instance attribute mirrord-mirrors",
					Bytes: len(mdMirrors), Registries: []string{"quay.io", "registry.k8s.io"}},
			},
		},
		{
			name:   "compact_only",
			values: gceValues("*=https://md-all.example.net", ""),
			file:   "[registries.\"docker.io\"]\nmirrors = [\"https://file-hub.example.net\"]\n",
			want: map[string]string{
				"*":         "https://md-all.example.net (metadata)",
				"docker.io": "https://file-hub.example.net (file)",
			},
			wantKeys: []MetadataKey{{Key: "mirrord-mirrors",
				Source: "gce instance attribute mirrord-mirrors", Bytes: 28,
				Registries: []string{"*"}}},
		},
		{
			name:   "no_keys",
			values: &metadata.Values{Provider: metadata.AWS},
			file:   "[registries.\"docker.io\"]\nmirrors = [\"https://file-hub.example.net\"]\n",
			want:   map[string]string{"docker.io": "https://file-hub.example.net (file)"},
		},
		{
			name: "none",
			file: "[registries.\"docker.io\"]\nmirrors = [\"https://file-hub.example.net\"]\n",
			want: map[string]string{"docker.io": "https://file-hub.example.net (file)"},
		},
	}

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clearEnv(t)
			root := t.TempDir()
			if tt.file != "" {
				writeFile(t, filepath.Join(root, "etc/mirrord/mirrord.toml"), tt.file)
			}
			for k, v := range tt.env {
				t.Setenv(k, v)
			}

			c, err := Load(Options{Root: root, Mirrors: tt.flag, Metadata: tt.values})
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, summary(c.Spec)); diff != "" {
				t.Errorf("spec (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantRuntimes, c.Runtimes); diff != "" {
				t.Errorf("runtimes (-want +got):\n%s", diff)
			}
			if c.RuntimesFrom != tt.wantFrom {
				t.Errorf("runtimes from %q, want %q", c.RuntimesFrom, tt.wantFrom)
			}
			if diff := cmp.Diff(tt.wantKeys, c.MetadataKeys); diff != "" {
				t.Errorf("metadata keys (-want +got):\n%s", diff)
			}
			wantProvider := ""
			if tt.wantKeys != nil {
				wantProvider = metadata.GCE
			}
			if c.MetadataProvider != wantProvider {
				t.Errorf("metadata provider %q, want %q", c.MetadataProvider, wantProvider)
			}
		})
	}

	t.Run("source_names_key", func(t *testing.T) {
		clearEnv(t)
		c, err := Load(Options{Root: t.TempDir(), Metadata: gceValues(mdMirrors, mdConfig)})
		if err != nil {
			t.Fatal(err)
		}
		for host, want := range map[string]string{
			"quay.io":   "metadata gce instance attribute mirrord-mirrors",
			"docker.io": "metadata gce project attribute mirrord-config",
		} {
			r, _ := c.Spec.Lookup(host)
			if got := r.Source.String(); got != want {
				t.Errorf("%s source %q, want %q", host, got, want)
			}
		}
	})
}

// TestBadMetadata asserts the exact error for each bad metadata value: it
// names the provider, the key and the value (clipped when long, without
// credentials), then what is wrong and what would be valid.
func TestBadMetadata(t *testing.T) {
	long := "docker.io=https://mirror.example.net;" + strings.Repeat("x", 80) + "=ftp://x"
	tests := []struct {
		name    string
		values  *metadata.Values
		wantErr string
	}{
		{
			name:    "mirrors_scheme",
			values:  gceValues("docker.io=ftp://m.example.net", ""),
			wantErr: `metadata gce instance attribute mirrord-mirrors: value "docker.io=ftp://m.example.net": registry docker.io: mirror "ftp://m.example.net": mirror URL scheme "ftp" is not supported; want http:// or https://`,
		},
		{
			name:    "mirrors_no_equals",
			values:  gceValues("https://m.example.net", ""),
			wantErr: `metadata gce instance attribute mirrord-mirrors: value "https://m.example.net": entry "https://m.example.net" has no '='; want REGISTRY=URL[,URL...]`,
		},
		{
			name:   "mirrors_long_clipped",
			values: gceValues(long, ""),
			wantErr: `metadata gce instance attribute mirrord-mirrors: value ` +
				strconv.Quote(long[:72]) + `... (125 bytes in all): registry ` +
				strings.Repeat("x", 80) + `: mirror "ftp://x": mirror URL scheme "ftp" is ` +
				`not supported; want http:// or https://`,
		},
		{
			name:    "mirrors_credentials_masked",
			values:  gceValues("docker.io=https://robot:s3cret@m.example.net", ""),
			wantErr: `metadata gce instance attribute mirrord-mirrors: value "docker.io=https://xxxxx@m.example.net": registry docker.io: mirror "https://xxxxx@m.example.net": mirror URL carries credentials; put them in the mirror's credentials, never in the URL`,
		},
		{
			name:    "mirrors_credentials_with_space_masked",
			values:  gceValues("docker.io=https://robot:my s3cret@m.example.net", ""),
			wantErr: `metadata gce instance attribute mirrord-mirrors: value "docker.io=https://xxxxx@m.example.net": registry docker.io: mirror "https://xxxxx@m.example.net": mirror URL contains white space; want http(s)://host[:port][/path]`,
		},
		{
			name:    "mirrors_credentials_without_scheme_masked",
			values:  gceValues("docker.io=://robot:s3cret@m.example.net", ""),
			wantErr: `metadata gce instance attribute mirrord-mirrors: value "docker.io=://xxxxx@m.example.net": registry docker.io: mirror "://xxxxx@m.example.net": mirror URL does not parse (missing protocol scheme); want http(s)://host[:port][/path]`,
		},
		{
			name:    "config_credentials_with_quote_masked",
			values:  gceValues("", "[registries.\"quay.io\"]\nmirrors = [\"https://robot:a\\\"s3cret@q\"]\n"),
			wantErr: `metadata gce project attribute mirrord-config: value "[registries.\"quay.io\"]\nmirrors = [\"https://xxxxx@q\"]\n": registries."quay.io": mirrors[0]: "https://xxxxx@q": mirror URL does not parse (net/url: invalid userinfo); want http(s)://host[:port][/path]`,
		},
		{
			name:    "config_syntax",
			values:  gceValues("", "[registries.\"docker.io\"\nmirrors = 1\n"),
			wantErr: `metadata gce project attribute mirrord-config: value "[registries.\"docker.io\"\nmirrors = 1\n": line 1: expected ']' to close table name; want a TOML document in the schema of /etc/mirrord/mirrord.toml`,
		},
		{
			name:    "config_unknown_key",
			values:  gceValues("", "[registries.\"docker.io\"]\nmirorrs = [\"https://m.example.net\"]\n"),
			wantErr: `metadata gce project attribute mirrord-config: value "[registries.\"docker.io\"]\nmirorrs = [\"https://m.example.net\"]\n": line 2: unknown key "registries.docker.io.mirorrs"; valid: runtimes, registries."HOST".mirrors, registries."HOST".upstream, registries."HOST".canary`,
		},
		{
			name:    "config_bad_url",
			values:  gceValues("", "[registries.\"quay.io\"]\nmirrors = [\"quay-mirror\"]\n"),
			wantErr: `metadata gce project attribute mirrord-config: value "[registries.\"quay.io\"]\nmirrors = [\"quay-mirror\"]\n": registries."quay.io": mirrors[0]: "quay-mirror": neither a URL nor a preset; want http(s)://host[:port][/path] or one of the presets google, ecr-public, gitlab:HOST/GROUP, harbor:HOST/PROJECT, artifactory:HOST/REPOSITORY`,
		},
		{
			name:    "config_bad_runtimes",
			values:  gceValues("", "runtimes = [\"runc\"]\n"),
			wantErr: `metadata gce project attribute mirrord-config: value "runtimes = [\"runc\"]\n": runtimes: runtime "runc" is not known; valid: containerd, docker, crio, podman, k3s, rke2`,
		},
		{
			name: "aws_tag",
			values: &metadata.Values{Provider: metadata.AWS, Mirrors: "quay.io=",
				Source: map[string]string{metadata.KeyMirrors: "aws instance tag mirrord-mirrors"}},
			wantErr: `metadata aws instance tag mirrord-mirrors: value "quay.io=": registry quay.io: mirror "": mirror URL is empty; want http(s)://host[:port][/path]`,
		},
		{
			name:    "no_source_given",
			values:  &metadata.Values{Provider: metadata.Azure, Mirrors: "docker.io"},
			wantErr: `metadata azure mirrord-mirrors: value "docker.io": entry "docker.io" has no '='; want REGISTRY=URL[,URL...]`,
		},
	}

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clearEnv(t)
			_, err := Load(Options{Root: t.TempDir(), Metadata: tt.values})
			if err == nil {
				t.Fatal("Load succeeded; want an error")
			}
			if got := err.Error(); got != tt.wantErr {
				t.Errorf("error\n got: %s\nwant: %s", got, tt.wantErr)
			}
			if strings.Contains(err.Error(), "s3cret") {
				t.Errorf("error shows the credentials: %s", err)
			}
		})
	}
}

func TestMetadataOptions(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	tests := []struct {
		name    string
		env     Env
		want    metadata.Options
		wantErr string
	}{
		{
			name: "defaults",
			want: metadata.Options{Provider: "auto", Root: "/node", Log: log},
		},
		{
			name: "all_set",
			env: Env{Metadata: " GCE ", MetadataEndpoint: "http://127.0.0.1:8080/",
				MetadataTimeout: "750ms", MetadataInterval: "5m", MetadataIMDSv1: "true"},
			want: metadata.Options{Provider: "gce", Endpoint: "http://127.0.0.1:8080/",
				Timeout: 750 * time.Millisecond, Interval: 5 * time.Minute, AllowIMDSv1: true,
				Root: "/node", Log: log},
		},
		{
			name: "none",
			env:  Env{Metadata: "none"},
			want: metadata.Options{Provider: "none", Root: "/node", Log: log},
		},
		{
			name:    "unknown_provider",
			env:     Env{Metadata: "digitalocean"},
			wantErr: `env MIRRORD_METADATA: "digitalocean": unknown provider; valid: auto, none, gce, yandex, aws, azure, openstack, cloud-init`,
		},
		{
			name:    "endpoint_scheme",
			env:     Env{MetadataEndpoint: "ftp://127.0.0.1"},
			wantErr: `env MIRRORD_METADATA_ENDPOINT: endpoint "ftp://127.0.0.1": scheme "ftp" is not http or https; want scheme://host[:port] with scheme http or https, e.g. http://127.0.0.1:8080`,
		},
		{
			name:    "endpoint_path",
			env:     Env{MetadataEndpoint: "http://127.0.0.1/computeMetadata/v1"},
			wantErr: `env MIRRORD_METADATA_ENDPOINT: endpoint "http://127.0.0.1/computeMetadata/v1": path "/computeMetadata/v1" is not allowed; want scheme://host[:port] with scheme http or https, e.g. http://127.0.0.1:8080`,
		},
		{
			name:    "timeout_no_unit",
			env:     Env{MetadataTimeout: "2"},
			wantErr: `env MIRRORD_METADATA_TIMEOUT: "2": want a positive Go duration such as 2s or 500ms`,
		},
		{
			name:    "timeout_zero",
			env:     Env{MetadataTimeout: "0s"},
			wantErr: `env MIRRORD_METADATA_TIMEOUT: "0s": want a positive Go duration such as 2s or 500ms`,
		},
		{
			name:    "interval_negative",
			env:     Env{MetadataInterval: "-1m"},
			wantErr: `env MIRRORD_METADATA_INTERVAL: "-1m": want a positive Go duration such as 60s or 5m`,
		},
		{
			name:    "imdsv1_not_boolean",
			env:     Env{MetadataIMDSv1: "allow"},
			wantErr: `env MIRRORD_METADATA_IMDSV1: "allow": want true or false`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := MetadataOptions(tt.env, "/node", log)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("error\n got: %v\nwant: %s", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got, cmp.Comparer(func(a, b *slog.Logger) bool {
				return a == b
			}), cmp.AllowUnexported(metadata.Options{})); diff != "" {
				t.Errorf("options (-want +got):\n%s", diff)
			}
		})
	}
}

func TestReadEnvMetadata(t *testing.T) {
	clearEnv(t)
	t.Setenv("MIRRORD_METADATA", "aws")
	t.Setenv("MIRRORD_METADATA_ENDPOINT", "http://127.0.0.1:9")
	t.Setenv("MIRRORD_METADATA_TIMEOUT", "5s")
	e, err := ReadEnv()
	if err != nil {
		t.Fatal(err)
	}
	want := Env{Metadata: "aws", MetadataEndpoint: "http://127.0.0.1:9", MetadataTimeout: "5s"}
	if diff := cmp.Diff(want, e); diff != "" {
		t.Errorf("env (-want +got):\n%s", diff)
	}
}
