package apply

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/mirrord/mirrord/internal/config"
	"github.com/mirrord/mirrord/internal/logging"
	"github.com/mirrord/mirrord/internal/spec"
)

// dpkgStatus is a dpkg status file naming one installed package.
func dpkgStatus(pkg, version string) string {
	return "Package: " + pkg + "\nStatus: install ok installed\nVersion: " + version + "\n\n"
}

// actionsOf renders a Plan's actions as apply reports them.
func actionsOf(p *Plan) []string {
	var out []string
	for _, a := range p.Actions {
		out = append(out, a.String())
	}
	return out
}

// pathsOf lists the paths of a Plan's changes.
func pathsOf(p *Plan) []string {
	var out []string
	for _, c := range p.Changes {
		out = append(out, c.Path)
	}
	return out
}

// applyAndRevert applies cfg, checks the files and actions, checks that a
// second Build changes nothing, then reverts and checks that every file is
// as it was.
func applyAndRevert(t *testing.T, cfg config.Config, wantPaths, wantActions []string) *Plan {
	t.Helper()
	log := logging.Discard()
	before := snapshot(t, cfg.Root)

	p, err := Apply(context.Background(), cfg, ReportOnly{}, log)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(wantPaths, pathsOf(p)); diff != "" {
		t.Errorf("files changed (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(wantActions, actionsOf(p)); diff != "" {
		t.Errorf("actions (-want +got):\n%s", diff)
	}

	again, err := Build(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	if len(again.Changes) > 0 {
		t.Errorf("second Build changes %v, want nothing", pathsOf(again))
	}

	rp, err := Revert(cfg.Root)
	if err != nil {
		t.Fatal(err)
	}
	if err := Execute(rp, "revert", log); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(before, snapshot(t, cfg.Root)); diff != "" {
		t.Errorf("files after revert (-before +after):\n%s", diff)
	}
	return p
}

// snapshot reads every file under root/etc.
func snapshot(t *testing.T, root string) map[string]string {
	t.Helper()
	files := map[string]string{}
	err := filepath.WalkDir(filepath.Join(root, "etc"), func(p string, d os.DirEntry,
		err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(p)
		files[strings.TrimPrefix(p, root)] = string(data)
		return err
	})
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return files
}

func TestCRIOAndPodmanDropIn(t *testing.T) {
	root := testNode(t, map[string]string{
		"etc/containers/registries.conf": "unqualified-search-registries = [\"docker.io\"]\n",
	})
	cfg := testConfig(t, root, "docker.io=https://hub.example.net;quay.io=http://10.0.0.9:5000",
		config.CRIO, config.Podman)

	p := applyAndRevert(t, cfg, []string{"/etc/containers/registries.conf.d/90-mirrord.conf"},
		[]string{
			"crio: reload crio.service (90-mirrord.conf changed)",
			"podman: no action (90-mirrord.conf changed; podman reads it on every run)",
		})
	dropIn := string(p.Changes[0].New)
	for _, want := range []string{`location = "hub.example.net"`, `prefix = "quay.io"`,
		`location = "10.0.0.9:5000"`, "insecure = true"} {
		if !strings.Contains(dropIn, want) {
			t.Errorf("drop-in has no %s:\n%s", want, dropIn)
		}
	}
}

func TestCRIODropInSkipsWildcard(t *testing.T) {
	root := testNode(t, nil)
	cfg := testConfig(t, root, "*=https://cache.example.net", config.CRIO)

	p, err := Build(cfg, logging.Discard())
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Changes) > 0 {
		t.Errorf("a wildcard-only spec changes %v, want nothing for CRI-O", pathsOf(p))
	}
	if !slices.ContainsFunc(p.Warnings, func(w string) bool {
		return strings.Contains(w, "registry *: cannot be expressed in registries.conf")
	}) {
		t.Errorf("no warning about the wildcard: %q", p.Warnings)
	}
}

func TestDockerCertsDForContainerdStore(t *testing.T) {
	root := testNode(t, map[string]string{
		"var/lib/dpkg/status":    dpkgStatus("docker-ce", "5:28.3.1-1~debian.12~bookworm"),
		"etc/docker/daemon.json": "{\n  \"features\": {\"containerd-snapshotter\": true}\n}\n",
	})
	cfg := testConfig(t, root, "quay.io=https://quay.example.net;ghcr.io=https://gh.example.net",
		config.Docker)

	p := applyAndRevert(t, cfg, []string{
		"/etc/docker/certs.d/ghcr.io/hosts.toml",
		"/etc/docker/certs.d/quay.io/hosts.toml",
	}, []string{
		"docker: no action (only certs.d hosts.toml changed; dockerd reads it on every pull)",
	})
	if got := string(p.Changes[1].New); !strings.Contains(got,
		`[host."https://quay.example.net"]`) {
		t.Errorf("quay.io hosts.toml:\n%s", got)
	}
}

func TestDockerCertsDNotForClassicStore(t *testing.T) {
	for name, files := range map[string]map[string]string{
		"dockerd_20": {"var/lib/dpkg/status": dpkgStatus("docker.io", "20.10.24+dfsg1-1")},
		"store_off": {
			"var/lib/dpkg/status":    dpkgStatus("docker-ce", "5:29.0.1-1~debian.12~bookworm"),
			"etc/docker/daemon.json": "{\"features\": {\"containerd-snapshotter\": false}}\n",
		},
	} {
		t.Run(name, func(t *testing.T) {
			root := testNode(t, files)
			cfg := testConfig(t, root, "quay.io=https://quay.example.net", config.Docker)
			p, err := Build(cfg, logging.Discard())
			if err != nil {
				t.Fatal(err)
			}
			if len(p.Changes) > 0 {
				t.Errorf("changes %v, want none: the classic store reads no hosts.toml",
					pathsOf(p))
			}
		})
	}
}

func TestK3sRegistriesYAML(t *testing.T) {
	operator := "mirrors:\n  registry.internal:\n    endpoint:\n      - https://r.internal\n" +
		"configs:\n  registry.internal:\n    auth:\n      username: ci\n"
	root := testNode(t, map[string]string{
		"etc/rancher/k3s/registries.yaml":         operator,
		"etc/systemd/system/k3s-agent.service":    "[Service]\nExecStart=/usr/local/bin/k3s agent\n",
		"etc/rancher/rke2/.not-installed-is-fine": "",
	})
	cfg := testConfig(t, root, "docker.io=https://hub.example.net", config.K3s)

	p := applyAndRevert(t, cfg, []string{"/etc/rancher/k3s/registries.yaml"}, []string{
		"k3s: restart k3s.service (registries.yaml changed)",
		"k3s: restart k3s-agent.service (registries.yaml changed)",
	})
	got := string(p.Changes[0].New)
	for _, want := range []string{"registry.internal:", "username: ci", "docker.io:",
		"https://hub.example.net", "# Managed by mirrord"} {
		if !strings.Contains(got, want) {
			t.Errorf("registries.yaml has no %q:\n%s", want, got)
		}
	}
	if diff := cmp.Diff([]config.Runtime{config.K3s}, DetectRuntimes(root)); diff != "" {
		t.Errorf("DetectRuntimes (-want +got):\n%s", diff)
	}
}

func TestRKE2RegistriesYAMLNewFile(t *testing.T) {
	root := testNode(t, nil)
	cfg := testConfig(t, root, "docker.io=https://hub.example.net", config.RKE2)

	applyAndRevert(t, cfg, []string{"/etc/rancher/rke2/registries.yaml"}, []string{
		"rke2: restart rke2-server.service (registries.yaml changed)",
		"rke2: restart rke2-agent.service (registries.yaml changed)",
	})
	if _, err := os.Stat(filepath.Join(root, "etc/rancher/rke2")); !os.IsNotExist(err) {
		t.Errorf("revert left the directory it created: %v", err)
	}
}

func TestDetectOtherRuntimes(t *testing.T) {
	root := testNode(t, map[string]string{
		"usr/bin/crio":      "",
		"usr/bin/podman":    "",
		"usr/local/bin/k3s": "",
		"usr/lib/systemd/system/rke2-server.service": "",
		"etc/containers/registries.conf":             "",
	})
	want := []config.Runtime{config.CRIO, config.Podman, config.K3s, config.RKE2}
	if diff := cmp.Diff(want, DetectRuntimes(root)); diff != "" {
		t.Errorf("DetectRuntimes (-want +got):\n%s", diff)
	}
}

func TestStatusOfOtherRuntimes(t *testing.T) {
	root := testNode(t, map[string]string{
		"etc/containers/registries.conf.d/95-local.conf": "[[registry]]\nprefix = \"ghcr.io\"\n" +
			"location = \"ghcr.io\"\n[[registry.mirror]]\nlocation = \"ghcr.local\"\n",
	})
	cfg := testConfig(t, root, "quay.io=https://quay.example.net", config.CRIO, config.K3s)
	if _, err := Apply(context.Background(), cfg, ReportOnly{}, logging.Discard()); err != nil {
		t.Fatal(err)
	}

	s, err := ReadStatus(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	got := map[config.Runtime][]RegistryStatus{}
	for _, rt := range s.Runtimes {
		got[rt.Runtime] = rt.Registries
	}
	want := map[config.Runtime][]RegistryStatus{
		config.CRIO: {
			{Host: "ghcr.io", Mirrors: []string{"ghcr.local"}, Source: "not mirrord's",
				File: "/etc/containers/registries.conf.d/95-local.conf"},
			{Host: "quay.io", Mirrors: []string{"quay.example.net"}, Source: "env test",
				File: "/etc/containers/registries.conf.d/90-mirrord.conf"},
		},
		config.K3s: {
			{Host: "quay.io", Mirrors: []string{"https://quay.example.net"}, Source: "env test",
				File: "/etc/rancher/k3s/registries.yaml"},
		},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("status registries (-want +got):\n%s", diff)
	}
	if !s.InSync {
		t.Errorf("status not in sync after apply: %+v", s)
	}
}

// serveDockerInfo answers GET /info on root's dockerd socket with body.
func serveDockerInfo(t *testing.T, root, body string) {
	t.Helper()
	sock := filepath.Join(root, "run/docker.sock")
	if err := os.MkdirAll(filepath.Dir(sock), 0o755); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/info" {
			http.NotFound(w, r)
			return
		}
		io.WriteString(w, body)
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
}

// TestDockerCertsDAsksTheDaemon: Docker 29 without a features key may use
// either store; the running daemon's /info decides.
func TestDockerCertsDAsksTheDaemon(t *testing.T) {
	for name, tt := range map[string]struct {
		info      string
		wantFiles int
	}{
		"containerd_store": {`{"Driver": "overlayfs", "DriverStatus": [["driver-type", ` +
			`"io.containerd.snapshotter.v1"]]}`, 1},
		"classic_store": {`{"Driver": "overlay2", "DriverStatus": [["Backing Filesystem", ` +
			`"extfs"]]}`, 0},
	} {
		t.Run(name, func(t *testing.T) {
			root := testNode(t, map[string]string{
				"var/lib/dpkg/status": dpkgStatus("docker-ce", "5:29.1.0-1~debian.12~bookworm"),
			})
			serveDockerInfo(t, root, tt.info)
			cfg := testConfig(t, root, "quay.io=https://quay.example.net", config.Docker)

			p, err := Build(cfg, logging.Discard())
			if err != nil {
				t.Fatal(err)
			}
			if len(p.Changes) != tt.wantFiles {
				t.Errorf("changes %v, want %d file(s)", pathsOf(p), tt.wantFiles)
			}
			if len(p.Warnings) > 0 {
				t.Errorf("warnings %q, want none: the daemon said which store", p.Warnings)
			}
		})
	}
}

// TestDetectIgnoresEmptyConfigDirs: the empty directories kubelet makes for
// the DaemonSet's hostPath mounts are no sign of a runtime; a directory
// holding a file is.
func TestDetectIgnoresEmptyConfigDirs(t *testing.T) {
	root := t.TempDir()
	for _, d := range []string{"etc/containerd", "etc/docker", "etc/crio", "etc/containers",
		"etc/rancher"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if got := DetectRuntimes(root); len(got) != 0 {
		t.Errorf("DetectRuntimes of empty configuration directories = %v, want none", got)
	}

	if err := os.WriteFile(filepath.Join(root, "etc/docker/daemon.json"), []byte("{}\n"),
		0o644); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]config.Runtime{config.Docker}, DetectRuntimes(root)); diff != "" {
		t.Errorf("DetectRuntimes (-want +got):\n%s", diff)
	}
}

// A certs.d hosts.toml of dockerd's with credentials is 0600, like
// containerd's.
func TestDockerCertsDPrivate(t *testing.T) {
	root := testNode(t, map[string]string{
		"var/lib/dpkg/status":    dpkgStatus("docker-ce", "5:28.3.1-1~debian.12~bookworm"),
		"etc/docker/daemon.json": "{\"features\": {\"containerd-snapshotter\": true}}\n",
	})
	cfg := testConfig(t, root, "quay.io=https://quay.example.net", config.Docker)
	cfg.Spec.Registries[0].Mirrors[0].Auth = &spec.Auth{Username: "robot",
		Password: spec.NewSecret(testToken), Key: spec.KeyPasswordEnv, Name: "TOKEN"}

	if _, err := Apply(context.Background(), cfg, ReportOnly{}, logging.Discard()); err != nil {
		t.Fatal(err)
	}
	hosts := filepath.Join(root, "etc/docker/certs.d/quay.io/hosts.toml")
	if got := mode(t, hosts); got != privateMode {
		t.Errorf("%s has mode %v, want 0600", hosts, got)
	}
	data, err := os.ReadFile(hosts)
	if err != nil || !strings.Contains(string(data), "Authorization") {
		t.Errorf("%s has no Authorization header (%v):\n%s", hosts, err, data)
	}
}
