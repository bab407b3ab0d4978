package docker

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// FuzzReadSettings checks, for any daemon.json, that ReadSettings refuses
// exactly the files EditDaemonJSON refuses, with the same error, and
// otherwise returns the registry-mirrors and insecure-registries lists
// that encoding/json, which dockerd decodes the file with, reads there.
// DetectImageStore must refuse every file that is no JSON object, and
// otherwise follow features.containerd-snapshotter as encoding/json reads
// it. It is seeded with every golden daemon.json.
func FuzzReadSettings(f *testing.F) {
	seeds, _ := filepath.Glob(filepath.Join("testdata", "edit", "*", "in.json"))
	for _, p := range seeds {
		data, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte(`{"features": {"containerd-snapshotter": true}, "registry-mirrors": null}`))
	f.Add([]byte(`{"registry-mirrors": ["a"], "registry-mirrors": ["b"]}`))
	f.Add([]byte(`{"insecure-registries": ["\u00e9", "x:5000"]} trailing`))

	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := ReadSettings(data)
		_, editErr := EditDaemonJSON(data, got, nil, false)
		if err != nil {
			if editErr == nil || editErr.Error() != err.Error() {
				t.Fatalf("ReadSettings: %v; EditDaemonJSON: %v", err, editErr)
			}
			var doc map[string]any
			_, _, storeErr := DetectImageStore(data, Version{Major: 29}, StoreUnknown)
			if json.Unmarshal(data, &doc) != nil && storeErr == nil {
				t.Fatalf("DetectImageStore reads a file that is no JSON object")
			}
			return
		}
		if editErr != nil {
			t.Fatalf("EditDaemonJSON refuses what ReadSettings reads: %v", editErr)
		}
		if len(bytes.TrimSpace(data)) == 0 {
			return
		}

		var doc map[string]json.RawMessage
		if err := json.Unmarshal(data, &doc); err != nil {
			t.Fatalf("ReadSettings reads a file encoding/json refuses: %v", err)
		}
		var want Settings
		for key, list := range map[string]*[]string{keyMirrors: &want.Mirrors,
			keyInsecure: &want.Insecure} {
			if raw, ok := doc[key]; ok {
				if err := json.Unmarshal(raw, list); err != nil {
					t.Fatalf("%s: ReadSettings reads %s, which encoding/json refuses: %v", key,
						raw, err)
				}
			}
		}
		if diff := cmp.Diff(want, got, cmpEmpty); diff != "" {
			t.Fatalf("settings (-encoding/json +ReadSettings):\n%s", diff)
		}

		checkImageStore(t, data)
	})
}

// checkImageStore checks DetectImageStore on a daemon.json that
// ReadSettings reads, when its features key is spelt only so.
func checkImageStore(t *testing.T, data []byte) {
	t.Helper()

	var doc map[string]any
	if json.Unmarshal(data, &doc) != nil {
		return
	}
	for k := range doc {
		if k != "features" && bytes.EqualFold([]byte(k), []byte("features")) {
			return // encoding/json matches keys without regard to case, as dockerd does
		}
	}

	store, _, err := DetectImageStore(data, Version{Major: 29}, StoreUnknown)
	features, isObject := doc["features"].(map[string]any)
	value, set := features[featureSnapshotter]
	on, isBool := value.(bool)
	switch {
	case doc["features"] != nil && !isObject || set && !isBool:
		if err == nil {
			t.Fatalf("DetectImageStore takes features %v", doc["features"])
		}
	case err != nil:
		t.Fatalf("DetectImageStore: %v", err)
	case !set && store != StoreUnknown, set && on && store != StoreContainerd,
		set && !on && store != StoreClassic:
		t.Fatalf("features %v gives the %q image store", doc["features"], store)
	}
}
