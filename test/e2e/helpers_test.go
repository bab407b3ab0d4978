package e2e

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// The tests in this file check the helpers of the end-to-end tests; they
// need no root and run without MIRRORD_E2E.

func TestParseAccessLog(t *testing.T) {
	log := strings.Join([]string{
		`127.0.0.1 - - [03/Dec/2026:19:53:46 +0000] "GET /v2/ HTTP/1.1" 200 2 "" "skopeo/1.9.3"`,
		`time="2026-12-03T19:53:45Z" level=info msg="not an access line"`,
		`127.0.0.1 - - [03/Dec/2026:19:53:47 +0000] "HEAD /v2/library/x/manifests/v1?ns=docker.io HTTP/1.1" 200 528 "" "containerd/2.2.9+unknown"`,
		`127.0.0.1 - - [03/Dec/2026:19:53:48 +0000] "HEAD /v2/library/x/manifests/v1 HTTP/1.1" 404 0 "" "docker/20.10.24+dfsg1 go/go1.19.8 UpstreamClient(Docker-Client/28.2.2 \\(linux\\))"`,
	}, "\n")

	got, err := parseAccessLog(strings.NewReader(log))
	if err != nil {
		t.Fatal(err)
	}
	want := []accessEntry{
		{Method: "GET", Path: "/v2/", Status: 200, UserAgent: "skopeo/1.9.3"},
		{Method: "HEAD", Path: "/v2/library/x/manifests/v1?ns=docker.io", Status: 200,
			UserAgent: "containerd/2.2.9+unknown"},
		{Method: "HEAD", Path: "/v2/library/x/manifests/v1", Status: 404,
			UserAgent: `docker/20.10.24+dfsg1 go/go1.19.8 UpstreamClient(Docker-Client/28.2.2 \\(linux\\))`},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("parseAccessLog (-want +got):\n%s", diff)
	}

	if n := len(matching(got, "HEAD", "/v2/library/x/manifests/v1?ns=docker.io", "containerd/")); n != 1 {
		t.Errorf("matching containerd HEAD: %d entries, want 1", n)
	}
	if n := len(matching(got, "", "/v2/library/x/manifests/v1", "containerd/")); n != 0 {
		t.Errorf("matching without the query: %d entries, want 0", n)
	}
}

func TestSetTOMLKey(t *testing.T) {
	cfg := strings.Join([]string{
		"version = 3",
		"[plugins]",
		"  [plugins.'io.containerd.nri.v1.nri']",
		"    disable = false",
		"    socket_path = '/var/run/nri/nri.sock'",
		"",
		"    [plugins.'io.containerd.nri.v1.nri'.default_validator]",
		"      enable = false",
		"  [plugins.'io.containerd.other']",
		"    disable = false",
	}, "\n")

	got := setTOMLKey(t, cfg, "plugins.'io.containerd.nri.v1.nri'", "disable", "true")
	want := strings.Replace(cfg, "    disable = false", "    disable = true", 1)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("setTOMLKey (-want +got):\n%s", diff)
	}
}

func TestWriteImageLayout(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "prog")
	if err := os.WriteFile(bin, []byte("#!/bin/true\n"), 0o755); err != nil {
		t.Fatal(err)
	}

	layout := filepath.Join(dir, "layout")
	if err := writeImageLayout(layout, "v1", bin); err != nil {
		t.Fatal(err)
	}

	var index struct{ Manifests []descriptor }
	readJSON(t, filepath.Join(layout, "index.json"), &index)
	if len(index.Manifests) != 1 {
		t.Fatalf("index.json has %d manifests, want 1", len(index.Manifests))
	}
	if got := index.Manifests[0].Annotations["org.opencontainers.image.ref.name"]; got != "v1" {
		t.Errorf("ref.name = %q, want v1", got)
	}

	var manifest struct {
		Config descriptor
		Layers []descriptor
	}
	readBlob(t, layout, index.Manifests[0], &manifest)
	var config struct {
		RootFS struct {
			DiffIDs []string `json:"diff_ids"`
		} `json:"rootfs"`
	}
	readBlob(t, layout, manifest.Config, &config)

	if len(manifest.Layers) != 1 || len(config.RootFS.DiffIDs) != 1 {
		t.Fatalf("want one layer and one diff_id, got %d and %d",
			len(manifest.Layers), len(config.RootFS.DiffIDs))
	}
	layer := blob(t, layout, manifest.Layers[0])
	zr, err := gzip.NewReader(bytes.NewReader(layer))
	if err != nil {
		t.Fatal(err)
	}
	layerTar, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	if got := digest(layerTar); got != config.RootFS.DiffIDs[0] {
		t.Errorf("diff_id = %s, want the uncompressed layer's %s", config.RootFS.DiffIDs[0], got)
	}

	hdr, err := tar.NewReader(bytes.NewReader(layerTar)).Next()
	if err != nil {
		t.Fatal(err)
	}
	if hdr.Name != "hello" || hdr.Mode != 0o755 {
		t.Errorf("layer entry %s mode %o, want hello mode 755", hdr.Name, hdr.Mode)
	}
}

// blob reads the blob d names from an OCI layout and checks its digest and
// size.
func blob(t *testing.T, layout string, d descriptor) []byte {
	t.Helper()

	hex, ok := strings.CutPrefix(d.Digest, "sha256:")
	if !ok {
		t.Fatalf("digest %q is not sha256", d.Digest)
	}
	b, err := os.ReadFile(filepath.Join(layout, "blobs", "sha256", hex))
	if err != nil {
		t.Fatal(err)
	}
	if digest(b) != d.Digest || int64(len(b)) != d.Size {
		t.Fatalf("blob %s: digest %s size %d, want size %d", d.Digest, digest(b), len(b), d.Size)
	}
	return b
}

// readBlob decodes the JSON blob d names into v.
func readBlob(t *testing.T, layout string, d descriptor, v any) {
	t.Helper()

	if err := json.Unmarshal(blob(t, layout, d), v); err != nil {
		t.Fatalf("blob %s: %v", d.Digest, err)
	}
}

// readJSON decodes the JSON file at path into v.
func readJSON(t *testing.T, path string, v any) {
	t.Helper()

	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}
