package docker

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/mirrord/mirrord/internal/golden"
)

func TestEditDaemonJSONGolden(t *testing.T) {
	hub := "https://mirror.example.net"
	plain := "http://10.0.0.7:5000"
	tests := []struct {
		name  string
		want  Settings
		prev  []string
		force bool
	}{
		{"realworld_insert", Settings{[]string{hub, plain}, []string{"10.0.0.7:5000"}}, nil, true},
		{"realworld_present", Settings{[]string{hub}, nil}, []string{"10.0.0.7:5000"}, true},
		{"tabs", Settings{[]string{hub, plain}, []string{"10.0.0.7:5000"}}, nil, true},
		{"compact", Settings{[]string{plain}, []string{"10.0.0.7:5000"}}, nil, true},
		{"compact_spaced", Settings{[]string{hub}, nil}, nil, true},
		{"mirrors_to_empty", Settings{}, []string{"10.0.0.7:5000"}, false},
		{"absent_no_force", Settings{}, nil, false},
		{"absent_force", Settings{}, nil, true},
		{"empty_file", Settings{[]string{hub, plain}, []string{"10.0.0.7:5000"}}, nil, true},
		{"empty_object", Settings{[]string{hub}, nil}, nil, false},
		{"crlf", Settings{[]string{hub}, []string{"10.0.0.7:5000"}}, nil, true},
		{"unchanged", Settings{[]string{hub, plain}, []string{"10.0.0.7:5000"}},
			[]string{"10.0.0.7:5000"}, true},
		{"null_values", Settings{[]string{hub}, nil}, nil, true},
		{"operator_insecure_kept", Settings{[]string{plain}, []string{"10.0.0.7:5000"}},
			[]string{"old-mirror.example.net:8080"}, true},
		{"multiline_deep_indent", Settings{[]string{hub, "https://b.example.net/hub"}, nil}, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join("testdata", "edit", tt.name)
			in := readFile(t, filepath.Join(dir, "in.json"))

			got, err := EditDaemonJSON(in, tt.want, tt.prev, tt.force)
			if err != nil {
				t.Fatalf("EditDaemonJSON: %v", err)
			}
			golden.Check(t, filepath.Join(dir, "want.json"), got)

			if len(bytes.TrimSpace(in)) > 2 {
				if diff := cmp.Diff(skeleton(t, in, nil), skeleton(t, got, in)); diff != "" {
					t.Errorf("bytes outside the two keys changed (-in +got):\n%s", diff)
				}
			}
			checkSettings(t, got, tt.want)

			again, err := EditDaemonJSON(got, tt.want, tt.want.Insecure, tt.force)
			if err != nil {
				t.Fatalf("second EditDaemonJSON: %v", err)
			}
			if !bytes.Equal(again, got) {
				t.Errorf("second edit is not a no-op (-first +second):\n%s",
					cmp.Diff(string(got), string(again)))
			}
		})
	}
}

// checkSettings asserts that data holds the wanted mirrors, and every
// wanted insecure registry.
func checkSettings(t *testing.T, data []byte, want Settings) {
	t.Helper()
	s, err := ReadSettings(data)
	if err != nil {
		t.Fatalf("ReadSettings of the result: %v", err)
	}
	if diff := cmp.Diff(want.Mirrors, s.Mirrors, cmpEmpty); diff != "" {
		t.Errorf("registry-mirrors (-want +got):\n%s", diff)
	}
	for _, h := range want.Insecure {
		if !containsRegistry(s.Insecure, h) {
			t.Errorf("insecure-registries %q lacks %q", s.Insecure, h)
		}
	}
}

// cmpEmpty makes nil and empty lists equal.
var cmpEmpty = cmp.Comparer(func(a, b []string) bool { return slices.Equal(a, b) })

// skeleton returns data with the values of the two managed keys replaced
// by "…". Keys that orig lacks are cut out whole, with the comma and white
// space before them, so that an edit that only set those keys gives the
// skeleton of orig.
func skeleton(t *testing.T, data, orig []byte) string {
	t.Helper()
	d, err := parseDocument(data)
	if err != nil {
		t.Fatalf("parse for skeleton: %v", err)
	}
	var inOrig *document
	if orig != nil {
		if inOrig, err = parseDocument(orig); err != nil {
			t.Fatalf("parse for skeleton: %v", err)
		}
	}

	var b strings.Builder
	at := 0
	for k, m := range d.members {
		if m.key != keyMirrors && m.key != keyInsecure {
			continue
		}
		if _, ok := inOrig.memberIfAny(m.key); inOrig != nil && !ok && k > 0 {
			b.Write(data[at:d.members[k-1].valEnd])
			at = m.valEnd
			continue
		}
		b.Write(data[at:m.valStart])
		b.WriteString("…")
		at = m.valEnd
	}
	b.Write(data[at:])
	return b.String()
}

// memberIfAny is member on a possibly nil document.
func (d *document) memberIfAny(key string) (member, bool) {
	if d == nil {
		return member{}, false
	}
	return d.member(key)
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestEditDaemonJSONBadInput(t *testing.T) {
	tests := []struct {
		name, in, err string
	}{
		{"truncated", "{\n  \"debug\": true,\n", "parse daemon.json: line 2, column 17: " +
			"unexpected end of JSON input"},
		{"trailing_comma", "{\n  \"debug\": true,\n}\n", "parse daemon.json: line 3, column 1: " +
			"invalid character '}' looking for beginning of object key string"},
		{"array_top_level", `["https://mirror.example.net"]`, "parse daemon.json: line 1, column 1: " +
			"the top-level value is an array; want a JSON object {...}"},
		{"null_top_level", "\n null\n", "parse daemon.json: line 2, column 2: " +
			"the top-level value is null; want a JSON object {...}"},
		{"two_values", `{} {}`, "parse daemon.json: line 1, column 4: " +
			"invalid character '{' after top-level value"},
		{"mirrors_string", "{\n  \"registry-mirrors\": \"https://mirror.example.net\"\n}",
			"parse daemon.json: line 2, column 23: \"registry-mirrors\" is a string; " +
				"want an array of strings such as [\"https://mirror.example.net\"]"},
		{"mirrors_object", `{"registry-mirrors": {}}`, "parse daemon.json: line 1, column 22: " +
			"\"registry-mirrors\" is an object; want an array of strings such as " +
			"[\"https://mirror.example.net\"]"},
		{"insecure_number_item", `{"insecure-registries": ["a:5000", 5000]}`,
			"parse daemon.json: line 1, column 36: \"insecure-registries\" item 2 is a number; " +
				"want a string such as \"10.0.0.5:5000\""},
		{"insecure_bool", `{"insecure-registries": true}`, "parse daemon.json: line 1, column 25: " +
			"\"insecure-registries\" is a boolean; want an array of strings such as " +
			"[\"10.0.0.5:5000\"]"},
		{"duplicate_mirrors", "{\n  \"registry-mirrors\": [],\n  \"registry-mirrors\": []\n}",
			"parse daemon.json: line 3, column 3: key \"registry-mirrors\" given twice " +
				"(first at line 2, column 3); want it once"},
		{"duplicate_escaped", `{"insecure-registries": [], "insecure\u002dregistries": []}`,
			"parse daemon.json: line 1, column 29: key \"insecure-registries\" given twice " +
				"(first at line 1, column 2); want it once"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := EditDaemonJSON([]byte(tt.in), Settings{Mirrors: []string{"https://m"}}, nil,
				true)
			if err == nil || err.Error() != tt.err {
				t.Errorf("EditDaemonJSON error:\n got %v\nwant %s", err, tt.err)
			}
			_, err = ReadSettings([]byte(tt.in))
			if err == nil || err.Error() != tt.err {
				t.Errorf("ReadSettings error:\n got %v\nwant %s", err, tt.err)
			}
		})
	}
}

func TestReadSettings(t *testing.T) {
	tests := []struct {
		name, in string
		want     Settings
	}{
		{"empty", "", Settings{}},
		{"blank", " \n", Settings{}},
		{"no_keys", `{"debug": true}`, Settings{}},
		{"nulls", `{"registry-mirrors": null, "insecure-registries": null}`, Settings{}},
		{"both", `{"registry-mirrors": ["https://a", "http://b:5000"], ` +
			`"insecure-registries": ["b:5000", "10.0.0.0/8"]}`,
			Settings{[]string{"https://a", "http://b:5000"}, []string{"b:5000", "10.0.0.0/8"}}},
		{"escaped", `{"registry-mirrors": ["https:\/\/a\u002eexample"]}`,
			Settings{Mirrors: []string{"https://a.example"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ReadSettings([]byte(tt.in))
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got, cmpEmpty); diff != "" {
				t.Errorf("ReadSettings (-want +got):\n%s", diff)
			}
		})
	}
}

func TestMergeInsecure(t *testing.T) {
	tests := []struct {
		name            string
		old, want, prev []string
		merged          []string
	}{
		{"add", nil, []string{"a:1"}, nil, []string{"a:1"}},
		{"keep_operator", []string{"op:1"}, []string{"a:1"}, nil, []string{"op:1", "a:1"}},
		{"remove_prev", []string{"op:1", "a:1"}, nil, []string{"a:1"}, []string{"op:1"}},
		{"still_wanted_keeps_place", []string{"a:1", "op:1"}, []string{"a:1"}, []string{"a:1"},
			[]string{"a:1", "op:1"}},
		{"operator_spelling_counts", []string{"HTTP://A:1/"}, []string{"a:1"}, nil,
			[]string{"HTTP://A:1/"}},
		{"prev_removed_exactly", []string{"http://a:1"}, nil, []string{"a:1"},
			[]string{"http://a:1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := mergeInsecure(tt.old, tt.want, tt.prev)
			if diff := cmp.Diff(tt.merged, got, cmpEmpty); diff != "" {
				t.Errorf("mergeInsecure (-want +got):\n%s", diff)
			}
		})
	}
}

func TestAddedInsecure(t *testing.T) {
	tests := []struct {
		name               string
		before, want, prev []string
		added              []string
	}{
		{"new_entry", []string{"op:1"}, []string{"a:1"}, nil, []string{"a:1"}},
		{"ours_from_before", []string{"op:1", "a:1"}, []string{"a:1"}, []string{"a:1"},
			[]string{"a:1"}},
		{"operators_entry", []string{"a:1"}, []string{"a:1"}, nil, nil},
		{"operators_spelling", []string{"http://A:1"}, []string{"a:1"}, nil, nil},
		{"no_longer_wanted", []string{"a:1"}, nil, []string{"a:1"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := AddedInsecure(tt.before, tt.want, tt.prev)
			if diff := cmp.Diff(tt.added, got, cmpEmpty); diff != "" {
				t.Errorf("AddedInsecure (-want +got):\n%s", diff)
			}
		})
	}

	// The operator's entry survives a mirror that came and went.
	src := []byte(`{"insecure-registries": ["a:1"]}`)
	want := Settings{Mirrors: []string{"http://a:1"}, Insecure: []string{"a:1"}}
	out, err := EditDaemonJSON(src, want, nil, true)
	if err != nil {
		t.Fatal(err)
	}
	prev := AddedInsecure([]string{"a:1"}, want.Insecure, nil)
	out, err = EditDaemonJSON(out, Settings{}, prev, true)
	if err != nil {
		t.Fatal(err)
	}
	if s, _ := ReadSettings(out); !slices.Equal(s.Insecure, []string{"a:1"}) {
		t.Errorf("operator's insecure entry lost: %s", out)
	}
}

func FuzzEditDaemonJSON(f *testing.F) {
	seeds, _ := filepath.Glob(filepath.Join("testdata", "edit", "*", "in.json"))
	for _, p := range seeds {
		data, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data, "https://mirror.example.net", "10.0.0.7:5000", true)
	}
	f.Add([]byte(`{"registry-mirrors":["x"],"a":[{"b":"}]"}]}`), "http://m", "m", false)
	f.Add([]byte("{\"a\\\"\":\"\\\\\",\"insecure-registries\":[\"m\"]}"), "", "", false)

	f.Fuzz(func(t *testing.T, src []byte, mirror, insecure string, force bool) {
		want := Settings{}
		if mirror != "" {
			want.Mirrors = []string{mirror}
		}
		if insecure != "" {
			want.Insecure = []string{insecure}
		}
		out, err := EditDaemonJSON(src, want, []string{"10.0.0.7:5000"}, force)
		if err != nil {
			return
		}

		before := map[string]any{}
		if len(bytes.TrimSpace(src)) > 0 {
			if before, err = decodeObject(src); err != nil {
				t.Fatalf("accepted input that does not decode: %v", err)
			}
		}
		after, err := decodeObject(out)
		if err != nil {
			t.Fatalf("output does not decode: %v\n%s", err, out)
		}
		for _, k := range keysOf(before, after) {
			if k != keyMirrors && k != keyInsecure && !cmp.Equal(before[k], after[k]) {
				t.Fatalf("key %q changed:\n%s\n->\n%s", k, src, out)
			}
		}
		checkSettings(t, out, want)

		again, err := EditDaemonJSON(out, want, want.Insecure, force)
		if err != nil || !bytes.Equal(again, out) {
			t.Fatalf("second edit not a no-op (err %v):\n%s\n->\n%s", err, out, again)
		}
	})
}
