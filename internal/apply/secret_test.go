package apply

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mirrord/mirrord/internal/config"
	"github.com/mirrord/mirrord/internal/containerd"
	"github.com/mirrord/mirrord/internal/containerd/hoststest"
	"github.com/mirrord/mirrord/internal/logging"
	"github.com/mirrord/mirrord/internal/spec"
)

const testToken = "s3cret-t0ken-value"

// authConfig is testConfig whose first docker.io mirror has credentials.
func authConfig(t *testing.T, root string) config.Config {
	t.Helper()
	cfg := testConfig(t, root, "docker.io=https://m.example.net,https://n.example.net",
		config.Containerd)
	cfg.Spec.Registries[0].Mirrors[0].Auth = &spec.Auth{Username: "robot",
		Password: spec.NewSecret(testToken), Key: spec.KeyPasswordEnv, Name: "TOKEN"}
	return cfg
}

// A hosts.toml with credentials is 0600 even when it replaces a 0644 file
// of the operator's, whose mode revert puts back with its bytes.
func TestPrivateHostsKeepOriginalMode(t *testing.T) {
	hostsRel := "etc/containerd/certs.d/docker.io/hosts.toml"
	root := testNode(t, map[string]string{
		"etc/containerd/config.toml": "version = 2\n",
		hostsRel:                     "server = \"https://registry-1.docker.io\"\n",
	})
	hosts := filepath.Join(root, hostsRel)
	var logs bytes.Buffer
	log := logging.New(&logs, slog.LevelDebug, false)

	if _, err := Apply(context.Background(), authConfig(t, root), ReportOnly{}, log); err != nil {
		t.Fatal(err)
	}
	if got := mode(t, hosts); got != privateMode {
		t.Errorf("hosts.toml with credentials has mode %v, want 0600", got)
	}
	st, err := LoadState(root)
	if err != nil {
		t.Fatal(err)
	}
	if f := st.Files["/"+hostsRel]; f == nil || f.Mode != 0o644 {
		t.Errorf("state keeps the original mode as %+v, want 0644", f)
	}

	stateDir := filepath.Join(root, StateDir)
	err = filepath.WalkDir(stateDir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(p)
		if strings.Contains(string(data), testToken) || strings.Contains(string(data), "robot") {
			t.Errorf("%s holds the credentials:\n%s", p, data)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(logs.String(), testToken) {
		t.Errorf("log shows the token:\n%s", logs.String())
	}

	if _, err := RevertNode(context.Background(), root, ReportOnly{}, log); err != nil {
		t.Fatal(err)
	}
	if got := mode(t, hosts); got != 0o644 {
		t.Errorf("restored hosts.toml mode %v, want 0644", got)
	}
}

// Diff masks every credential: mirrord's header, and the legacy auth keys
// of an operator's config.toml that show as context.
func TestDiffMasksCredentials(t *testing.T) {
	root := testNode(t, map[string]string{
		"etc/containerd/config.toml": "version = 2\n" +
			"[plugins.\"io.containerd.grpc.v1.cri\".registry.configs.\"r.example.net\".auth]\n" +
			"  password = \"operator-pw-42\"\n" +
			"  auth = \"b3BlcmF0b3I6cHc=\"\n",
	})
	p, err := Build(authConfig(t, root), logging.Discard())
	if err != nil {
		t.Fatal(err)
	}

	d := p.Diff()
	for _, leak := range []string{testToken, "operator-pw-42", "b3BlcmF0b3I6cHc=",
		spec.Auth{Username: "robot", Password: spec.NewSecret(testToken)}.Header().Reveal()} {
		if strings.Contains(d, leak) {
			t.Errorf("diff shows %q:\n%s", leak, d)
		}
	}
	if !strings.Contains(d, `+    Authorization = "(secret)"`) {
		t.Errorf("diff does not show the masked header:\n%s", d)
	}
}

// FuzzCredentialsMasked renders any user name and password the parser
// accepts into a hosts.toml: containerd's schema reads it with the header
// carrying them, and the diff shows neither.
func FuzzCredentialsMasked(f *testing.F) {
	f.Add("robot", "glpat-0123456789")
	f.Add("robot$pull", "p\"w\\d=\n")
	f.Add("ユーザー", "секрет-token")
	f.Fuzz(func(t *testing.T, user, password string) {
		pw, err := spec.ParseSecret(password)
		if spec.CheckUsername(user) != nil || err != nil {
			return
		}
		m, _ := spec.NewMirror("https://m.example.net/v2/group/dependency_proxy/containers")
		m.Auth = &spec.Auth{Username: user, Password: pw, Key: spec.KeyPasswordEnv, Name: "P"}
		s := spec.Spec{Registries: []spec.Registry{{Host: "docker.io", Mirrors: []spec.Mirror{m}}}}
		data := containerd.RenderHosts(s.Registries[0])

		doc, err := hoststest.Decode(data, true)
		if err != nil {
			t.Fatalf("containerd's schema refuses the file: %v\n%s", err, data)
		}
		h := doc.HostConfigs[m.API()].Header["Authorization"]
		if h != m.Auth.Header().Reveal() {
			t.Fatalf("header %q, want the credentials'", h)
		}

		d := diffFile(Change{Path: "/etc/containerd/certs.d/docker.io/hosts.toml", New: data}, s)
		if strings.Contains(d, m.Auth.Header().Reveal()) ||
			(len(pw.Reveal()) >= minMaskedLen && strings.Contains(d, pw.Reveal())) {
			t.Fatalf("diff shows the credentials:\n%s", d)
		}
	})
}
