package config

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/pelletier/go-toml/v2"

	"github.com/mirrord/mirrord/internal/containerd"
	"github.com/mirrord/mirrord/internal/containerd/hoststest"
	"github.com/mirrord/mirrord/internal/metadata"
	"github.com/mirrord/mirrord/internal/spec"
)

// The metadata sources FuzzLoad gives, as the gce provider names them.
const (
	fuzzConfigSource  = "gce instance attribute mirrord-config"
	fuzzMirrorsSource = "gce instance attribute mirrord-mirrors"
)

// fuzzSecret is the password FuzzLoad's seeds put in mirror URLs: wherever
// it stands only as a URL's credentials, Load's error must not show it.
const fuzzSecret = "s3cr3t"

// layerDoc is one document of the layers FuzzLoad builds, lowest first.
type layerDoc struct {
	src     spec.Source
	data    []byte
	compact bool   // the compact form, not a TOML document
	path    string // the node path of a file; "" for metadata
}

// FuzzLoad gives Load a metadata mirrord-config document, a metadata
// mirrord-mirrors value, the config file and two drop-ins (one of them under
// a fuzzed name, which sources carry into the files mirrord writes), and
// checks:
//
//   - Load fails exactly when one of the documents fails alone, and its
//     error names the first of them that fails (its metadata source or
//     its file), never showing a metadata value's URL credentials;
//   - otherwise the spec is valid (hosts normalised, unique and sorted,
//     mirrors valid and unique, capabilities known), every registry's
//     hosts.toml decodes strictly in containerd's schema, and each registry
//     is the whole entry of the highest document that names it, with that
//     document's layer and name as its source;
//   - every document that parses alone holds the registries, mirrors and
//     runtimes that a plain TOML decode of it finds.
func FuzzLoad(f *testing.F) {
	for _, kv := range os.Environ() {
		if name, _, _ := strings.Cut(kv, "="); strings.HasPrefix(name, "MIRRORD_") {
			f.Setenv(name, "")
			os.Unsetenv(name)
		}
	}
	root := f.TempDir()
	example, err := os.ReadFile("../../examples/node/etc/mirrord/mirrord.toml")
	if err != nil {
		f.Fatal(err)
	}

	f.Add([]byte(nil), "", example, []byte(nil), []byte(nil), "10-a")
	f.Add([]byte("runtimes = [\"docker\"]\n[registries.\"docker.io\"]\n"+
		"mirrors = [\"https://robot:"+fuzzSecret+"@m.example.net\"]\n"),
		"quay.io=https://q.example.net", example,
		[]byte("[registries.\"registry.k8s.io\"]\nupstream = false\n"+
			"mirrors = [{ url = \"https://k.example.net/k8s\", capabilities = [\"pull\"], "+
			"ca_file = \"/etc/ssl/k.pem\", skip_verify = true }]\n"),
		[]byte("runtimes = [\"containerd\", \"k3s\"]\n[registries.\"*\"]\n"+
			"mirrors = [\"https://cache.example.net\"]\n"), "30-after-b")
	f.Add([]byte("[registries.\"Index.Docker.IO\"]\nmirrors = [\"http://[::1]:5000/hub/\"]\n"),
		"docker.io=https://u:"+fuzzSecret+"@hub.example.net;*=https://all.example.net",
		[]byte(nil), []byte("[registries.\"docker.io\"]\nmirrors = [\"https://d.example.net\"]\n"),
		[]byte("[registries.\"quay.io\"]\nmirrors = [\"ftp://q\"]\n"), "\x80\x01 odd")

	f.Fuzz(func(t *testing.T, mdConfig []byte, mdMirrors string, main, dropA, dropB []byte,
		nameA string) {
		nameA = strings.Map(func(r rune) rune {
			if r == '/' || r == 0 {
				return '_'
			}
			return r
		}, nameA) + ".toml"
		if nameA == "20-b.toml" || len(nameA) > 200 {
			return
		}
		docs := []layerDoc{
			{src: spec.Source{Layer: spec.LayerMetadata, Name: fuzzConfigSource}, data: mdConfig},
			{src: spec.Source{Layer: spec.LayerMetadata, Name: fuzzMirrorsSource},
				data: []byte(mdMirrors), compact: true},
			{data: main, path: DefaultFile},
			{data: dropA, path: "/etc/mirrord/conf.d/" + nameA},
			{data: dropB, path: "/etc/mirrord/conf.d/20-b.toml"},
		}
		if nameA > "20-b.toml" { // drop-ins apply in lexical order
			docs[3], docs[4] = docs[4], docs[3]
		}
		if err := os.RemoveAll(filepath.Join(root, "etc/mirrord/conf.d")); err != nil {
			t.Fatal(err)
		}
		values := &metadata.Values{Provider: metadata.GCE, Mirrors: mdMirrors,
			Config: mdConfig, Source: map[string]string{}}
		if len(mdConfig) > 0 {
			values.Source[metadata.KeyConfig] = fuzzConfigSource
		}
		if mdMirrors != "" {
			values.Source[metadata.KeyMirrors] = fuzzMirrorsSource
		}
		for i := range docs {
			if docs[i].path != "" {
				docs[i].src = spec.Source{Layer: spec.LayerFile, Name: docs[i].path}
				writeOrRemove(t, filepath.Join(root, docs[i].path), docs[i].data)
			}
		}

		c, err := Load(Options{Root: root, Metadata: values})
		alone, firstBad := parseAlone(t, docs)
		if firstBad >= 0 {
			if err == nil {
				t.Fatalf("Load accepts the layers, though %s fails alone", docs[firstBad].src)
			}
			checkLoadError(t, err, docs[firstBad])
			return
		}
		if err != nil {
			t.Fatalf("Load fails though every document parses alone: %v", err)
		}

		checkSpec(t, c.Spec)
		checkLayering(t, c.Spec, alone)
		checkRuntimes(t, c, docs, alone)
	})
}

// writeOrRemove writes data to path, or removes path when data is empty.
func writeOrRemove(t *testing.T, path string, data []byte) {
	t.Helper()

	if len(data) == 0 {
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			t.Fatal(err)
		}
		return
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// parseAlone parses each present document on its own, and returns what it
// found and the index of the first document that fails, or -1. Each TOML
// document that parses is checked against a plain decode of it.
func parseAlone(t *testing.T, docs []layerDoc) ([]*File, int) {
	t.Helper()

	out := make([]*File, len(docs))
	for i, d := range docs {
		if len(d.data) == 0 {
			continue
		}
		var f File
		var err error
		switch {
		case d.compact:
			f.Spec, err = spec.ParseCompact(string(d.data), d.src)
		case d.path == "":
			f, err = parseDoc(d.data, d.src)
		default:
			f, err = ParseFile(d.data, d.path)
		}
		if err != nil {
			return out, i
		}
		if !d.compact {
			checkAgainstDecode(t, d, f)
		}
		out[i] = &f
	}
	return out, -1
}

// checkLoadError checks that err names bad, the document that fails, and
// shows none of a metadata value's URL credentials.
func checkLoadError(t *testing.T, err error, bad layerDoc) {
	t.Helper()

	msg := err.Error()
	if want := bad.src.String() + ": "; !strings.HasPrefix(msg, want) {
		t.Fatalf("the error does not start with %q, the document at fault:\n%s", want, msg)
	}
	if bad.src.Layer != spec.LayerMetadata || !strings.Contains(msg, fuzzSecret) {
		return
	}
	var texts []string
	if bad.compact {
		texts = compactFields(string(bad.data))
	} else {
		var doc any
		if toml.Unmarshal(bad.data, &doc) != nil {
			return
		}
		texts = tomlStrings(doc)
	}
	if onlyAsCredentials(texts, fuzzSecret) {
		t.Fatalf("the error shows the credentials of a URL in %s:\n%s", bad.src, msg)
	}
}

// checkSpec fails unless s is a valid Spec, and checks each registry's
// hosts.toml against containerd's schema.
func checkSpec(t *testing.T, s spec.Spec) {
	t.Helper()

	for i, r := range s.Registries {
		if h, err := spec.NormalizeHost(r.Host); err != nil || h != r.Host {
			t.Fatalf("host %q does not normalise to itself: %q, %v", r.Host, h, err)
		}
		if i > 0 {
			prev := s.Registries[i-1].Host
			if r.Host == spec.Wildcard || (prev != spec.Wildcard && prev >= r.Host) {
				t.Fatalf("registries out of order or twice: %q before %q", prev, r.Host)
			}
		}
		if err := spec.CheckMirrors(r); err != nil {
			t.Fatalf("registry %s: %v", r.Host, err)
		}
		for _, m := range r.Mirrors {
			checkMirror(t, r.Host, m)
		}
		hoststest.Check(t, containerd.HostDir(r.Host)+"/hosts.toml", containerd.RenderHosts(r))
	}
}

func checkMirror(t *testing.T, host string, m spec.Mirror) {
	t.Helper()

	if u, err := spec.ValidateMirrorURL(m.URL); err != nil || u != m.URL {
		t.Fatalf("registry %s: mirror %q does not validate to itself: %q, %v", host, m.URL, u,
			err)
	}
	names := make([]string, len(m.Capabilities))
	for i, c := range m.Capabilities {
		names[i] = string(c)
	}
	if caps, err := spec.ParseCapabilities(names); err != nil || !slices.Equal(caps,
		m.Capabilities) {
		t.Fatalf("registry %s: mirror %s: capabilities %v are not canonical: %v", host, m.URL,
			m.Capabilities, err)
	}
	if m.CAFile != "" && !strings.HasPrefix(m.CAFile, "/") {
		t.Fatalf("registry %s: mirror %s: ca_file %q is not absolute", host, m.URL, m.CAFile)
	}
}

// checkLayering checks that every registry of s is the whole entry of the
// highest document naming it, source included, and that s names no other.
func checkLayering(t *testing.T, s spec.Spec, alone []*File) {
	t.Helper()

	want := map[string]spec.Registry{}
	for _, f := range alone {
		if f == nil {
			continue
		}
		for _, r := range f.Spec.Registries {
			want[r.Host] = r
		}
	}
	if len(s.Registries) != len(want) {
		t.Fatalf("Load gives %d registries; the documents name %d", len(s.Registries),
			len(want))
	}
	for _, r := range s.Registries {
		w, ok := want[r.Host]
		if !ok {
			t.Fatalf("Load gives registry %q, which no document names", r.Host)
		}
		if diff := cmp.Diff(w, r); diff != "" {
			t.Fatalf("registry %s is not the whole entry of %s (-want +got):\n%s", r.Host,
				w.Source, diff)
		}
	}
}

// checkRuntimes checks that the runtimes and their source are those of the
// highest document that sets them.
func checkRuntimes(t *testing.T, c Config, docs []layerDoc, alone []*File) {
	t.Helper()

	var want []Runtime
	var from string
	for i, f := range alone {
		if f != nil && f.Runtimes != nil {
			want, from = f.Runtimes, docs[i].src.String()
		}
	}
	if !slices.Equal(c.Runtimes, want) || c.RuntimesFrom != from {
		t.Fatalf("runtimes %v from %q; want %v from %q", c.Runtimes, c.RuntimesFrom, want, from)
	}
}

// checkAgainstDecode compares what parseDoc made of d with a plain TOML
// decode: the same registries under their normalised names, the same
// mirror URLs in order, the same upstream and runtimes.
func checkAgainstDecode(t *testing.T, d layerDoc, f File) {
	t.Helper()

	var doc map[string]any
	if err := toml.Unmarshal(d.data, &doc); err != nil {
		t.Fatalf("%s parses, but does not decode as TOML: %v", d.src, err)
	}

	regs, _ := doc["registries"].(map[string]any)
	if len(regs) != len(f.Spec.Registries) {
		t.Fatalf("%s holds %d registries; parsed %d", d.src, len(regs), len(f.Spec.Registries))
	}
	for name, v := range regs {
		host, _ := spec.NormalizeHost(name)
		r, ok := f.Spec.Lookup(host)
		if !ok || r.Source != d.src {
			t.Fatalf("%s: registry %q parsed as %+v, %v", d.src, name, r, ok)
		}
		table, _ := v.(map[string]any)
		if up, ok := table["upstream"].(bool); ok && up == r.NoUpstream {
			t.Fatalf("%s: registry %q: upstream = %v, parsed NoUpstream %v", d.src, name, up,
				r.NoUpstream)
		}
		list, _ := table["mirrors"].([]any)
		if len(list) != len(r.Mirrors) {
			t.Fatalf("%s: registry %q holds %d mirrors; parsed %d", d.src, name, len(list),
				len(r.Mirrors))
		}
		for i, m := range list {
			raw, isString := m.(string)
			if !isString {
				raw, _ = m.(map[string]any)["url"].(string)
			}
			if u, _ := spec.ValidateMirrorURL(raw); u != r.Mirrors[i].URL {
				t.Fatalf("%s: registry %q: mirror %d is %q; parsed %q", d.src, name, i, raw,
					r.Mirrors[i].URL)
			}
		}
	}

	_, set := doc["runtimes"]
	if set != (f.Runtimes != nil) {
		t.Fatalf("%s: runtimes set %v, parsed %v", d.src, set, f.Runtimes)
	}
}

// compactFields splits a compact-form value into the registry names and
// URLs ParseCompact sees.
func compactFields(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool {
		return r == ';' || r == '\n' || r == ',' || r == '='
	})
}

// tomlStrings lists every key and string value in a decoded TOML document.
func tomlStrings(v any) []string {
	switch v := v.(type) {
	case string:
		return []string{v}
	case []any:
		var out []string
		for _, e := range v {
			out = append(out, tomlStrings(e)...)
		}
		return out
	case map[string]any:
		var out []string
		for k, e := range v {
			out = append(out, k)
			out = append(out, tomlStrings(e)...)
		}
		return out
	}
	return nil
}

// onlyAsCredentials reports whether secret occurs in texts and, wherever it
// does, within the user information of a URL as url.Parse reads it: after
// "://", before the last '@' ahead of the first '/', '?' or '#'.
func onlyAsCredentials(texts []string, secret string) bool {
	found := false
	for _, s := range texts {
		for i := 0; ; {
			j := strings.Index(s[i:], secret)
			if j < 0 {
				break
			}
			at := i + j
			if !inUserinfo(s, at, at+len(secret)) {
				return false
			}
			found = true
			i = at + 1
		}
	}
	return found
}

// inUserinfo reports whether s[start:end] lies within the user information
// of a URL in s.
func inUserinfo(s string, start, end int) bool {
	for i := 0; ; {
		j := strings.Index(s[i:], "://")
		if j < 0 {
			return false
		}
		from := i + j + len("://")
		auth := s[from:]
		if k := strings.IndexAny(auth, "/?#"); k >= 0 {
			auth = auth[:k]
		}
		if k := strings.LastIndex(auth, "@"); k >= 0 && start >= from && end <= from+k {
			return true
		}
		i = from
	}
}
