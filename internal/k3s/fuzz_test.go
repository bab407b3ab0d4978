package k3s

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"go.yaml.in/yaml/v3"

	"github.com/mirrord/mirrord/internal/spec"
)

// FuzzMerge checks, for any registries.yaml, that Merge either refuses it
// or returns a file that parses again, keeps every mirror and configs entry
// of the operator's that the spec does not take over, holds mirrord's entry
// for the spec's registry, and does not change on a second Merge. It is
// seeded with every golden input.
func FuzzMerge(f *testing.F) {
	seeds, _ := filepath.Glob(filepath.Join("testdata", "merge", "*", "*.yaml"))
	for _, p := range seeds {
		data, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data, "docker.io", "https://mirror.gcr.io", false)
	}
	f.Add([]byte("a: &x {b: 1}\nmirrors: {q: *x}\n"), "*", "http://[::1]:5000/p", true)
	f.Add([]byte("mirrors: {docker.io: {endpoint: [x]}} # c\n"), "quay.io", "https://q", false)

	f.Fuzz(func(t *testing.T, src []byte, host, url string, skipVerify bool) {
		m, err := spec.NewMirror(url)
		if err != nil {
			return
		}
		m.SkipVerify = skipVerify
		s, err := spec.New([]spec.Registry{{Host: host, Mirrors: []spec.Mirror{m},
			Source: spec.Source{Layer: spec.LayerEnv}}})
		if err != nil {
			return
		}

		ed, err := Merge(src, s)
		if err != nil {
			return
		}
		if ed.Changed == bytes.Equal(ed.Data, src) {
			t.Fatalf("Changed = %v, but bytes equal = %v", ed.Changed, !ed.Changed)
		}
		checkMerged(t, src, ed.Data, s)

		again, err := Merge(ed.Data, s)
		if err != nil {
			t.Fatalf("second Merge refuses the first one's output: %v\n%s", err, ed.Data)
		}
		if again.Changed {
			t.Fatalf("second Merge changed the file:\n%s", cmp.Diff(string(ed.Data),
				string(again.Data)))
		}
	})
}

// FuzzParse checks, for any registries.yaml, that Parse refuses it exactly
// when Merge does, and otherwise reports the mirrors and configs hosts k3s
// would read, decoding the file into its schema: the same registries with
// the same endpoints in order, and the same configs hosts. It is seeded
// with every golden input.
func FuzzParse(f *testing.F) {
	seeds, _ := filepath.Glob(filepath.Join("testdata", "merge", "*", "*.yaml"))
	for _, p := range seeds {
		data, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte("x: &a {endpoint: [\"https://m\"]}\nmirrors: {docker.io: *a, '*': *a}\n"))

	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := Parse(data)
		_, mergeErr := Merge(data, spec.Spec{})
		if (err == nil) != (mergeErr == nil) {
			t.Fatalf("Parse: %v; Merge: %v", err, mergeErr)
		}
		if err != nil {
			return
		}

		var sc schema
		if err := yaml.Unmarshal(data, &sc); err != nil {
			t.Fatalf("Parse accepts what k3s's schema refuses: %v", err)
		}
		mirrors := map[string][]string{}
		for _, m := range got.Mirrors {
			if _, dup := mirrors[m.Registry]; dup {
				t.Fatalf("mirrors.%s reported twice", m.Registry)
			}
			mirrors[m.Registry] = m.Endpoints
		}
		want := map[string][]string{}
		for host, m := range sc.Mirrors {
			want[host] = m.Endpoints
		}
		if diff := cmp.Diff(want, mirrors, cmpopts.EquateEmpty()); diff != "" {
			t.Fatalf("mirrors (-k3s +Parse):\n%s", diff)
		}

		var configs, wantConfigs []string
		for _, c := range got.Configs {
			configs = append(configs, c.Host)
		}
		for host := range sc.Configs {
			wantConfigs = append(wantConfigs, host)
		}
		slices.Sort(configs)
		slices.Sort(wantConfigs)
		if !slices.Equal(configs, wantConfigs) {
			t.Fatalf("configs hosts %q; k3s reads %q", configs, wantConfigs)
		}
	})
}
