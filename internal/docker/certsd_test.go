package docker

import (
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/mirrord/mirrord/internal/containerd"
	"github.com/mirrord/mirrord/internal/containerd/hoststest"
	"github.com/mirrord/mirrord/internal/golden"
	"github.com/mirrord/mirrord/internal/spec"
	"github.com/mirrord/mirrord/internal/spec/spectest"
)

// TestCertsDGolden renders certs.d for a spec over a root that may hold an
// operator's files (testdata/certsd/<case>/root), and compares the files with
// testdata/certsd/<case>/want and the warnings with want.warnings. The
// operator's files are never among those written.
func TestCertsDGolden(t *testing.T) {
	env := spec.Source{Layer: spec.LayerEnv, Name: "MIRRORD_MIRRORS"}
	tests := []struct {
		name string
		regs []spec.Registry
	}{{
		name: "every_registry",
		regs: []spec.Registry{
			{Host: spec.Wildcard, Source: env, Mirrors: []spec.Mirror{
				spectest.Mirror(t, "https://pull-through.example.net")}},
			{Host: "docker.io", Source: env, Mirrors: []spec.Mirror{
				spectest.Mirror(t, "https://cr.example.net/mirror"),
				spectest.Mirror(t, "http://10.0.0.9:5000")}},
			{Host: "quay.io", Source: env, Mirrors: []spec.Mirror{
				spectest.Mirror(t, "https://quay-cache.example.net", spec.Pull)}},
		},
	}, {
		name: "operator_certs_kept",
		regs: []spec.Registry{
			{Host: "docker.io", Source: env, Mirrors: []spec.Mirror{
				spectest.Mirror(t, "https://mirror.gcr.io")}},
			{Host: "registry.internal.example:5000", Source: env, Mirrors: []spec.Mirror{
				spectest.Mirror(t, "https://replica.internal.example:5000")}},
			{Host: "ghcr.io", Source: env, Mirrors: []spec.Mirror{
				spectest.Mirror(t, "https://ghcr-cache.example.net")}},
		},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := spec.New(tt.regs)
			if err != nil {
				t.Fatal(err)
			}
			dir := filepath.Join("testdata", "certsd", tt.name)
			root := filepath.Join(dir, "root")
			before := treeOf(t, root)

			files, warnings, err := CertsD(root, s)
			if err != nil {
				t.Fatalf("CertsD: %v", err)
			}
			golden.Check(t, filepath.Join(dir, "want.warnings"), []byte(lines(warnings)))

			got := map[string]string{}
			for _, f := range files {
				rel, ok := strings.CutPrefix(f.Path, CertsDir+"/")
				if !ok || filepath.Base(f.Path) != "hosts.toml" {
					t.Fatalf("file %s is not CertsDir/<host>/hosts.toml", f.Path)
				}
				hoststest.Check(t, f.Path, f.Data)
				if _, err := containerd.ParseHosts(f.Data); err != nil {
					t.Errorf("%s: %v", f.Path, err)
				}
				got[rel] = string(f.Data)
				want := filepath.Join(dir, "want", rel)
				golden.Check(t, want, f.Data)
			}
			if wantFiles := treeOf(t, filepath.Join(dir, "want")); !golden.Updating() {
				if diff := cmp.Diff(keys(wantFiles), keys(got)); diff != "" {
					t.Errorf("files (-want +got):\n%s", diff)
				}
			}

			for rel, data := range before {
				if g, ok := got[rel]; ok && rel != "" && !strings.HasSuffix(rel, "hosts.toml") {
					t.Errorf("operator's %s overwritten with %q (was %q)", rel, g, data)
				}
			}
		})
	}
}

// treeOf returns the files under dir, by path relative to the certs.d
// directory inside it when there is one, else to dir.
func treeOf(t *testing.T, dir string) map[string]string {
	t.Helper()

	base := dir
	if fi, err := os.Stat(filepath.Join(dir, CertsDir)); err == nil && fi.IsDir() {
		base = filepath.Join(dir, CertsDir)
	}
	out := map[string]string{}
	err := filepath.WalkDir(base, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(base, p)
		data, err := os.ReadFile(p)
		out[rel] = string(data)
		return err
	})
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return out
}

func keys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func lines(ss []string) string {
	if len(ss) == 0 {
		return ""
	}
	return strings.Join(ss, "\n") + "\n"
}

func TestStoreFromInfo(t *testing.T) {
	tests := []struct {
		name, info string
		want       ImageStore
		wantErr    bool
	}{
		{"containerd", `{"Driver":"overlayfs","DriverStatus":[["driver-type",` +
			`"io.containerd.snapshotter.v1"]]}`, StoreContainerd, false},
		{"overlay2", `{"Driver":"overlay2","DriverStatus":[["Backing Filesystem","extfs"],` +
			`["Supports d_type","true"]]}`, StoreClassic, false},
		{"vfs_no_status", `{"Driver":"vfs","DriverStatus":null}`, StoreClassic, false},
		{"empty", `{}`, StoreUnknown, false},
		{"not_json", `<html>`, StoreUnknown, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := StoreFromInfo([]byte(tt.info))
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Errorf("StoreFromInfo = %q, %v; want %q, error %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestDetectImageStore(t *testing.T) {
	on := `{"features": {"containerd-snapshotter": true}, "debug": true}`
	off := `{"features": {"containerd-snapshotter": false}}`
	tests := []struct {
		name    string
		json    string
		v       Version
		hint    ImageStore
		want    ImageStore
		wantErr string
	}{
		{"hint_wins", off, Version{28, 1}, StoreContainerd, StoreContainerd, ""},
		{"feature_on", on, Version{}, StoreUnknown, StoreContainerd, ""},
		{"feature_off_29", off, Version{29, 0}, StoreUnknown, StoreClassic, ""},
		{"no_file_28", "", Version{28, 3}, StoreUnknown, StoreClassic, ""},
		{"other_features_27", `{"features":{"buildkit":true}}`, Version{27, 5}, StoreUnknown,
			StoreClassic, ""},
		{"no_file_29", "", Version{29, 1}, StoreUnknown, StoreUnknown, ""},
		{"no_file_unknown_version", "", Version{}, StoreUnknown, StoreUnknown, ""},
		{"feature_string", `{"features":{"containerd-snapshotter":"true"}}`, Version{29, 0},
			StoreUnknown, StoreUnknown, "features.containerd-snapshotter is true; want true or false"},
		{"features_not_object", `{"features":[]}`, Version{29, 0}, StoreUnknown, StoreUnknown,
			"parse daemon.json: features:"},
		{"broken", `{"features":`, Version{29, 0}, StoreUnknown, StoreUnknown,
			"parse daemon.json: line 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, how, err := DetectImageStore([]byte(tt.json), tt.v, tt.hint)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v; want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want || how == "" {
				t.Errorf("DetectImageStore = %q, %q, %v; want %q", got, how, err, tt.want)
			}
		})
	}
}

func TestReadsHostsTOML(t *testing.T) {
	tests := []struct {
		v    Version
		st   ImageStore
		want bool
	}{
		{Version{28, 0}, StoreContainerd, true},
		{Version{29, 1}, StoreContainerd, true},
		{Version{27, 5}, StoreContainerd, false},
		{Version{29, 1}, StoreClassic, false},
		{Version{20, 10}, StoreUnknown, false},
		{Version{29, 1}, StoreUnknown, true},
		{Version{}, StoreContainerd, true},
		{Version{}, StoreUnknown, true},
	}
	for _, tt := range tests {
		got, why := ReadsHostsTOML(tt.v, tt.st)
		if got != tt.want || why == "" {
			t.Errorf("ReadsHostsTOML(%s, %q) = %v, %q; want %v", tt.v, tt.st, got, why, tt.want)
		}
	}
}
