package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/mirrord/mirrord/internal/spec"
)

// clearEnv unsets every MIRRORD_* variable for the test.
func clearEnv(t *testing.T) {
	t.Helper()
	for _, kv := range os.Environ() {
		if name, _, _ := strings.Cut(kv, "="); strings.HasPrefix(name, "MIRRORD_") {
			t.Setenv(name, "")
			os.Unsetenv(name)
		}
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// summary renders a spec as host -> "url,url (source)" for compact asserts.
func summary(s spec.Spec) map[string]string {
	out := map[string]string{}
	for _, r := range s.Registries {
		var urls []string
		for _, m := range r.Mirrors {
			urls = append(urls, m.URL)
		}
		out[r.Host] = strings.Join(urls, ",") + " (" + string(r.Source.Layer) + ")"
	}
	return out
}

func TestLayers(t *testing.T) {
	clearEnv(t)
	root := t.TempDir()
	writeFile(t, filepath.Join(root, "etc/mirrord/mirrord.toml"), `
runtimes = ["docker"]

[registries."docker.io"]
mirrors = ["https://file-hub.example.net"]

[registries."quay.io"]
mirrors = [{ url = "https://file-quay.example.net/", capabilities = ["pull"] }]

[registries."ghcr.io"]
upstream = false
mirrors = ["https://file-ghcr.example.net"]
`)
	writeFile(t, filepath.Join(root, "etc/mirrord/conf.d/10-quay.toml"), `
[registries."quay.io"]
mirrors = ["https://dropin-quay.example.net"]
`)
	t.Setenv("MIRRORD_MIRRORS", "docker.io=https://env-hub.example.net,http://10.0.0.5:5000")
	t.Setenv("MIRRORD_RUNTIMES", "containerd, docker")

	c, err := Load(Options{Root: root, Mirrors: "ghcr.io=https://flag-ghcr.example.net"})
	if err != nil {
		t.Fatal(err)
	}

	want := map[string]string{
		"docker.io": "https://env-hub.example.net,http://10.0.0.5:5000 (env)",
		"quay.io":   "https://dropin-quay.example.net (file)",
		"ghcr.io":   "https://flag-ghcr.example.net (flag)",
	}
	if diff := cmp.Diff(want, summary(c.Spec)); diff != "" {
		t.Errorf("spec (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]Runtime{Containerd, Docker}, c.Runtimes); diff != "" {
		t.Errorf("runtimes (-want +got):\n%s", diff)
	}
	quay, _ := c.Spec.Lookup("quay.io")
	if got := quay.Source.Name; got != "/etc/mirrord/conf.d/10-quay.toml" {
		t.Errorf("quay.io source = %q, want the drop-in", got)
	}
}

func TestFileOptions(t *testing.T) {
	f, err := ParseFile([]byte(`
[registries."Index.Docker.IO"]
upstream = false
mirrors = [
  "https://a.example.net/hub/",
  { url = "https://b.example.net", capabilities = ["resolve", "pull"], ca_file = "/etc/ssl/b.pem", skip_verify = true },
]
`), "test.toml")
	if err != nil {
		t.Fatal(err)
	}

	want := spec.Spec{Registries: []spec.Registry{{
		Host:       "docker.io",
		NoUpstream: true,
		Source:     spec.Source{Layer: spec.LayerFile, Name: "test.toml"},
		Mirrors: []spec.Mirror{
			{URL: "https://a.example.net/hub", Capabilities: []spec.Capability{spec.Pull,
				spec.Resolve}},
			{URL: "https://b.example.net", Capabilities: []spec.Capability{spec.Pull,
				spec.Resolve}, CAFile: "/etc/ssl/b.pem", SkipVerify: true},
		},
	}}}
	if diff := cmp.Diff(want, f.Spec); diff != "" {
		t.Errorf("spec (-want +got):\n%s", diff)
	}
}

// TestBadInput asserts the exact error for each bad input of each source:
// it must name the source, the key and the value, and say what is valid.
func TestBadInput(t *testing.T) {
	tests := []struct {
		name   string
		file   string
		dropin string
		env    map[string]string
		flag   string
		// secrets are files written under the root before Load.
		secrets map[string]string
		wantErr string
	}{
		{
			name:    "env_ftp_scheme",
			env:     map[string]string{"MIRRORD_MIRRORS": "docker.io=ftp://m.example.net"},
			wantErr: `env MIRRORD_MIRRORS: registry docker.io: mirror "ftp://m.example.net": mirror URL scheme "ftp" is not supported; want http:// or https://`,
		},
		{
			name:    "env_credentials_in_url",
			env:     map[string]string{"MIRRORD_MIRRORS": "docker.io=https://u:p@m.example.net"},
			wantErr: `env MIRRORD_MIRRORS: registry docker.io: mirror "https://xxxxx@m.example.net": mirror URL carries credentials; put them in the mirror's credentials, never in the URL`,
		},
		{
			name:    "flag_credentials_in_url",
			flag:    "quay.io=https://robot:s3cret@q.example.net",
			wantErr: `flag --mirrors: registry quay.io: mirror "https://xxxxx@q.example.net": mirror URL carries credentials; put them in the mirror's credentials, never in the URL`,
		},
		{
			name:    "file_credentials_in_url",
			file:    "[registries.\"quay.io\"]\nmirrors = [\"https://robot:s3cret@q.example.net\"]\n",
			wantErr: `file /etc/mirrord/mirrord.toml: registries."quay.io": mirrors[0]: "https://xxxxx@q.example.net": mirror URL carries credentials; put them in the mirror's credentials, never in the URL`,
		},
		{
			name:    "env_query",
			env:     map[string]string{"MIRRORD_MIRRORS": "docker.io=https://m.example.net/?x=1"},
			wantErr: `env MIRRORD_MIRRORS: registry docker.io: mirror "https://m.example.net/?x=1": mirror URL has a query; want http(s)://host[:port][/path] without ?`,
		},
		{
			name:    "env_fragment",
			env:     map[string]string{"MIRRORD_MIRRORS": "docker.io=https://m.example.net/#x"},
			wantErr: `env MIRRORD_MIRRORS: registry docker.io: mirror "https://m.example.net/#x": mirror URL has a fragment; want http(s)://host[:port][/path] without #`,
		},
		{
			name:    "env_empty_registry",
			env:     map[string]string{"MIRRORD_MIRRORS": "=https://m.example.net"},
			wantErr: `env MIRRORD_MIRRORS: entry "=https://m.example.net": registry name is empty; want a host such as docker.io, a host:port, or * for every registry`,
		},
		{
			name:    "env_duplicate_registry",
			env:     map[string]string{"MIRRORD_MIRRORS": "docker.io=https://a.example.net;index.docker.io=https://b.example.net"},
			wantErr: `env MIRRORD_MIRRORS: registry "docker.io" given twice (also in env MIRRORD_MIRRORS); name each registry once`,
		},
		{
			name:    "env_no_equals",
			env:     map[string]string{"MIRRORD_MIRRORS": "docker.io https://a.example.net"},
			wantErr: `env MIRRORD_MIRRORS: entry "docker.io https://a.example.net" has no '='; want REGISTRY=URL[,URL...]`,
		},
		{
			name:    "env_empty_mirror",
			env:     map[string]string{"MIRRORD_MIRRORS": "docker.io="},
			wantErr: `env MIRRORD_MIRRORS: registry docker.io: mirror "": mirror URL is empty; want http(s)://host[:port][/path]`,
		},
		{
			name:    "env_v2_path",
			env:     map[string]string{"MIRRORD_MIRRORS": "docker.io=https://m.example.net/v2"},
			wantErr: `env MIRRORD_MIRRORS: registry docker.io: mirror "https://m.example.net/v2": mirror URL path ends in /v2; give the registry root (mirrord and the runtimes add /v2 themselves)`,
		},
		{
			name:    "env_registry_with_scheme",
			env:     map[string]string{"MIRRORD_MIRRORS": "https://docker.io=https://m.example.net"},
			wantErr: `env MIRRORD_MIRRORS: entry "https://docker.io=https://m.example.net": registry "https://docker.io" has a scheme; want a bare host such as quay.io`,
		},
		{
			name:    "env_unknown_runtime",
			env:     map[string]string{"MIRRORD_RUNTIMES": "containerd,cri-o"},
			wantErr: `env MIRRORD_RUNTIMES: runtime "cri-o" is not known; valid: containerd, docker, crio, podman, k3s, rke2`,
		},
		{
			name:    "flag_bad_url",
			flag:    "quay.io=quay-mirror",
			wantErr: `flag --mirrors: registry quay.io: mirror "quay-mirror": neither a URL nor a preset; want http(s)://host[:port][/path] or one of the presets google, ecr-public, gitlab:HOST/GROUP, harbor:HOST/PROJECT, artifactory:HOST/REPOSITORY`,
		},
		{
			name:    "file_syntax",
			file:    "[registries.\"docker.io\"\nmirrors = 1\n",
			wantErr: `file /etc/mirrord/mirrord.toml: line 1: expected ']' to close table name`,
		},
		{
			name:    "file_unknown_key",
			file:    "[registries.\"docker.io\"]\nmirorrs = [\"https://m.example.net\"]\n",
			wantErr: `file /etc/mirrord/mirrord.toml: line 2: unknown key "registries.docker.io.mirorrs"; valid: runtimes, registries."HOST".mirrors, registries."HOST".upstream, registries."HOST".canary`,
		},
		{
			name: "file_key_case",
			file: "[registries.\"docker.io\"]\nmirrors = [\"https://a.example.net\"]\n" +
				"[Registries.\"docker.io\"]\nmirrors = [\"https://b.example.net\"]\n",
			wantErr: `file /etc/mirrord/mirrord.toml: unknown key "Registries" (keys are case-sensitive); valid: runtimes, registries."HOST".mirrors, registries."HOST".upstream, registries."HOST".canary`,
		},
		{
			name:    "file_key_case_in_registry",
			file:    "[registries.\"docker.io\"]\nMirrors = [\"https://a.example.net\"]\n",
			wantErr: `file /etc/mirrord/mirrord.toml: unknown key "registries.docker.io.Mirrors" (keys are case-sensitive); valid: runtimes, registries."HOST".mirrors, registries."HOST".upstream, registries."HOST".canary`,
		},
		{
			name:    "file_bad_url",
			file:    "[registries.\"docker.io\"]\nmirrors = [\"https://m.example.net?a=b\"]\n",
			wantErr: `file /etc/mirrord/mirrord.toml: registries."docker.io": mirrors[0]: "https://m.example.net?a=b": mirror URL has a query; want http(s)://host[:port][/path] without ?`,
		},
		{
			name:    "file_no_mirrors",
			file:    "[registries.\"quay.io\"]\nmirrors = []\n",
			wantErr: `file /etc/mirrord/mirrord.toml: registries."quay.io": registry quay.io has no mirrors; give at least one URL`,
		},
		{
			name:    "file_duplicate_registry",
			file:    "[registries.\"docker.io\"]\nmirrors = [\"https://a.example.net\"]\n[registries.\"registry-1.docker.io\"]\nmirrors = [\"https://b.example.net\"]\n",
			wantErr: `file /etc/mirrord/mirrord.toml: registries: registry "docker.io" given twice (also in file /etc/mirrord/mirrord.toml); name each registry once`,
		},
		{
			name:    "file_duplicate_mirror",
			file:    "[registries.\"docker.io\"]\nmirrors = [\"https://a.example.net\", \"https://a.example.net/\"]\n",
			wantErr: `file /etc/mirrord/mirrord.toml: registries."docker.io": registry docker.io: mirror "https://a.example.net" given twice; name each mirror once`,
		},
		{
			name:    "file_mirror_wrong_type",
			file:    "[registries.\"docker.io\"]\nmirrors = [42]\n",
			wantErr: `file /etc/mirrord/mirrord.toml: registries."docker.io": mirrors[0]: 42 is a number; want a URL string or a table { url = "https://...", capabilities = [...], ca_file = "...", skip_verify = false }`,
		},
		{
			name:    "file_mirror_unknown_key",
			file:    "[registries.\"docker.io\"]\nmirrors = [{ url = \"https://a.example.net\", token = \"x\" }]\n",
			wantErr: `file /etc/mirrord/mirrord.toml: registries."docker.io": mirrors[0]: unknown key "token"; valid: url, capabilities, ca_file, skip_verify, trusted, username, password_file, password_env, password_metadata`,
		},
		{
			name:    "file_bad_capability",
			file:    "[registries.\"docker.io\"]\nmirrors = [{ url = \"https://a.example.net\", capabilities = [\"push\"] }]\n",
			wantErr: `file /etc/mirrord/mirrord.toml: registries."docker.io": mirrors[0]: capabilities: capability "push" is not known; want "pull", "resolve" or both`,
		},
		{
			name:    "file_relative_ca",
			file:    "[registries.\"docker.io\"]\nmirrors = [{ url = \"https://a.example.net\", ca_file = \"ca.pem\" }]\n",
			wantErr: `file /etc/mirrord/mirrord.toml: registries."docker.io": mirrors[0]: ca_file: ca.pem: want an absolute path as a string`,
		},
		{
			name:    "file_bad_runtimes",
			file:    "runtimes = [\"runc\"]\n",
			wantErr: `file /etc/mirrord/mirrord.toml: runtimes: runtime "runc" is not known; valid: containerd, docker, crio, podman, k3s, rke2`,
		},
		{
			name:    "file_password_file_unreadable",
			file:    "[registries.\"docker.io\"]\nmirrors = [{ url = \"https://a.example.net\", username = \"robot\", password_file = \"/etc/mirrord/secrets/missing\" }]\n",
			wantErr: `file /etc/mirrord/mirrord.toml: registries."docker.io": mirrors[0]: password_file: "/etc/mirrord/secrets/missing": cannot read: open: no such file or directory; want a readable file holding the token or password`,
		},
		{
			name:    "file_password_file_is_dir",
			file:    "[registries.\"docker.io\"]\nmirrors = [{ url = \"https://a.example.net\", username = \"robot\", password_file = \"/etc/mirrord\" }]\n",
			wantErr: `file /etc/mirrord/mirrord.toml: registries."docker.io": mirrors[0]: password_file: "/etc/mirrord": cannot read: read: is a directory`,
		},
		{
			name:    "file_password_file_relative",
			file:    "[registries.\"docker.io\"]\nmirrors = [{ url = \"https://a.example.net\", username = \"robot\", password_file = \"secrets/gitlab\" }]\n",
			wantErr: `file /etc/mirrord/mirrord.toml: registries."docker.io": mirrors[0]: password_file: "secrets/gitlab": want an absolute, clean path such as /etc/mirrord/secrets/NAME`,
		},
		{
			name:    "file_password_file_two_lines",
			file:    "[registries.\"docker.io\"]\nmirrors = [{ url = \"https://a.example.net\", username = \"robot\", password_file = \"/etc/mirrord/secrets/two\" }]\n",
			secrets: map[string]string{"etc/mirrord/secrets/two": "s3cret-line-one\ns3cret-line-two\n"},
			wantErr: `file /etc/mirrord/mirrord.toml: registries."docker.io": mirrors[0]: password_file: "/etc/mirrord/secrets/two": has a control character or more than one line; want the token or password alone`,
		},
		{
			name:    "file_password_file_empty",
			file:    "[registries.\"docker.io\"]\nmirrors = [{ url = \"https://a.example.net\", username = \"robot\", password_file = \"/etc/mirrord/secrets/empty\" }]\n",
			secrets: map[string]string{"etc/mirrord/secrets/empty": "\n"},
			wantErr: `file /etc/mirrord/mirrord.toml: registries."docker.io": mirrors[0]: password_file: "/etc/mirrord/secrets/empty": is empty; want the token or password`,
		},
		{
			name:    "file_password_env_unset",
			file:    "[registries.\"docker.io\"]\nmirrors = [{ url = \"https://a.example.net\", username = \"robot\", password_env = \"MIRROR_TOKEN\" }]\n",
			wantErr: `file /etc/mirrord/mirrord.toml: registries."docker.io": mirrors[0]: password_env: "MIRROR_TOKEN": not set in mirrord's environment; set it in /etc/default/mirrord (then restart the units)`,
		},
		{
			name:    "file_password_env_bad_name",
			file:    "[registries.\"docker.io\"]\nmirrors = [{ url = \"https://a.example.net\", username = \"robot\", password_env = \"MIRROR-TOKEN\" }]\n",
			wantErr: `file /etc/mirrord/mirrord.toml: registries."docker.io": mirrors[0]: password_env: "MIRROR-TOKEN": want a variable name such as GITLAB_TOKEN`,
		},
		{
			name:    "file_password_without_username",
			file:    "[registries.\"docker.io\"]\nmirrors = [{ url = \"https://a.example.net\", password_env = \"MIRROR_TOKEN\" }]\n",
			wantErr: `file /etc/mirrord/mirrord.toml: registries."docker.io": mirrors[0]: password_env without username; give username too`,
		},
		{
			name:    "file_username_without_password",
			file:    "[registries.\"docker.io\"]\nmirrors = [{ url = \"https://a.example.net\", username = \"robot\" }]\n",
			wantErr: `file /etc/mirrord/mirrord.toml: registries."docker.io": mirrors[0]: username without a password; add one of password_file, password_env, password_metadata`,
		},
		{
			name:    "file_two_password_sources",
			file:    "[registries.\"docker.io\"]\nmirrors = [{ url = \"https://a.example.net\", username = \"robot\", password_env = \"T\", password_file = \"/etc/t\" }]\n",
			wantErr: `file /etc/mirrord/mirrord.toml: registries."docker.io": mirrors[0]: password_file and password_env both set; give one source for the password`,
		},
		{
			name:    "file_username_colon",
			file:    "[registries.\"docker.io\"]\nmirrors = [{ url = \"https://a.example.net\", username = \"ro:bot\", password_env = \"T\" }]\n",
			wantErr: `file /etc/mirrord/mirrord.toml: registries."docker.io": mirrors[0]: username: has a ':', which HTTP Basic authentication cannot carry (value not shown: it may hold a password); give the password apart`,
		},
		{
			name:    "file_password_metadata_no_metadata",
			file:    "[registries.\"docker.io\"]\nmirrors = [{ url = \"https://a.example.net\", username = \"robot\", password_metadata = \"hub\" }]\n",
			wantErr: `file /etc/mirrord/mirrord.toml: registries."docker.io": mirrors[0]: password_metadata: "hub": the instance metadata has no mirrord-credentials key`,
		},
		{
			name:    "file_untrusted_with_resolve",
			file:    "[registries.\"docker.io\"]\nmirrors = [{ url = \"https://a.example.net\", trusted = false, capabilities = [\"pull\", \"resolve\"] }]\n",
			wantErr: `file /etc/mirrord/mirrord.toml: registries."docker.io": mirrors[0]: trusted: false allows pull only, but capabilities include resolve; drop resolve (or the capabilities key)`,
		},
		{
			name:    "file_unknown_preset",
			file:    "[registries.\"docker.io\"]\nmirrors = [\"dockerhub-mirror\"]\n",
			wantErr: `file /etc/mirrord/mirrord.toml: registries."docker.io": mirrors[0]: "dockerhub-mirror": neither a URL nor a preset; want http(s)://host[:port][/path] or one of the presets google, ecr-public, gitlab:HOST/GROUP, harbor:HOST/PROJECT, artifactory:HOST/REPOSITORY`,
		},
		{
			name:    "file_preset_wrong_registry",
			file:    "[registries.\"quay.io\"]\nmirrors = [\"google\"]\n",
			wantErr: `file /etc/mirrord/mirrord.toml: registries."quay.io": mirrors[0]: "google": preset google mirrors docker.io only, not quay.io`,
		},
		{
			name:    "file_preset_missing_argument",
			file:    "[registries.\"docker.io\"]\nmirrors = [{ url = \"gitlab:gitlab.example.net\", username = \"robot\", password_env = \"T\" }]\n",
			wantErr: `file /etc/mirrord/mirrord.toml: registries."docker.io": mirrors[0]: url: "gitlab:gitlab.example.net": preset gitlab needs HOST/GROUP; want gitlab:HOST/GROUP, e.g. gitlab:gitlab.example.net/group`,
		},
		{
			name:    "env_unknown_preset",
			env:     map[string]string{"MIRRORD_MIRRORS": "docker.io=goggle"},
			wantErr: `env MIRRORD_MIRRORS: registry docker.io: mirror "goggle": neither a URL nor a preset; want http(s)://host[:port][/path] or one of the presets google, ecr-public, gitlab:HOST/GROUP, harbor:HOST/PROJECT, artifactory:HOST/REPOSITORY`,
		},
		{
			name:    "env_doubled_v2",
			env:     map[string]string{"MIRRORD_MIRRORS": "docker.io=https://m.example.net/hub/v2/library"},
			wantErr: `env MIRRORD_MIRRORS: registry docker.io: mirror "https://m.example.net/hub/v2/library": mirror URL path /hub/v2/library would yield a doubled /v2; give the registry root (https://host/hub for /hub/v2/...) or, for a mirror at a repository prefix, /v2/ then the prefix alone (https://host/v2/group/dependency_proxy/containers)`,
		},
		{
			name:    "file_doubled_v2",
			file:    "[registries.\"docker.io\"]\nmirrors = [\"https://m.example.net/v2/cache/v2\"]\n",
			wantErr: `file /etc/mirrord/mirrord.toml: registries."docker.io": mirrors[0]: "https://m.example.net/v2/cache/v2": mirror URL path /v2/cache/v2 would yield a doubled /v2; give the registry root (https://host/hub for /hub/v2/...) or, for a mirror at a repository prefix, /v2/ then the prefix alone (https://host/v2/group/dependency_proxy/containers)`,
		},
		{
			name:    "file_bad_canary",
			file:    "[registries.\"docker.io\"]\ncanary = \"library/busybox\"\nmirrors = [\"https://m.example.net\"]\n",
			wantErr: `file /etc/mirrord/mirrord.toml: registries."docker.io": canary: "library/busybox": names no tag; want REPO:TAG or REPO@sha256:DIGEST, e.g. library/busybox:latest`,
		},
		{
			name:    "file_wildcard_canary_without_host",
			file:    "[registries.\"*\"]\ncanary = \"library/busybox:latest\"\nmirrors = [\"https://m.example.net\"]\n",
			wantErr: `file /etc/mirrord/mirrord.toml: registries."*": canary: "library/busybox:latest": names no registry host; want HOST/REPO:TAG for the registry the probes ask through *, e.g. quay.io/prometheus/busybox:latest`,
		},
		{
			name:    "dropin_bad_registry_name",
			dropin:  "[registries.\"quay.io/ns\"]\nmirrors = [\"https://a.example.net\"]\n",
			wantErr: `file /etc/mirrord/conf.d/50-bad.toml: registries."quay.io/ns": registry "quay.io/ns" is not a host; want a host such as quay.io or a host:port such as 10.0.0.5:5000`,
		},
	}

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clearEnv(t)
			root := t.TempDir()
			if tt.file != "" {
				writeFile(t, filepath.Join(root, "etc/mirrord/mirrord.toml"), tt.file)
			}
			if tt.dropin != "" {
				writeFile(t, filepath.Join(root, "etc/mirrord/conf.d/50-bad.toml"), tt.dropin)
			}
			for p, content := range tt.secrets {
				writeFile(t, filepath.Join(root, p), content)
			}
			for k, v := range tt.env {
				t.Setenv(k, v)
			}

			_, err := Load(Options{Root: root, Mirrors: tt.flag})
			if err == nil {
				t.Fatal("Load succeeded; want an error")
			}
			got := strings.ReplaceAll(err.Error(), root, "ROOT")
			if got != tt.wantErr {
				t.Errorf("error\n got: %s\nwant: %s", got, tt.wantErr)
			}
			if strings.Contains(got, "s3cret") {
				t.Errorf("error shows a password: %s", got)
			}
		})
	}
}

func TestMissingFileIsNoError(t *testing.T) {
	clearEnv(t)
	c, err := Load(Options{Root: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Spec.Registries) != 0 || c.Runtimes != nil {
		t.Errorf("want an empty config, got %+v", c)
	}
}
