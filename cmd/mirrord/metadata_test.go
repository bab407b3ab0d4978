package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mirrord/mirrord/internal/metadata"
	"github.com/mirrord/mirrord/internal/metadata/emulator"
)

// The values the emulators hold in the tests of this file: mirrord-config
// names quay.io (a legacy registry.mirrors table of the sample node, which
// metadata replaces) and registry.k8s.io (which the node's file replaces);
// mirrord-mirrors names ghcr.io.
const (
	mdConfig = "[registries.\"quay.io\"]\nmirrors = [\"https://quay-md.example.net\"]\n\n" +
		"[registries.\"registry.k8s.io\"]\nmirrors = [\"https://k8s-md.example.net\"]\n"
	mdMirrors = "ghcr.io=https://ghcr-md.example.net"
)

// serveMetadata starts the emulator of provider on 127.0.0.1 with the
// keys set (an empty value is left unset), points MIRRORD_METADATA and
// MIRRORD_METADATA_ENDPOINT at it, and returns a func that sets a key
// anew.
func serveMetadata(t *testing.T, provider string, keys map[string]string) func(key, value string) {
	t.Helper()
	var (
		h    http.Handler
		set  func(key, value string)
		stop func()
	)
	switch provider {
	case metadata.GCE, metadata.Yandex:
		g := emulator.NewGCE()
		if provider == metadata.Yandex {
			g = emulator.NewYandex()
		}
		h, set, stop = g, g.SetInstance, g.Close
	case metadata.AWS:
		e := emulator.NewEC2()
		h, set = e, e.SetTag
	case metadata.Azure:
		a := emulator.NewAzure()
		h, set = a, a.SetTag
	case metadata.OpenStack:
		o := emulator.NewOpenStack()
		h, set = o, o.SetMeta
	default:
		t.Fatalf("no emulator for %q", provider)
	}
	for k, v := range keys {
		if v != "" {
			set(k, v)
		}
	}

	srv := httptest.NewServer(h)
	t.Cleanup(func() {
		if stop != nil {
			stop() // answers the held long polls
		}
		srv.Close()
	})
	t.Setenv("MIRRORD_METADATA", provider)
	t.Setenv("MIRRORD_METADATA_ENDPOINT", srv.URL)
	return set
}

// writeInstanceData writes cloud-init's instance-data.json under root with
// the keys as meta-data of a NoCloud datasource.
func writeInstanceData(t *testing.T, root string, keys map[string]string) {
	t.Helper()
	doc, err := json.Marshal(map[string]any{
		"v1": map[string]any{"cloud_name": "nocloud", "platform": "nocloud"},
		"ds": map[string]any{"meta_data": keys},
	})
	if err != nil {
		t.Fatal(err)
	}
	writeNodeFile(t, root, "run/cloud-init/instance-data.json", string(doc))
}

// writeNodeFile writes content to root/rel, making the directories.
func writeNodeFile(t *testing.T, root, rel, content string) {
	t.Helper()
	full := filepath.Join(root, rel)
	if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestApplyFromMetadata applies the sample node with both keys set in each
// provider's metadata, emulated on loopback or, for cloud-init, in its
// saved instance data, and checks what landed in containerd's hosts.toml
// files and what plan and status say of the metadata.
func TestApplyFromMetadata(t *testing.T) {
	keys := map[string]string{metadata.KeyConfig: mdConfig, metadata.KeyMirrors: mdMirrors}
	tests := []struct {
		name     string
		provider string // MIRRORD_METADATA
		setup    func(t *testing.T, root string)
		source   string // where mirrord-mirrors came from
	}{
		{name: "gce", provider: "gce", source: "gce instance attribute mirrord-mirrors"},
		{name: "yandex", provider: "yandex", source: "yandex instance attribute mirrord-mirrors"},
		{name: "aws_imdsv2", provider: "aws", source: "aws instance tag mirrord-mirrors"},
		{name: "azure", provider: "azure", source: "azure tag mirrord-mirrors"},
		{name: "openstack", provider: "openstack", source: "openstack meta mirrord-mirrors"},
		{
			name:     "cloud_init",
			provider: "cloud-init",
			setup:    func(t *testing.T, root string) { writeInstanceData(t, root, keys) },
			source:   "cloud-init /run/cloud-init/instance-data.json ds.meta_data.mirrord-mirrors",
		},
		{
			name:     "auto_gce_from_dmi",
			provider: "auto",
			setup: func(t *testing.T, root string) {
				serveMetadata(t, metadata.GCE, keys)
				writeNodeFile(t, root, "sys/class/dmi/id/product_name", "Google Compute Engine\n")
			},
			source: "gce instance attribute mirrord-mirrors",
		},
	}

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clearEnv(t)
			root := node(t)
			switch {
			case tt.setup != nil:
				tt.setup(t, root)
			default:
				serveMetadata(t, tt.provider, keys)
			}
			t.Setenv("MIRRORD_METADATA", tt.provider)

			code, out, errOut := mirrord(t, "plan", "--root", root)
			if code != 0 {
				t.Fatalf("plan exit %d: %s", code, errOut)
			}
			provider := strings.Fields(tt.source)[0]
			for _, want := range []string{
				"metadata: " + provider + ": mirrord-config (",
				fmt.Sprintf("metadata: %s: mirrord-mirrors (%s, %d bytes): 1 registry, "+
					"1 in effect\n", provider, tt.source, len(mdMirrors)),
			} {
				if !strings.Contains(out, want) {
					t.Errorf("plan output lacks %q:\n%s", want, out)
				}
			}

			code, _, errOut = mirrord(t, "apply", "--root", root, "--no-reload")
			if code != 0 {
				t.Fatalf("apply exit %d: %s", code, errOut)
			}
			certs := filepath.Join(root, "etc/containerd/certs.d")
			for host, want := range map[string]string{
				"ghcr.io":         "https://ghcr-md.example.net",
				"quay.io":         "https://quay-md.example.net",
				"registry.k8s.io": "https://cache.example.net/k8s", // the file wins
				"docker.io":       "https://hub-mirror.example.net",
			} {
				got := read(t, filepath.Join(certs, host, "hosts.toml"))
				if !strings.Contains(got, want) {
					t.Errorf("%s/hosts.toml lacks %s:\n%s", host, want, got)
				}
			}

			code, out, errOut = mirrord(t, "status", "--root", root)
			if code != 0 {
				t.Fatalf("status exit %d: %s\n%s", code, errOut, out)
			}
			for _, want := range []string{
				"node:     in sync\nmetadata: " + provider + ": mirrord-config (",
				"): 2 registries, 1 in effect\n",
				"ghcr.io              https://ghcr-md.example.net  [metadata " + tt.source + "]",
			} {
				if !strings.Contains(out, want) {
					t.Errorf("status lacks %q:\n%s", want, out)
				}
			}
		})
	}
}

// TestStatusJSONMetadata checks the metadata part of status --json, and
// that a node without metadata says why.
func TestStatusJSONMetadata(t *testing.T) {
	clearEnv(t)
	root := node(t)
	serveMetadata(t, metadata.GCE, map[string]string{metadata.KeyMirrors: mdMirrors})

	code, out, errOut := mirrord(t, "status", "--root", root, "--json")
	if code != 0 {
		t.Fatalf("status exit %d: %s", code, errOut)
	}
	var got struct {
		InSync   bool `json:"in_sync"`
		Metadata struct {
			Provider string
			Keys     []struct {
				Key        string
				Source     string
				Bytes      int
				Registries []string
				InEffect   []string `json:"in_effect"`
			}
		}
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	md := got.Metadata
	if md.Provider != "gce" || len(md.Keys) != 1 || md.Keys[0].Key != "mirrord-mirrors" ||
		md.Keys[0].Bytes != len(mdMirrors) || len(md.Keys[0].InEffect) != 1 {
		t.Errorf("metadata in status --json: %+v\n%s", md, out)
	}

	t.Setenv("MIRRORD_METADATA", "none")
	code, out, errOut = mirrord(t, "plan", "--root", root)
	if code != 0 || !strings.Contains(out, "metadata: none: turned off (provider none)\n") {
		t.Errorf("plan with metadata off (exit %d, %s):\n%s", code, errOut, out)
	}
}

// TestMetadataServiceDown checks that a service that does not answer is
// "nothing from metadata": apply goes on with the other layers.
func TestMetadataServiceDown(t *testing.T) {
	clearEnv(t)
	root := node(t)
	srv := httptest.NewServer(http.NotFoundHandler())
	srv.Close()
	t.Setenv("MIRRORD_METADATA", "gce")
	t.Setenv("MIRRORD_METADATA_ENDPOINT", srv.URL)

	code, out, errOut := mirrord(t, "apply", "--root", root, "--no-reload")
	if code != 0 {
		t.Fatalf("apply exit %d: %s", code, errOut)
	}
	if !strings.Contains(out, "file create /etc/containerd/certs.d/docker.io/hosts.toml") {
		t.Errorf("apply without metadata did not apply the file:\n%s", out)
	}
	if !strings.Contains(errOut, "metadata service not there") || strings.Contains(errOut,
		"level=ERROR") {
		t.Errorf("log:\n%s", errOut)
	}
}
