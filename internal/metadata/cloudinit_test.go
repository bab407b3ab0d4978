package metadata

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestCloudInit(t *testing.T) {
	const prefix = "cloud-init /run/cloud-init/instance-data.json "
	attrs, _ := json.Marshal(map[string]string{KeyMirrors: sampleMirrors, "ssh-keys": "k"})
	project, _ := json.Marshal(map[string]string{KeyMirrors: "beneath", KeyConfig: sampleConfig})

	tests := []struct {
		name string
		ds   any
		b64  []string // base64_encoded_keys
		want Values
	}{
		{
			name: "gce_attributes_as_json_text",
			ds: map[string]any{"meta_data": map[string]any{
				"instance-data": string(attrs),
				"project-data":  string(project),
			}},
			want: Values{Mirrors: sampleMirrors, Config: []byte(sampleConfig), Source: map[string]string{
				KeyMirrors: prefix + "ds.meta_data.instance-data.mirrord-mirrors",
				KeyConfig:  prefix + "ds.meta_data.project-data.mirrord-config",
			}},
		},
		{
			name: "ec2_tags",
			ds: map[string]any{"meta_data": map[string]any{
				"tags": map[string]any{"instance": map[string]any{KeyMirrors: sampleMirrors}},
			}},
			want: Values{Mirrors: sampleMirrors, Source: map[string]string{
				KeyMirrors: prefix + "ds.meta_data.tags.instance.mirrord-mirrors",
			}},
		},
		{
			name: "ec2_tags_hyphens_and_underscores",
			ds: map[string]any{"meta-data": map[string]any{
				"tags": map[string]any{"instance": map[string]any{"mirrord_config": sampleConfig}},
			}},
			want: Values{Config: []byte(sampleConfig), Source: map[string]string{
				KeyConfig: prefix + "ds.meta-data.tags.instance.mirrord_config",
			}},
		},
		{
			name: "openstack_meta",
			ds: map[string]any{"meta_data": map[string]any{
				"meta": map[string]any{KeyMirrors: sampleMirrors, KeyConfig: sampleConfig},
			}},
			want: Values{Mirrors: sampleMirrors, Config: []byte(sampleConfig), Source: map[string]string{
				KeyMirrors: prefix + "ds.meta_data.meta.mirrord-mirrors",
				KeyConfig:  prefix + "ds.meta_data.meta.mirrord-config",
			}},
		},
		{
			name: "azure_tags_list",
			ds: map[string]any{"meta_data": map[string]any{
				"imds": map[string]any{"compute": map[string]any{"tagsList": []any{
					map[string]any{"name": "other", "value": "x"},
					map[string]any{"name": KeyMirrors, "value": sampleMirrors},
				}}},
			}},
			want: Values{Mirrors: sampleMirrors, Source: map[string]string{
				KeyMirrors: prefix + "ds.meta_data.imds.compute.tagsList.mirrord-mirrors",
			}},
		},
		{
			name: "nocloud_meta_data_key",
			ds:   map[string]any{"meta_data": map[string]any{KeyMirrors: sampleMirrors}},
			want: Values{Mirrors: sampleMirrors, Source: map[string]string{
				KeyMirrors: prefix + "ds.meta_data.mirrord-mirrors",
			}},
		},
		{
			name: "base64_encoded",
			ds: map[string]any{"meta_data": map[string]any{
				"meta": map[string]any{
					KeyConfig: base64.StdEncoding.EncodeToString([]byte(sampleConfig)),
				},
			}},
			b64: []string{"ds/meta_data/meta/mirrord-config"},
			want: Values{Config: []byte(sampleConfig), Source: map[string]string{
				KeyConfig: prefix + "ds.meta_data.meta.mirrord-config",
			}},
		},
		{
			name: "not_a_string",
			ds: map[string]any{"meta_data": map[string]any{
				"meta": map[string]any{KeyMirrors: 42}, "project-data": "{}",
			}},
			want: Values{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			doc, err := json.Marshal(map[string]any{
				"v1":                  map[string]any{"cloud_name": "whatever"},
				"ds":                  tt.ds,
				"base64_encoded_keys": tt.b64,
			})
			if err != nil {
				t.Fatal(err)
			}
			writeFile(t, root, instanceDataPath, string(doc))

			got, err := Fetch(t.Context(), Options{Provider: CloudInit, Root: root})
			tt.want.Provider = CloudInit
			if tt.want.Empty() {
				if !errors.Is(err, ErrNoMetadata) {
					t.Errorf("Fetch: %v, want ErrNoMetadata", err)
				}
			} else if err != nil {
				t.Fatalf("Fetch: %v", err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("values (-want +got):\n%s", diff)
			}
		})
	}
}

func TestCloudInitErrors(t *testing.T) {
	tests := []struct {
		name    string
		content string // "" for no file
		noMD    bool   // want ErrNoMetadata
		want    string
	}{
		{"no_file", "", true, "instance-data.json does not exist"},
		{"malformed", "{", false, "decode"},
		{"gce_text_not_json", `{"ds": {"meta_data": {"instance-data": "not json"}}}`, false,
			"in ds.meta_data: instance-data holds text that is no JSON object"},
		{"bad_base64", `{"ds": {"meta_data": {"mirrord-mirrors": "%%%"}},
			"base64_encoded_keys": ["ds/meta_data/mirrord-mirrors"]}`, false, "decode base64"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			if tt.content != "" {
				writeFile(t, root, instanceDataPath, tt.content)
			}
			_, err := Fetch(t.Context(), Options{Provider: CloudInit, Root: root})
			if err == nil || errors.Is(err, ErrNoMetadata) != tt.noMD ||
				!strings.Contains(err.Error(), tt.want) {
				t.Errorf("Fetch: %v; want ErrNoMetadata %v and %q", err, tt.noMD, tt.want)
			}
		})
	}
}
