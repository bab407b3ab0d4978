package registries

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

var (
	envSource  = spec.Source{Layer: spec.LayerEnv, Name: "MIRRORD_MIRRORS"}
	fileSource = spec.Source{Layer: spec.LayerFile, Name: "/etc/mirrord/mirrord.toml"}
)

func TestRenderGolden(t *testing.T) {
	withCA := spectest.Mirror(t, "https://cache.internal.example:8443")
	withCA.CAFile = "/etc/mirrord/ca/internal.pem"
	unverified := spectest.Mirror(t, "https://10.0.0.5:5000")
	unverified.SkipVerify = true

	tests := []struct {
		name string
		regs []spec.Registry
	}{{
		name: "docker_io_two_mirrors",
		regs: []spec.Registry{{Host: "docker.io", Source: envSource, Mirrors: []spec.Mirror{
			spectest.Mirror(t, "https://mirror.gcr.io"), spectest.Mirror(t, "http://10.0.0.9:5000")}}},
	}, {
		name: "pull_only_first",
		regs: []spec.Registry{{Host: "docker.io", Source: fileSource, Mirrors: []spec.Mirror{
			spectest.Mirror(t, "https://untrusted.example.net", spec.Pull),
			spectest.Mirror(t, "https://mirror.gcr.io")}}},
	}, {
		name: "sorted_wildcard_skipped",
		regs: []spec.Registry{
			{Host: spec.Wildcard, Source: fileSource, Mirrors: []spec.Mirror{
				spectest.Mirror(t, "https://pull-through.example.net")}},
			{Host: "registry.k8s.io", Source: fileSource, Mirrors: []spec.Mirror{
				spectest.Mirror(t, "https://k8s.example.net")}},
			{Host: "127.0.0.1:5000", Source: spec.Source{Layer: spec.LayerFlag,
				Name: "--mirror\nx"}, Mirrors: []spec.Mirror{spectest.Mirror(t, "http://127.0.0.1:5001")}},
			{Host: "quay.io", Source: envSource, Mirrors: []spec.Mirror{
				spectest.Mirror(t, "https://quay-mirror.example.net")}},
			{Host: "docker.io", Source: envSource, Mirrors: []spec.Mirror{
				spectest.Mirror(t, "https://mirror.gcr.io")}},
		},
	}, {
		name: "no_upstream",
		regs: []spec.Registry{{Host: "quay.io", Source: fileSource, NoUpstream: true,
			Mirrors: []spec.Mirror{spectest.Mirror(t, "https://quay-a.example.net"),
				spectest.Mirror(t, "http://quay-b.example.net:5000")}}},
	}, {
		name: "no_upstream_pull_only_last",
		regs: []spec.Registry{{Host: "ghcr.io", Source: fileSource, NoUpstream: true,
			Mirrors: []spec.Mirror{spectest.Mirror(t, "https://ghcr-cache.example.net", spec.Pull)}}},
	}, {
		name: "left_out_and_warned",
		regs: []spec.Registry{
			{Host: "docker.io", Source: envSource, Mirrors: []spec.Mirror{
				spectest.Mirror(t, "https://cr.example.net/mirror"),
				spectest.Mirror(t, "https://resolver.example.net", spec.Resolve),
				withCA, unverified}},
			{Host: "gcr.io", Source: envSource, Mirrors: []spec.Mirror{
				spectest.Mirror(t, "https://cr.example.net/gcr")}},
		},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := spec.New(tt.regs)
			if err != nil {
				t.Fatal(err)
			}
			got, warnings := Render(s)
			dir := filepath.Join("testdata", "render", tt.name)
			golden.CheckOptional(t, filepath.Join(dir, "want.conf"), got)
			golden.CheckOptional(t, filepath.Join(dir, "want.warnings"), []byte(joinLines(warnings)))

			f, err := Parse(got)
			if err != nil {
				t.Fatalf("Parse(Render): %v\n%s", err, got)
			}
			if !f.Managed {
				t.Errorf("Parse(Render).Managed = false")
			}
			checkAgainstSpec(t, s, f)

			again, _ := Render(s)
			if !bytes.Equal(again, got) {
				t.Errorf("second Render differs")
			}
		})
	}
}

// checkAgainstSpec asserts that every registry of f comes from s, with the
// mirrors of s that registries.conf can express, in spec order.
func checkAgainstSpec(t *testing.T, s spec.Spec, f File) {
	t.Helper()

	for _, r := range f.Registries {
		sr, ok := s.Lookup(r.Prefix)
		if !ok {
			t.Errorf("registry %q is not in the spec", r.Prefix)
			continue
		}
		var want []string
		for _, m := range sr.Mirrors {
			if m.Path() == "" && m.Has(spec.Pull) {
				want = append(want, m.Host())
			}
		}
		got := []string{}
		for _, m := range r.Mirrors {
			got = append(got, m.Location)
		}
		if sr.NoUpstream {
			got = append(got, r.Location)
		} else if r.Location != sr.Host {
			t.Errorf("registry %q location = %q; want the registry itself", r.Prefix, r.Location)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("registry %q mirrors (-want +got):\n%s", r.Prefix, diff)
		}
	}
}

func joinLines(lines []string) string {
	if len(lines) == 0 {
		return ""
	}
	return strings.Join(lines, "\n") + "\n"
}

func TestRenderNothing(t *testing.T) {
	tests := []struct {
		name string
		regs []spec.Registry
		want int // warnings
	}{
		{"empty", nil, 0},
		{"only_wildcard", []spec.Registry{{Host: spec.Wildcard, Source: envSource,
			Mirrors: []spec.Mirror{spectest.Mirror(t, "https://m.example.net")}}}, 1},
		{"only_path_mirrors", []spec.Registry{{Host: "docker.io", Source: envSource,
			Mirrors: []spec.Mirror{spectest.Mirror(t, "https://m.example.net/hub")}}}, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := spec.New(tt.regs)
			if err != nil {
				t.Fatal(err)
			}
			got, warnings := Render(s)
			if got != nil {
				t.Errorf("Render = %q; want nil (no drop-in)", got)
			}
			if len(warnings) != tt.want {
				t.Errorf("warnings = %q; want %d", warnings, tt.want)
			}
		})
	}
}

func TestParse(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    File
		wantErr string
	}{{
		name: "prefix_defaults_to_location",
		in: "unqualified-search-registries = [\"docker.io\"]\n" +
			"[[registry]]\nlocation = \"quay.io/\"\n" +
			"[[registry.mirror]]\nlocation = \"q.example.net/\"\npull-from-mirror = \"tag-only\"\n",
		want: File{Registries: []Registry{{Prefix: "quay.io", Location: "quay.io",
			Mirrors: []Mirror{{Location: "q.example.net", PullFromMirror: PullTagOnly}}}}},
	}, {
		name: "wildcard_prefix_without_location",
		in:   "[[registry]]\nprefix = \"*.example.com\"\nblocked = true\n",
		want: File{Registries: []Registry{{Prefix: "*.example.com", Blocked: true}}},
	}, {
		name: "aliases_and_empty",
		in:   "[aliases]\n\"alpine\" = \"docker.io/library/alpine\"\n",
		want: File{},
	}, {
		name:    "not_toml",
		in:      "[[registry]\nlocation = \"a\"\n",
		wantErr: "parse registries.conf drop-in: line 1:",
	}, {
		name:    "wrong_type",
		in:      "[[registry]]\nlocation = \"a\"\ninsecure = \"yes\"\n",
		wantErr: "parse registries.conf drop-in: line 3:",
	}, {
		name:    "v1",
		in:      "[registries.search]\nregistries = [\"docker.io\"]\n",
		wantErr: "version 1 format",
	}, {
		name:    "scheme",
		in:      "[[registry]]\nlocation = \"https://quay.io\"\n",
		wantErr: "[[registry]] #1: location \"https://quay.io\" has a URL scheme",
	}, {
		name:    "no_location",
		in:      "[[registry]]\nprefix = \"quay.io\"\n",
		wantErr: "prefix \"quay.io\" has no location",
	}, {
		name:    "nothing",
		in:      "[[registry]]\ninsecure = true\n",
		wantErr: "neither prefix nor location",
	}, {
		name:    "pull_from_mirror_on_registry",
		in:      "[[registry]]\nlocation = \"a\"\npull-from-mirror = \"all\"\n",
		wantErr: "pull-from-mirror belongs in its [[registry.mirror]] tables",
	}, {
		name:    "mirror_without_location",
		in:      "[[registry]]\nlocation = \"a\"\n[[registry.mirror]]\ninsecure = true\n",
		wantErr: "prefix \"a\" mirror #1: location is not set",
	}, {
		name: "unknown_pull_from_mirror",
		in: "[[registry]]\nlocation = \"a\"\n[[registry.mirror]]\nlocation = \"m\"\n" +
			"pull-from-mirror = \"digests\"\n",
		wantErr: "pull-from-mirror \"digests\" is not known",
	}, {
		name: "digest_only_twice",
		in: "[[registry]]\nlocation = \"a\"\nmirror-by-digest-only = true\n" +
			"[[registry.mirror]]\nlocation = \"m\"\npull-from-mirror = \"all\"\n",
		wantErr: "set one of them",
	}, {
		name: "conflicting_insecure",
		in: "[[registry]]\nprefix = \"a/x\"\nlocation = \"a\"\n" +
			"[[registry]]\nprefix = \"a/y\"\nlocation = \"a\"\ninsecure = true\n",
		wantErr: "location \"a\" is given twice",
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse([]byte(tt.in))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Parse error = %v; want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Parse (-want +got):\n%s", diff)
			}
		})
	}
}

// TestEffectiveOperatorKept reads an operator's main file and drop-in next
// to mirrord's, merged as containers/image merges them: the operator's
// entries for registries mirrord does not manage stay as they were, and
// mirrord's entry replaces the operator's for docker.io.
func TestEffectiveOperatorKept(t *testing.T) {
	dir := filepath.Join("testdata", "effective")
	var files []File
	for _, name := range []string{"registries.conf", "50-operator.conf"} {
		f, err := Parse(readFile(t, filepath.Join(dir, name)))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		files = append(files, f)
	}

	s, err := spec.New([]spec.Registry{{Host: "docker.io", Source: envSource,
		Mirrors: []spec.Mirror{spectest.Mirror(t, "https://mirror.gcr.io")}}})
	if err != nil {
		t.Fatal(err)
	}
	ours, _ := Render(s)
	golden.CheckOptional(t, filepath.Join(dir, "90-mirrord.conf"), ours)
	mf, err := Parse(ours)
	if err != nil {
		t.Fatal(err)
	}

	got := Effective(append(files, mf)...)
	golden.CheckOptional(t, filepath.Join(dir, "want.txt"), []byte(describe(got)))

	for _, r := range files[1].Registries {
		if r.Prefix == "docker.io" {
			continue
		}
		if i := indexPrefix(got, r.Prefix); i < 0 || !cmp.Equal(got[i], r) {
			t.Errorf("operator's entry %q changed or lost", r.Prefix)
		}
	}
	if i := indexPrefix(got, "docker.io"); i < 0 || !cmp.Equal(got[i], mf.Registries[0]) {
		t.Errorf("docker.io is not mirrord's entry")
	}
}

func indexPrefix(regs []Registry, prefix string) int {
	for i, r := range regs {
		if r.Prefix == prefix {
			return i
		}
	}
	return -1
}

// describe renders registries one line each, for a golden file.
func describe(regs []Registry) string {
	var b strings.Builder
	for _, r := range regs {
		b.WriteString(r.Prefix + " -> " + r.Location)
		if r.Insecure {
			b.WriteString(" insecure")
		}
		if r.Blocked {
			b.WriteString(" blocked")
		}
		for _, m := range r.Mirrors {
			b.WriteString(" | " + m.Location)
			if m.Insecure {
				b.WriteString(" insecure")
			}
			if m.PullFromMirror != "" {
				b.WriteString(" " + m.PullFromMirror)
			}
		}
		b.WriteString("\n")
	}
	return b.String()
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()

	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}
