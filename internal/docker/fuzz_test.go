package docker

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
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

// FuzzCheckUnitFlags writes a docker.service, a drop-in and an
// EnvironmentFile, and checks that CheckUnitFlags names only flags that
// the file it names holds. Then it writes a unit whose ExecStart sets one
// of the flags, spelt and placed as the fuzzed bits pick (flag=value or
// flag value, quoted or not, on the line, in Environment= or in an
// EnvironmentFile= through $VAR or ${VAR}) among fuzzed other words, and
// checks that CheckUnitFlags finds it: a flag it misses would have dockerd
// refuse to start once mirrord writes the same key into daemon.json.
func FuzzCheckUnitFlags(f *testing.F) {
	f.Add([]byte(debianUnit), []byte("[Service]\nExecStart=\nExecStart=/usr/bin/dockerd "+
		"--registry-mirror=https://m\n"), []byte("DOCKER_OPTS=\"--insecure-registry 10.0.0.7:5000\"\n"),
		"--dns 8.8.8.8 --log-level=warn", uint8(0))
	f.Add([]byte(ceUnit), []byte(""), []byte(""), "-H unix:///run/docker.sock", uint8(0x1b))
	f.Add([]byte("[Service]\nEnvironment=\"A=--registry-mirror=x\" B=1\nExecStart=/d ${A}\\\n $B\n"),
		[]byte("[Service]\nEnvironmentFile=\n"), []byte("export A='--insecure-registry=h'\n"),
		"", uint8(0x26))
	root := f.TempDir()
	paths := []string{
		"lib/systemd/system/docker.service",
		"etc/systemd/system/docker.service.d/10-fuzz.conf",
		"etc/default/docker",
	}

	f.Fuzz(func(t *testing.T, unit, dropin, envFile []byte, words string, how uint8) {
		for i, data := range [][]byte{unit, dropin, envFile} {
			writeUnitFile(t, filepath.Join(root, paths[i]), data)
		}
		var flagErr *UnitFlagError
		if err := CheckUnitFlags(root); errors.As(err, &flagErr) {
			for _, u := range flagErr.Uses {
				from := u.Path
				if u.Var != "" {
					from = u.VarFrom
				}
				if !strings.HasPrefix(from, root) {
					from = filepath.Join(root, from)
				}
				data, _ := os.ReadFile(from)
				if !strings.Contains(string(data), u.Flag) {
					t.Fatalf("%+v: %s does not hold %s", u, from, u.Flag)
				}
			}
		}

		unit, envFile, flag := flagUnit(words, how)
		writeUnitFile(t, filepath.Join(root, paths[0]), unit)
		writeUnitFile(t, filepath.Join(root, paths[1]), nil)
		writeUnitFile(t, filepath.Join(root, paths[2]), envFile)
		err := CheckUnitFlags(root)
		if !errors.As(err, &flagErr) || !flagErr.Has(flag) {
			t.Fatalf("CheckUnitFlags = %v; want %s found in\n%s\nand\n%s", err, flag, unit,
				envFile)
		}
	})
}

// writeUnitFile writes data to path, or removes path when data is nil.
func writeUnitFile(t *testing.T, path string, data []byte) {
	t.Helper()

	if data == nil {
		os.Remove(path)
		return
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// flagUnit returns a docker.service and an EnvironmentFile (nil for none)
// that set one of the two flags, spelt and placed as the bits of how pick,
// among the words of words that hold nothing a unit file reads specially.
func flagUnit(words string, how uint8) (unit, envFile []byte, flag string) {
	plain := strings.Map(func(r rune) rune {
		if r == ' ' || r == '-' || r == '.' || r == ':' || r == '/' || r == '=' ||
			r == '_' || '0' <= r && r <= '9' || 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' {
			return r
		}
		return ' '
	}, words)
	fields := strings.Fields(plain)
	cut := len(fields) / 2

	flag = FlagMirror
	if how&1 != 0 {
		flag = FlagInsecure
	}
	arg := flag + "=https://m.example.net"
	if how&2 != 0 {
		arg = flag + " https://m.example.net"
	}
	if how&4 != 0 && how&2 == 0 {
		arg = `"` + arg + `"`
	}
	line := strings.Join(slices.Concat(fields[:cut], []string{arg}, fields[cut:]), " ")

	ref := "$DOCKER_OPTS"
	if how&0x20 != 0 {
		ref = "${DOCKER_OPTS}"
	}
	prefix := []string{"", "-", "@", "+"}[how>>6]
	exec := "ExecStart=" + prefix + "/usr/bin/dockerd -H fd:// "
	switch how >> 3 & 3 {
	case 0:
		unit = []byte("[Service]\nType=notify\n" + exec + line + "\n")
	case 1:
		unit = []byte("[Service]\nEnvironment=\"DOCKER_OPTS=" + line + "\"\n" + exec + ref + "\n")
	default:
		unit = []byte("[Service]\nEnvironmentFile=-/etc/default/docker\n" + exec + ref + "\n")
		envFile = []byte("# options\nDOCKER_OPTS=\"" + line + "\"\n")
	}
	return unit, envFile, flag
}
