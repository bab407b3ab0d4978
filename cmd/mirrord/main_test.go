package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// node copies the sample node tree into a temporary root.
func node(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	err := os.CopyFS(root, os.DirFS("../../examples/node"))
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// clearEnv keeps the caller's MIRRORD_* variables out of the test, and
// turns the watch's probes off: the sample node's mirrors are not on
// loopback, and tests send traffic to loopback only. Tests of the probes
// set MIRRORD_PROBE_INTERVAL themselves.
func clearEnv(t *testing.T) {
	t.Helper()
	for _, kv := range os.Environ() {
		if name, _, _ := strings.Cut(kv, "="); strings.HasPrefix(name, "MIRRORD_") {
			t.Setenv(name, "")
			os.Unsetenv(name)
		}
	}
	t.Setenv(probeIntervalEnv, "off")
}

func mirrord(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(args, &out, &errb)
	return code, dropWarnings(out.String()), errb.String()
}

// snapshot maps every file under root, except mirrord's own state, to its
// digest, mode and modification time.
func snapshot(t *testing.T, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if strings.HasPrefix(rel, "var/lib/mirrord") {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if d.IsDir() {
			out[rel+"/"] = fi.Mode().String()
			return nil
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(data)
		out[rel] = hex.EncodeToString(sum[:8]) + " " + fi.Mode().String() + " " +
			fi.ModTime().Format(time.RFC3339Nano)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestApplyThenNoop(t *testing.T) {
	clearEnv(t)
	root := node(t)

	code, out, errOut := mirrord(t, "apply", "--root", root, "--no-reload")
	if code != 0 {
		t.Fatalf("apply exit %d: %s", code, errOut)
	}
	for _, want := range []string{
		"file create /etc/containerd/certs.d/docker.io/hosts.toml",
		"file create /etc/containerd/certs.d/quay.io/hosts.toml",
		"file update /etc/containerd/config.toml",
		"file update /etc/docker/daemon.json",
		"containerd: restart containerd.service (config.toml changed)",
		"docker: reload docker.service (daemon.json changed)",
		"not carried out: restart containerd.service (--no-reload)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("apply output lacks %q:\n%s", want, out)
		}
	}

	before := snapshot(t, root)
	code, out, errOut = mirrord(t, "apply", "--root", root, "--no-reload")
	if code != 0 {
		t.Fatalf("second apply exit %d: %s", code, errOut)
	}
	want := "no file changes\n" +
		"containerd: no action (nothing changed)\n" +
		"docker: no action (nothing changed)\n"
	if out != want {
		t.Errorf("second apply output:\n%s\nwant:\n%s", out, want)
	}
	if errOut != "" {
		t.Errorf("second apply logged: %s", errOut)
	}
	assertSame(t, before, snapshot(t, root))
}

func TestPlanChangesNothing(t *testing.T) {
	clearEnv(t)
	root := node(t)
	before := snapshot(t, root)

	code, out, errOut := mirrord(t, "plan", "--root", root)
	if code != 0 {
		t.Fatalf("plan exit %d: %s", code, errOut)
	}
	for _, want := range []string{
		"--- a/etc/containerd/config.toml\n+++ b/etc/containerd/config.toml\n",
		"--- /dev/null\n+++ b/etc/containerd/certs.d/docker.io/hosts.toml\n",
		`+  "registry-mirrors": [`,
		"containerd: restart containerd.service (config.toml changed)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("plan output lacks %q:\n%s", want, out)
		}
	}
	assertSame(t, before, snapshot(t, root))
	if _, err := os.Stat(filepath.Join(root, "var/lib/mirrord")); err == nil {
		t.Error("plan created mirrord's state directory")
	}
}

func TestRevertRestoresBytes(t *testing.T) {
	clearEnv(t)
	root := node(t)
	orig := contents(t, root)

	if code, _, errOut := mirrord(t, "apply", "--root", root, "--no-reload"); code != 0 {
		t.Fatalf("apply: %s", errOut)
	}
	code, out, errOut := mirrord(t, "revert", "--root", root)
	if code != 0 {
		t.Fatalf("revert exit %d: %s", code, errOut)
	}
	if !strings.Contains(out, "containerd: restart containerd.service (config.toml changed)") {
		t.Errorf("revert output lacks the containerd restart:\n%s", out)
	}

	got := contents(t, root)
	for p, want := range orig {
		if got[p] != want {
			t.Errorf("%s not restored byte for byte", p)
		}
	}
	for p := range got {
		if _, ok := orig[p]; !ok {
			t.Errorf("%s left behind by revert", p)
		}
	}

	// A second revert has nothing left to do.
	if _, out, _ := mirrord(t, "revert", "--root", root); !strings.Contains(out, "no file changes") {
		t.Errorf("second revert: %s", out)
	}
}

// TestSpecChangeReleasesFiles drops a registry from the spec: its hosts.toml
// goes, and only hosts.toml files change, so no runtime needs an action.
func TestSpecChangeReleasesFiles(t *testing.T) {
	clearEnv(t)
	root := node(t)
	if code, _, errOut := mirrord(t, "apply", "--root", root, "--no-reload"); code != 0 {
		t.Fatalf("apply: %s", errOut)
	}

	conf := filepath.Join(root, "etc/mirrord/mirrord.toml")
	err := os.WriteFile(conf, []byte("[registries.\"docker.io\"]\nmirrors = "+
		"[\"https://hub-mirror.example.net\", { url = \"http://10.20.0.5:5000\", "+
		"capabilities = [\"pull\"] }]\n"), 0o644)
	if err != nil {
		t.Fatal(err)
	}

	code, out, errOut := mirrord(t, "apply", "--root", root, "--no-reload")
	if code != 0 {
		t.Fatalf("apply exit %d: %s", code, errOut)
	}
	want := "file remove /etc/containerd/certs.d/registry.k8s.io/hosts.toml\n" +
		"containerd: no action (only hosts.toml changed; containerd reads it on every pull)\n" +
		"docker: no action (nothing changed)\n"
	if out != want {
		t.Errorf("output:\n%s\nwant:\n%s", out, want)
	}
	if _, err := os.Stat(filepath.Join(root, "etc/containerd/certs.d/registry.k8s.io")); err == nil {
		t.Error("the registry's directory, created by mirrord, is still there")
	}
}

func TestStatus(t *testing.T) {
	clearEnv(t)
	root := node(t)
	if code, _, errOut := mirrord(t, "apply", "--root", root, "--no-reload"); code != 0 {
		t.Fatalf("apply: %s", errOut)
	}

	code, out, errOut := mirrord(t, "status", "--root", root)
	if code != 0 {
		t.Fatalf("status exit %d: %s", code, errOut)
	}
	for _, want := range []string{
		"node:     in sync\n",
		"containerd (containerd.service): 3 registries, config_path \"/etc/containerd/certs.d\"",
		"docker.io            https://hub-mirror.example.net http://10.20.0.5:5000  [file ",
		"quay.io              https://quay-cache.example.net  [legacy /etc/containerd/config.toml registry.mirrors]",
		"docker (docker.service): 1 registry",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}

	hosts := filepath.Join(root, "etc/containerd/certs.d/docker.io/hosts.toml")
	if err := os.WriteFile(hosts, []byte("server = \"https://elsewhere.example.net\"\n"),
		0o644); err != nil {
		t.Fatal(err)
	}
	code, out, _ = mirrord(t, "status", "--root", root, "--json")
	if code != 0 || !strings.Contains(out, `"in_sync": false`) ||
		!strings.Contains(out, `"drift": [`) {
		t.Errorf("status --json after a hand edit (exit %d):\n%s", code, out)
	}
}

// TestBadInputChangesNothing runs apply on each bad input and checks the
// one-line error and that no file on the node changed.
func TestBadInputChangesNothing(t *testing.T) {
	tests := []struct {
		name  string
		env   map[string]string
		args  []string
		files map[string]string
		// metadata, when set, is served as GCE instance attributes by an
		// emulator on loopback that MIRRORD_METADATA* point at.
		metadata map[string]string
		wantErr  string
	}{
		{
			name:    "env_mirrors",
			env:     map[string]string{"MIRRORD_MIRRORS": "docker.io=ftp://m.example.net"},
			wantErr: `env MIRRORD_MIRRORS: registry docker.io: mirror "ftp://m.example.net": mirror URL scheme "ftp" is not supported; want http:// or https://`,
		},
		{
			name:    "flag_mirrors",
			args:    []string{"--mirrors", "quay.io=https://m.example.net#top"},
			wantErr: `flag --mirrors: registry quay.io: mirror "https://m.example.net#top": mirror URL has a fragment; want http(s)://host[:port][/path] without #`,
		},
		{
			name:    "config_file",
			files:   map[string]string{"etc/mirrord/mirrord.toml": "[registries.\"docker.io\"]\nmirrors = \"https://m.example.net\"\n"},
			wantErr: `file /etc/mirrord/mirrord.toml: line 2: cannot decode TOML string into struct field config.registryDoc.Mirrors of type []interface {}`,
		},
		{
			name:    "dropin",
			files:   map[string]string{"etc/mirrord/conf.d/10-x.toml": "[registries.\"\"]\nmirrors = [\"https://m.example.net\"]\n"},
			wantErr: `file /etc/mirrord/conf.d/10-x.toml: registries."": registry name is empty; want a host such as docker.io, a host:port, or * for every registry`,
		},
		{
			name:    "containerd_config_unparsable",
			files:   map[string]string{"etc/containerd/config.toml": "version = 2\n[plugins\n"},
			wantErr: `containerd config /etc/containerd/config.toml: parse config.toml: line 2: `,
		},
		{
			name:    "daemon_json_unparsable",
			files:   map[string]string{"etc/docker/daemon.json": "{\"log-driver\": \"json-file\",\n"},
			wantErr: `docker config /etc/docker/daemon.json: parse daemon.json: `,
		},
		{
			name:     "metadata_mirrors",
			metadata: map[string]string{"mirrord-mirrors": "docker.io=ftp://m.example.net"},
			wantErr:  `metadata gce instance attribute mirrord-mirrors: value "docker.io=ftp://m.example.net": registry docker.io: mirror "ftp://m.example.net": mirror URL scheme "ftp" is not supported; want http:// or https://`,
		},
		{
			name: "metadata_mirrors_beside_good_config",
			metadata: map[string]string{
				"mirrord-config":  "[registries.\"quay.io\"]\nmirrors = [\"https://q.example.net\"]\n",
				"mirrord-mirrors": "ghcr.io=https://g.example.net;ghcr.io=https://h.example.net",
			},
			wantErr: `metadata gce instance attribute mirrord-mirrors: value "ghcr.io=https://g.example.net;ghcr.io=https://h.example.net": registry "ghcr.io" given twice (also in metadata gce instance attribute mirrord-mirrors); name each registry once`,
		},
		{
			name:     "metadata_config_syntax",
			metadata: map[string]string{"mirrord-config": "[registries.\"docker.io\"\n"},
			wantErr:  `metadata gce instance attribute mirrord-config: value "[registries.\"docker.io\"\n": line 1: expected ']' to close table name; want a TOML document in the schema of /etc/mirrord/mirrord.toml`,
		},
		{
			name:     "metadata_config_schema",
			metadata: map[string]string{"mirrord-config": "[registries.\"docker.io\"]\nmirrors = [{ url = \"https://m.example.net\", token = \"t\" }]\n"},
			wantErr:  `metadata gce instance attribute mirrord-config: value "[registries.\"docker.io\"]\nmirrors = [{ url = \"https://m.example.net\", tok"... (84 bytes in all): registries."docker.io": mirrors[0]: unknown key "token"; valid: url, capabilities, ca_file, skip_verify`,
		},
		{
			name: "metadata_config_long",
			metadata: map[string]string{"mirrord-config": "# " + strings.Repeat("-", 100) +
				"\nruntimes = [\"runc\"]\n"},
			wantErr: `metadata gce instance attribute mirrord-config: value "# ----------------------------------------------------------------------"... (123 bytes in all): runtimes: runtime "runc" is not known; valid: containerd, docker, crio, podman, k3s, rke2`,
		},
		{
			name:    "metadata_provider_unknown",
			env:     map[string]string{"MIRRORD_METADATA": "hetzner"},
			wantErr: `env MIRRORD_METADATA: "hetzner": unknown provider; valid: auto, none, gce, yandex, aws, azure, openstack, cloud-init`,
		},
		{
			name:    "metadata_timeout",
			env:     map[string]string{"MIRRORD_METADATA_TIMEOUT": "2"},
			wantErr: `env MIRRORD_METADATA_TIMEOUT: "2": want a positive Go duration such as 2s or 500ms`,
		},
		{
			name:    "metadata_cloud_init_malformed",
			env:     map[string]string{"MIRRORD_METADATA": "cloud-init"},
			files:   map[string]string{"run/cloud-init/instance-data.json": "{\"v1\": "},
			wantErr: `read instance metadata: cloud-init: decode ROOT/run/cloud-init/instance-data.json: unexpected end of JSON input`,
		},
		{
			name:    "password_file_unreadable",
			files:   map[string]string{"etc/mirrord/mirrord.toml": "[registries.\"docker.io\"]\nmirrors = [{ url = \"https://m.example.net\", username = \"robot\", password_file = \"/etc/mirrord/secrets/hub\" }]\n"},
			wantErr: `file /etc/mirrord/mirrord.toml: registries."docker.io": mirrors[0]: password_file: "/etc/mirrord/secrets/hub": cannot read: open: no such file or directory; want a readable file holding the token or password`,
		},
		{
			name:    "credentials_options",
			files:   map[string]string{"etc/mirrord/mirrord.toml": "[registries.\"docker.io\"]\nmirrors = [{ url = \"https://m.example.net\", username = \"robot\", password_env = \"A\", password_metadata = \"b\" }]\n"},
			wantErr: `file /etc/mirrord/mirrord.toml: registries."docker.io": mirrors[0]: password_env and password_metadata both set; give one source for the password`,
		},
		{
			name:    "unknown_preset",
			env:     map[string]string{"MIRRORD_MIRRORS": "docker.io=gcr"},
			wantErr: `env MIRRORD_MIRRORS: registry docker.io: mirror "gcr": neither a URL nor a preset; want http(s)://host[:port][/path] or one of the presets google, ecr-public, gitlab:HOST/GROUP, harbor:HOST/PROJECT, artifactory:HOST/REPOSITORY`,
		},
		{
			name:    "doubled_v2",
			args:    []string{"--mirrors", "docker.io=https://m.example.net/cache/v2/hub"},
			wantErr: `flag --mirrors: registry docker.io: mirror "https://m.example.net/cache/v2/hub": mirror URL path /cache/v2/hub would yield a doubled /v2; `,
		},
		{
			name: "metadata_credentials_entry_missing",
			metadata: map[string]string{
				"mirrord-config":      "[registries.\"ghcr.io\"]\nmirrors = [{ url = \"https://m.example.net\", username = \"robot\", password_metadata = \"hub\" }]\n",
				"mirrord-credentials": "quay=s3cret-token\n",
			},
			wantErr: `metadata gce instance attribute mirrord-config: registries."ghcr.io": mirrors[0]: password_metadata: "hub": no entry hub in the mirrord-credentials metadata key (entries: quay)`,
		},
		{
			name: "metadata_credentials_malformed",
			metadata: map[string]string{
				"mirrord-config":      "[registries.\"ghcr.io\"]\nmirrors = [{ url = \"https://m.example.net\", username = \"robot\", password_metadata = \"hub\" }]\n",
				"mirrord-credentials": "hub: s3cret-token\n",
			},
			wantErr: `metadata gce instance attribute mirrord-config: registries."ghcr.io": mirrors[0]: password_metadata: "hub": metadata gce instance attribute mirrord-credentials: line 1 is not NAME=SECRET (line not shown)`,
		},
		{
			name: "docker_unit_flag",
			files: map[string]string{"lib/systemd/system/docker.service": "[Service]\n" +
				"ExecStart=/usr/bin/dockerd -H fd:// --registry-mirror=https://m.example.net\n"},
			wantErr: `docker: `,
		},
	}

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clearEnv(t)
			root := node(t)
			for p, content := range tt.files {
				full := filepath.Join(root, p)
				if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if tt.metadata != nil {
				serveMetadata(t, "gce", tt.metadata)
			}
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			before := snapshot(t, root)

			args := append([]string{"apply", "--root", root, "--no-reload"}, tt.args...)
			code, out, errOut := mirrord(t, args...)
			if code != 1 {
				t.Fatalf("exit %d, want 1; stdout: %s", code, out)
			}
			line := strings.ReplaceAll(errOut, root, "ROOT")
			if strings.Count(line, "\n") != 1 || !strings.HasPrefix(line, "mirrord: "+tt.wantErr) {
				t.Errorf("error\n got: %s\nwant: mirrord: %s...", line, tt.wantErr)
			}
			if strings.Contains(out+errOut, "s3cret") {
				t.Errorf("output shows a secret:\n%s%s", out, errOut)
			}
			assertSame(t, before, snapshot(t, root))
			if _, err := os.Stat(filepath.Join(root, "var/lib/mirrord/state.json")); err == nil {
				t.Error("state.json written despite the error")
			}

			// Plan and status read the metadata too, and fail the same way.
			if tt.metadata == nil {
				return
			}
			for _, cmd := range []string{"plan", "status"} {
				code, out, errOut := mirrord(t, cmd, "--root", root)
				if code != 1 || !strings.Contains(errOut, tt.wantErr) {
					t.Errorf("%s: exit %d, stderr %s; want 1 and the error", cmd, code, errOut)
				}
				if cmd == "status" && !strings.Contains(out, "node:     UNKNOWN: "+tt.wantErr) {
					t.Errorf("status does not give the error as its verdict:\n%s", out)
				}
			}
			assertSame(t, before, snapshot(t, root))
		})
	}
}

// dropWarnings removes "warning:" lines, which tests check on their own.
func dropWarnings(out string) string {
	var keep []string
	for _, l := range strings.SplitAfter(out, "\n") {
		if !strings.HasPrefix(l, "warning: ") {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "")
}

func assertSame(t *testing.T, before, after map[string]string) {
	t.Helper()
	for p, b := range before {
		if after[p] != b {
			t.Errorf("%s changed: %s -> %s", p, b, after[p])
		}
	}
	for p := range after {
		if _, ok := before[p]; !ok {
			t.Errorf("%s appeared", p)
		}
	}
}

func contents(t *testing.T, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(filepath.Join(root, "etc"), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(p)
		fi, _ := d.Info()
		out[p] = string(data) + "\x00" + fi.Mode().String()
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestUsage(t *testing.T) {
	if code, _, errOut := mirrord(t, "frobnicate"); code != 2 ||
		errOut != "mirrord: unknown command \"frobnicate\"; run 'mirrord help'\n" {
		t.Errorf("exit %d, stderr %q", code, errOut)
	}
	if code, out, _ := mirrord(t, "version"); code != 0 || !strings.HasPrefix(out, "mirrord ") {
		t.Errorf("version: exit %d, %q", code, out)
	}
}
