package k3s

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/mirrord/mirrord/internal/golden"
	"github.com/mirrord/mirrord/internal/spec"
	"github.com/mirrord/mirrord/internal/spec/spectest"
)

var env = spec.Source{Layer: spec.LayerEnv, Name: "MIRRORD_MIRRORS"}

func TestMergeGolden(t *testing.T) {
	withCA := spectest.Mirror(t, "https://mirror.example.net")
	withCA.CAFile = "/etc/mirrord/ca.pem"
	unverified := spectest.Mirror(t, "https://pull.example.net")
	unverified.SkipVerify = true
	hub := []spec.Registry{{Host: "docker.io", Source: env,
		Mirrors: []spec.Mirror{spectest.Mirror(t, "https://mirror.gcr.io")}}}

	tests := []struct {
		name        string
		regs        []spec.Registry
		wantChanged bool
	}{{
		name: "operator_entries",
		regs: []spec.Registry{
			{Host: spec.Wildcard, Source: env, Mirrors: []spec.Mirror{unverified}},
			{Host: "docker.io", Source: env, NoUpstream: true, Mirrors: []spec.Mirror{
				withCA, spectest.Mirror(t, "http://10.0.0.9:5000/hub"),
				spectest.Mirror(t, "https://digests.example.net", spec.Pull)}},
		},
		wantChanged: true,
	}, {
		name:        "empty_file",
		regs:        hub,
		wantChanged: true,
	}, {
		name: "unchanged_kept_byte_for_byte",
		regs: hub,
	}, {
		name:        "remove_all",
		wantChanged: true,
	}, {
		name: "four_space_indent",
		regs: []spec.Registry{{Host: "127.0.0.1:5000", Source: env, Mirrors: []spec.Mirror{
			spectest.Mirror(t, "http://127.0.0.1:5001")}}},
		wantChanged: true,
	}, {
		name:        "null_sections",
		regs:        hub,
		wantChanged: true,
	}, {
		name:        "comments_only",
		regs:        hub,
		wantChanged: true,
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := spec.New(tt.regs)
			if err != nil {
				t.Fatal(err)
			}
			dir := filepath.Join("testdata", "merge", tt.name)
			in := readFile(t, filepath.Join(dir, "in.yaml"))

			ed, err := Merge(in, s)
			if err != nil {
				t.Fatalf("Merge: %v", err)
			}
			golden.Check(t, filepath.Join(dir, "want.yaml"), ed.Data)
			golden.Check(t, filepath.Join(dir, "want.warnings"), []byte(lines(ed.Warnings)))
			if ed.Changed != tt.wantChanged || ed.Changed == bytes.Equal(ed.Data, in) {
				t.Errorf("Changed = %v; want %v (bytes equal: %v)", ed.Changed, tt.wantChanged,
					bytes.Equal(ed.Data, in))
			}

			checkMerged(t, in, ed.Data, s)

			again, err := Merge(ed.Data, s)
			if err != nil {
				t.Fatalf("second Merge: %v", err)
			}
			if again.Changed || !bytes.Equal(again.Data, ed.Data) {
				t.Errorf("second Merge changed the file (-first +second):\n%s",
					cmp.Diff(string(ed.Data), string(again.Data)))
			}
		})
	}
}

// checkMerged asserts, through Parse, that out holds exactly the spec's
// registries as mirrord's entries, and every mirror and configs host of in
// that is not mirrord's and not a spec registry.
func checkMerged(t *testing.T, in, out []byte, s spec.Spec) {
	t.Helper()

	before, err := Parse(in)
	if err != nil {
		t.Fatalf("Parse(in): %v", err)
	}
	after, err := Parse(out)
	if err != nil {
		t.Fatalf("Parse(out): %v\n%s", err, out)
	}

	got := map[string]Mirror{}
	for _, m := range after.Mirrors {
		got[m.Registry] = m
	}
	for _, m := range before.Mirrors {
		if _, ours := s.Lookup(m.Registry); ours || m.Managed {
			continue
		}
		if diff := cmp.Diff(m, got[m.Registry]); diff != "" {
			t.Errorf("operator's mirror %q changed (-in +out):\n%s", m.Registry, diff)
		}
	}
	for _, r := range s.Registries {
		m := got[r.Host]
		if !m.Managed || len(m.Endpoints) != len(r.Mirrors) {
			t.Errorf("registry %q: got %+v; want mirrord's entry with %d endpoints",
				r.Host, m, len(r.Mirrors))
		}
	}
	for _, m := range after.Mirrors {
		if _, ok := s.Lookup(m.Registry); m.Managed && !ok {
			t.Errorf("mirrord's entry %q left behind", m.Registry)
		}
	}
	kept := map[string]bool{}
	for _, c := range after.Configs {
		kept[c.Host] = !c.Managed
	}
	for _, c := range before.Configs {
		if !c.Managed && !kept[c.Host] {
			t.Errorf("operator's configs entry %q lost", c.Host)
		}
	}
}

func TestMergeRefuses(t *testing.T) {
	tests := []struct{ name, in, wantErr string }{
		{"not_yaml", "mirrors:\n  docker.io: [\n", "parse registries.yaml:"},
		{"two_documents", "mirrors: {}\n---\nconfigs: {}\n", "more than one YAML document"},
		{"top_level_list", "- docker.io\n", "line 1: the top level is a sequence"},
		{"mirrors_list", "mirrors:\n  - docker.io\n", "parse registries.yaml:"},
		{"endpoint_string", "mirrors:\n  docker.io:\n    endpoint: https://m\n",
			"parse registries.yaml:"},
		{"duplicate_mirror", "mirrors:\n  a: {}\n  a: {}\n", "already defined"},
		{"alias_section", "x: &m {}\nmirrors: *m\n", "mirrors is an alias"},
		{"merge_key_top", "b: &b {mirrors: {quay.io: {endpoint: [q]}}}\n<<: *b\n",
			"line 2: the top level holds a YAML merge key (<<)"},
		{"merge_key_mirrors", "x: &a {quay.io: {endpoint: [q]}}\nmirrors: {<<: *a}\n",
			"line 2: mirrors holds a YAML merge key (<<)"},
		{"alias_key", "x: &h docker.io\nmirrors: {*h: {endpoint: [q]}}\n",
			"line 2: mirrors has a key that is an alias (*h)"},
		{"tls_not_map", "configs:\n  h:\n    tls: yes\n", "parse registries.yaml:"},
	}
	s, err := spec.New([]spec.Registry{{Host: "docker.io", Source: env,
		Mirrors: []spec.Mirror{spectest.Mirror(t, "https://mirror.gcr.io")}}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Merge([]byte(tt.in), s)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Merge error = %v; want it to contain %q", err, tt.wantErr)
			}
			if _, perr := Parse([]byte(tt.in)); perr == nil {
				t.Errorf("Parse accepted what Merge refuses")
			}
		})
	}
}

func TestDetect(t *testing.T) {
	root := t.TempDir()
	if got := Detect(root); len(got) != 0 {
		t.Errorf("Detect(empty root) = %v", got)
	}

	write(t, filepath.Join(root, "etc/systemd/system/k3s-agent.service"), "[Service]\n")
	write(t, filepath.Join(root, "opt/rke2/bin/rke2"), "#!/bin/true\n")
	got := Detect(root)
	if len(got) != 2 || got[0].Name != "k3s" || got[1].Name != "rke2" {
		t.Errorf("Detect = %v; want k3s and rke2", got)
	}
}

func write(t *testing.T, path, data string) {
	t.Helper()

	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

func lines(ss []string) string {
	if len(ss) == 0 {
		return ""
	}
	return strings.Join(ss, "\n") + "\n"
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()

	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}
