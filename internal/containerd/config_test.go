package containerd

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/aymanbagabas/go-udiff"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/pelletier/go-toml/v2"

	"github.com/mirrord/mirrord/internal/golden"
	"github.com/mirrord/mirrord/internal/spec"
)

// editMeta is the part of an Edit besides Data, as the golden want.json
// holds it.
type editMeta struct {
	Version       int             `json:"version"`
	Legacy        []spec.Registry `json:"legacy,omitempty"`
	CRIDisabled   bool            `json:"cri_disabled,omitempty"`
	OldConfigPath string          `json:"old_config_path,omitempty"`
}

// TestEditConfigGolden runs EditConfig over testdata/config/<case>/in.toml
// (with the containerd major in the optional file major) and compares the
// new file, its diff from the input and the edit's other fields with the
// golden want.toml, want.diff and want.json.
func TestEditConfigGolden(t *testing.T) {
	for _, dir := range caseDirs(t, "testdata/config") {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			in := readFile(t, filepath.Join(dir, "in.toml"))
			ed, err := EditConfig(in, readMajor(t, dir))
			if err != nil {
				t.Fatalf("EditConfig: %v", err)
			}

			diff := lineDiff(t, "in.toml", "want.toml", string(in), string(ed.Data))
			meta, err := json.MarshalIndent(editMeta{ed.Version, ed.Legacy, ed.CRIDisabled,
				ed.OldConfigPath}, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			golden.Check(t, filepath.Join(dir, "want.toml"), ed.Data)
			golden.Check(t, filepath.Join(dir, "want.diff"), []byte(diff))
			golden.Check(t, filepath.Join(dir, "want.json"), append(meta, '\n'))

			checkOnlyIntendedLines(t, diff, ed.Version)
			checkSameDocument(t, in, ed)
			checkIdempotent(t, ed, readMajor(t, dir))
		})
	}
}

// TestEditConfigErrors runs EditConfig over the bad inputs in
// testdata/config_errors/<case>/in.toml and compares the error with want.err.
func TestEditConfigErrors(t *testing.T) {
	for _, dir := range caseDirs(t, "testdata/config_errors") {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			in := readFile(t, filepath.Join(dir, "in.toml"))
			ed, err := EditConfig(in, readMajor(t, dir))
			if err == nil {
				t.Fatalf("EditConfig succeeded; want an error. Data:\n%s", ed.Data)
			}
			if ed.Data != nil {
				t.Errorf("EditConfig returned data with its error")
			}
			golden.Check(t, filepath.Join(dir, "want.err"), []byte(err.Error()+"\n"))
		})
	}
}

func TestEditConfigCases(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		major   int
		want    string
		wantErr string
	}{{
		name:  "literal_string_replaced",
		in:    "version = 3\n[plugins.'io.containerd.cri.v1.images'.registry]\n  config_path = ''\n",
		major: 2,
		want: "version = 3\n[plugins.'io.containerd.cri.v1.images'.registry]\n" +
			"  config_path = \"/etc/containerd/certs.d\"\n",
	}, {
		name: "trailing_comment_kept",
		in: "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\n" +
			"  config_path = \"/x\" # old\n",
		want: "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\n" +
			"  config_path = \"/etc/containerd/certs.d\" # old\n",
	}, {
		name: "top_level_dotted_key",
		in:   "version = 2\nplugins.\"io.containerd.grpc.v1.cri\".registry.config_path = \"\"\n",
		want: "version = 2\n" +
			"plugins.\"io.containerd.grpc.v1.cri\".registry.config_path = \"/etc/containerd/certs.d\"\n",
	}, {
		name: "key_inserted_after_last_key",
		in: "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\n" +
			"\tfoo = 1\n\n# trailing comment\n[x]\n",
		want: "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\n" +
			"\tfoo = 1\n\tconfig_path = \"/etc/containerd/certs.d\"\n\n# trailing comment\n[x]\n",
	}, {
		name:  "versionless_unknown_major_uses_v1_key",
		in:    "root = \"/var/lib/containerd\"\n",
		major: 0,
		want: "root = \"/var/lib/containerd\"\n\n[plugins.cri.registry]\n" +
			"  config_path = \"/etc/containerd/certs.d\"\n",
	}, {
		name: "disabled_cri_v3_images_name",
		in:   "version = 3\ndisabled_plugins = [\"io.containerd.cri.v1.images\"]\n",
		want: "version = 3\ndisabled_plugins = [\"io.containerd.cri.v1.images\"]\n",
	}, {
		name: "disabled_cri_short_name_not_v2",
		in:   "version = 2\ndisabled_plugins = [\"cri\"]\n",
		want: "version = 2\ndisabled_plugins = [\"cri\"]\n\n" +
			"[plugins.\"io.containerd.grpc.v1.cri\".registry]\n" +
			"  config_path = \"/etc/containerd/certs.d\"\n",
	}, {
		name: "nan_kept",
		in:   "version = 2\nx = nan\n",
		want: "version = 2\nx = nan\n\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\n" +
			"  config_path = \"/etc/containerd/certs.d\"\n",
	}, {
		name: "config_path_not_a_string",
		in: "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\n" +
			"  config_path = [\"/a\", \"/b\"]\n",
		want: "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\n" +
			"  config_path = \"/etc/containerd/certs.d\"\n",
	}, {
		name: "mirrors_not_a_table",
		in:   "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\n  mirrors = 1\n",
		wantErr: `config.toml plugins."io.containerd.grpc.v1.cri".registry.mirrors (line 3) ` +
			`is an integer, not a table of registries`,
	}, {
		name: "endpoint_not_a_list",
		in: "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry.mirrors.\"quay.io\"]\n" +
			"  endpoint = \"https://q.example\"\n",
		wantErr: `registry.mirrors."quay.io" (line 2) endpoint is a string; want a list of URLs`,
	}, {
		name: "endpoint_with_credentials",
		in: "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry.mirrors.\"quay.io\"]\n" +
			"  endpoint = [\"https://u:p@q.example\"]\n",
		wantErr: `registry.mirrors."quay.io" (line 2) endpoint "https://u:p@q.example": ` +
			`mirror URL carries credentials`,
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ed, err := EditConfig([]byte(tt.in), tt.major)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("EditConfig error = %v; want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("EditConfig: %v", err)
			}
			if diff := cmp.Diff(tt.want, string(ed.Data)); diff != "" {
				t.Errorf("EditConfig data (-want +got):\n%s", diff)
			}
			checkSameDocument(t, []byte(tt.in), ed)
			checkIdempotent(t, ed, tt.major)
		})
	}
}

// TestEditConfigUnchanged checks that a file needing no change comes back
// as the very same bytes.
func TestEditConfigUnchanged(t *testing.T) {
	for _, name := range []string{"already_correct", "docker_containerd_io"} {
		t.Run(name, func(t *testing.T) {
			in := readFile(t, filepath.Join("testdata/config", name, "in.toml"))
			ed, err := EditConfig(in, 0)
			if err != nil {
				t.Fatalf("EditConfig: %v", err)
			}
			if !bytes.Equal(ed.Data, in) {
				t.Errorf("EditConfig changed a file that needs no change:\n%s", ed.Data)
			}
		})
	}
}

func TestMinimalConfig(t *testing.T) {
	for _, tt := range []struct {
		major, version int
	}{{0, 2}, {1, 2}, {2, 3}} {
		t.Run("major"+strconv.Itoa(tt.major), func(t *testing.T) {
			got := MinimalConfig(tt.major)
			golden.Check(t, filepath.Join("testdata/minimal", "major"+strconv.Itoa(tt.major)+".toml"), got)

			ed, err := EditConfig(got, tt.major)
			if err != nil {
				t.Fatalf("EditConfig(MinimalConfig): %v", err)
			}
			if ed.Version != tt.version || !bytes.Equal(ed.Data, got) {
				t.Errorf("EditConfig(MinimalConfig(%d)) = version %d, changed %t; "+
					"want version %d, unchanged", tt.major, ed.Version,
					!bytes.Equal(ed.Data, got), tt.version)
			}
		})
	}
}

// checkOnlyIntendedLines fails when the unified diff touches lines other
// than config_path, the registry table header and removed mirrors entries.
func checkOnlyIntendedLines(t *testing.T, diff string, version int) {
	t.Helper()
	header := "[" + renderKey(registryPath(version)) + "]"
	inBlock := false
	for _, line := range strings.Split(diff, "\n") {
		if strings.HasPrefix(line, "---") || strings.HasPrefix(line, "+++") {
			continue
		}
		text := strings.TrimSpace(line[min(1, len(line)):])
		switch {
		case strings.HasPrefix(line, "+"):
			ok := text == "" || text == header || strings.HasPrefix(text, "config_path = ") ||
				strings.Contains(text, "config_path = \""+CertsDir+"\"") ||
				strings.HasSuffix(text, "mirrors = {}")
			if !ok {
				t.Errorf("diff adds an unexpected line: %q", line)
			}
			inBlock = false

		case strings.HasPrefix(line, "-"):
			mirrorLine := strings.Contains(text, "mirrors") || strings.Contains(text, "endpoint")
			switch {
			case strings.Contains(text, "config_path"), mirrorLine:
				inBlock = inBlock || mirrorLine
			case inBlock && strings.HasPrefix(text, "["):
				t.Errorf("diff removes a table that is not a mirrors entry: %q", line)
			case inBlock && strings.Contains(text, " = "):
				t.Errorf("diff removes a key that is not a mirrors entry: %q", line)
			case !inBlock:
				t.Errorf("diff removes an unexpected line: %q", line)
			}

		default:
			inBlock = false
		}
	}
}

// checkSameDocument decodes the input and output of an edit and checks,
// independently of EditConfig's own check, that they differ only in the
// registry's config_path and mirrors.
func checkSameDocument(t *testing.T, in []byte, ed Edit) {
	t.Helper()
	if ed.CRIDisabled {
		if !bytes.Equal(in, ed.Data) {
			t.Errorf("CRIDisabled, yet the data changed")
		}
		return
	}

	var before, after map[string]any
	if err := toml.Unmarshal(in, &before); err != nil {
		t.Fatalf("decode input: %v", err)
	}
	if err := toml.Unmarshal(ed.Data, &after); err != nil {
		t.Fatalf("decode output: %v\n%s", err, ed.Data)
	}

	path := registryPath(ed.Version)
	reg := walk(after, path)
	if reg == nil || reg["config_path"] != CertsDir {
		t.Fatalf("output has no %s.config_path = %q:\n%s", renderKey(path), CertsDir, ed.Data)
	}
	if m, ok := reg["mirrors"].(map[string]any); ok && len(m) > 0 {
		t.Errorf("output still has mirrors: %v", m)
	}

	strip(before, path)
	strip(after, path)
	if diff := cmp.Diff(before, after, cmpopts.EquateNaNs()); diff != "" {
		t.Errorf("documents differ beyond config_path and mirrors (-in +out):\n%s", diff)
	}
}

// checkIdempotent checks that editing the output again changes nothing.
func checkIdempotent(t *testing.T, ed Edit, major int) {
	t.Helper()
	again, err := EditConfig(ed.Data, major)
	if err != nil {
		t.Fatalf("EditConfig on its own output: %v", err)
	}
	if !bytes.Equal(again.Data, ed.Data) || len(again.Legacy) > 0 || again.OldConfigPath != "" {
		t.Errorf("EditConfig on its own output changed it again:\n%s", again.Data)
	}
}

// walk returns the table at path, or nil.
func walk(doc map[string]any, path []string) map[string]any {
	cur := doc
	for _, k := range path {
		next, ok := cur[k].(map[string]any)
		if !ok {
			return nil
		}
		cur = next
	}
	return cur
}

// strip deletes config_path and mirrors from the table at path, then the
// tables along path that are left empty.
func strip(doc map[string]any, path []string) {
	if reg := walk(doc, path); reg != nil {
		delete(reg, "config_path")
		delete(reg, "mirrors")
	}
	for i := len(path); i > 0; i-- {
		parent := walk(doc, path[:i-1])
		if t, ok := parent[path[i-1]].(map[string]any); ok && len(t) == 0 {
			delete(parent, path[i-1])
		}
	}
}

// lineDiff returns a unified diff of old and new that compares whole lines,
// so that a changed line shows as itself rather than as a character edit
// spread over its neighbours. Each distinct line becomes one private-use
// rune, the rune strings are diffed, and the edits are mapped back.
func lineDiff(t *testing.T, oldName, newName, old, new string) string {
	t.Helper()
	ids := map[string]rune{}
	encode := func(text string) (string, []string) {
		lines := strings.SplitAfter(text, "\n")
		if lines[len(lines)-1] == "" {
			lines = lines[:len(lines)-1]
		}
		var b strings.Builder
		for _, l := range lines {
			r, ok := ids[l]
			if !ok {
				r = rune(0xE000 + len(ids))
				ids[l] = r
			}
			b.WriteRune(r)
		}
		return b.String(), lines
	}
	oldRunes, oldLines := encode(old)
	newRunes, newLines := encode(new)
	if len(ids) > 0x1900 {
		t.Fatalf("lineDiff: too many distinct lines (%d)", len(ids))
	}

	// Every private-use rune below U+F900 is three bytes long.
	offsets := make([]int, len(oldLines)+1)
	for i, l := range oldLines {
		offsets[i+1] = offsets[i] + len(l)
	}
	var edits []udiff.Edit
	for _, e := range udiff.Strings(oldRunes, newRunes) {
		from, to := e.Start/3, e.End/3
		var repl strings.Builder
		for _, r := range e.New {
			repl.WriteString(newLines[strings.IndexRune(newRunes, r)/3])
		}
		edits = append(edits, udiff.Edit{Start: offsets[from], End: offsets[to], New: repl.String()})
	}
	diff, err := udiff.ToUnified(oldName, newName, old, edits, udiff.DefaultContextLines)
	if err != nil {
		t.Fatalf("lineDiff: %v", err)
	}
	return diff
}

// caseDirs lists the case folders under dir.
func caseDirs(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		if e.IsDir() {
			out = append(out, filepath.Join(dir, e.Name()))
		}
	}
	if len(out) == 0 {
		t.Fatalf("no cases under %s", dir)
	}
	return out
}

// readMajor reads the optional major file of a case, 0 when absent.
func readMajor(t *testing.T, dir string) int {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, "major"))
	if os.IsNotExist(err) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil {
		t.Fatalf("%s/major: %v", dir, err)
	}
	return n
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}
