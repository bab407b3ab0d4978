package apply

import (
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pelletier/go-toml/v2"

	"github.com/mirrord/mirrord/internal/config"
	"github.com/mirrord/mirrord/internal/containerd/hoststest"
	"github.com/mirrord/mirrord/internal/spec"
)

// FuzzApplySpec feeds the compact form and a config file through the
// layers and the plan onto a copy of examples/node, and checks what apply
// would write: every hosts.toml decodes strictly in containerd's schema with
// absolute http(s) hosts and known capabilities, config.toml still parses
// with every top-level key it had, and daemon.json is JSON with every key it
// had. Seeds come from the examples and the tests' specs.
func FuzzApplySpec(f *testing.F) {
	root := f.TempDir()
	if err := os.CopyFS(root, os.DirFS("../../examples/node")); err != nil {
		f.Fatal(err)
	}
	if err := os.Remove(filepath.Join(root, config.DefaultFile)); err != nil {
		f.Fatal(err)
	}
	example, err := os.ReadFile("../../examples/node/etc/mirrord/mirrord.toml")
	if err != nil {
		f.Fatal(err)
	}
	oldConfig := readTOML(f, filepath.Join(root, "etc/containerd/config.toml"))
	oldDaemon := readJSON(f, filepath.Join(root, "etc/docker/daemon.json"))

	f.Add("docker.io=http://127.0.0.1:5000", string(example))
	f.Add("*=https://cache.example.net/prefix;quay.io=http://[::1]:5001", "")
	f.Add("", "runtimes = [\"containerd\"]\n[registries.\"ghcr.io\"]\nupstream = false\n"+
		"mirrors = [{ url = \"https://g.example.net\", capabilities = [\"pull\"], "+
		"skip_verify = true }]\n")
	log := slog.New(slog.NewTextHandler(io.Discard, nil))

	f.Fuzz(func(t *testing.T, compact, file string) {
		var s spec.Spec
		if file != "" {
			fl, err := config.ParseFile([]byte(file), "/etc/mirrord/mirrord.toml")
			if err != nil {
				return
			}
			s = fl.Spec
		}
		if compact != "" {
			c, err := spec.ParseCompact(compact, spec.Source{Layer: spec.LayerEnv})
			if err != nil {
				return
			}
			s = s.Overlay(c)
		}

		p, err := Build(config.Config{Root: root, Spec: s}, log)
		if err != nil {
			t.Fatalf("a spec that parsed does not plan: %v", err)
		}
		for _, c := range p.Changes {
			switch {
			case strings.HasSuffix(c.Path, "/hosts.toml"):
				hoststest.Check(t, c.Path, c.New)
			case c.Path == "/etc/containerd/config.toml":
				checkKeys(t, c.Path, oldConfig, decodeTOML(t, c.Path, c.New))
			case c.Path == "/etc/docker/daemon.json":
				checkKeys(t, c.Path, oldDaemon, decodeJSON(t, c.Path, c.New))
			}
		}
	})
}

// checkKeys fails unless every top-level key of old is in new.
func checkKeys(t *testing.T, path string, old, new map[string]any) {
	t.Helper()

	for k := range old {
		if _, ok := new[k]; !ok {
			t.Fatalf("%s lost its key %q", path, k)
		}
	}
}

func decodeTOML(t testing.TB, path string, data []byte) map[string]any {
	t.Helper()

	var m map[string]any
	if err := toml.Unmarshal(data, &m); err != nil {
		t.Fatalf("%s does not parse: %v\n%s", path, err, data)
	}
	return m
}

func decodeJSON(t testing.TB, path string, data []byte) map[string]any {
	t.Helper()

	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatalf("%s does not parse: %v\n%s", path, err, data)
	}
	return m
}

func readTOML(t testing.TB, path string) map[string]any {
	t.Helper()

	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return decodeTOML(t, path, b)
}

func readJSON(t testing.TB, path string) map[string]any {
	t.Helper()

	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return decodeJSON(t, path, b)
}
