package config

import (
	"path/filepath"
	"testing"

	"github.com/mirrord/mirrord/internal/metadata"
	"github.com/mirrord/mirrord/internal/spec"
)

// TestCredentialSources reads a password from each source, and none from
// a mirror that a higher layer replaced.
func TestCredentialSources(t *testing.T) {
	clearEnv(t)
	root := t.TempDir()
	writeFile(t, filepath.Join(root, "etc/mirrord/mirrord.toml"), `
[registries."docker.io"]
mirrors = [
  { url = "gitlab:gitlab.example.net/platform", username = "bot",
    password_file = "/etc/mirrord/secrets/gitlab" },
  { url = "https://b.example.net", username = "bot", password_env = "MIRROR_B" },
]

[registries."quay.io"]
mirrors = [{ url = "https://q.example.net", username = "bot",
  password_file = "/etc/mirrord/secrets/missing" }]
`)
	writeFile(t, filepath.Join(root, "etc/mirrord/secrets/gitlab"), "  from-file\r\n")
	t.Setenv("MIRROR_B", "from-env")
	t.Setenv("MIRRORD_MIRRORS", "quay.io=https://q2.example.net")

	md := gceValues("", `[registries."ghcr.io"]
mirrors = [{ url = "https://g.example.net", username = "bot", password_metadata = "ghcr" }]
`)
	md.Credentials = spec.NewSecret("# a comment\nother=x\nghcr = from-metadata\n")
	md.Source[metadata.KeyCredentials] = "gce instance attribute mirrord-credentials"

	c, err := Load(Options{Root: root, Metadata: md})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"docker.io/https://gitlab.example.net/v2/platform/dependency_proxy/containers": "from-file",
		"docker.io/https://b.example.net":                                              "from-env",
		"ghcr.io/https://g.example.net":                                                "from-metadata",
	}
	got := map[string]string{}
	for _, r := range c.Spec.Registries {
		for _, m := range r.Mirrors {
			if m.Auth != nil {
				got[r.Host+"/"+m.URL] = m.Auth.Password.Reveal()
			}
		}
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: password %q, want %q", k, got[k], v)
		}
	}
	if len(got) != len(want) {
		t.Errorf("passwords for %v, want only %v", got, want)
	}
	for _, k := range c.MetadataKeys {
		if k.Key == metadata.KeyCredentials && k.Bytes != 0 {
			t.Errorf("the credentials key's size is reported: %+v", k)
		}
	}
}
