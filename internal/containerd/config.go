package containerd

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/pelletier/go-toml/v2"
	"github.com/pelletier/go-toml/v2/unstable"

	"github.com/mirrord/mirrord/internal/spec"
)

// Edit is what EditConfig decided for one config.toml.
type Edit struct {
	// Data is the new config.toml. It is bytes.Equal to the input when
	// nothing needs to change (and when CRIDisabled is set).
	Data []byte

	// Version is the file's `version`, 1 when it has no version line.
	Version int

	// Legacy lists, sorted by host with the wildcard first, every registry
	// whose legacy registry.mirrors table was removed and still names a
	// mirror once the registry's own upstream is left out. Each carries
	// Source{Layer: spec.LayerLegacy, Name: "config.toml registry.mirrors"}.
	// A table that named only the upstream is removed and not listed.
	Legacy []spec.Registry

	// CRIDisabled reports that disabled_plugins names the CRI plugin, as
	// Docker's containerd.io package ships it; Data is then the input.
	CRIDisabled bool

	// OldConfigPath is the config_path value that was replaced, "" when the
	// key was missing or already CertsDir.
	OldConfigPath string
}

// legacySource is the Source of every registry moved out of config.toml.
var legacySource = spec.Source{Layer: spec.LayerLegacy, Name: "config.toml registry.mirrors"}

// criPlugins names, per config version, the plugins whose presence in
// disabled_plugins turns off CRI image pulls.
var criPlugins = map[int][]string{
	1: {"cri", "io.containerd.grpc.v1.cri"},
	2: {"io.containerd.grpc.v1.cri"},
	3: {"io.containerd.grpc.v1.cri", "io.containerd.cri.v1.images"},
	4: {"io.containerd.grpc.v1.cri", "io.containerd.cri.v1.images"},
}

// registryPath returns the key path of the CRI registry table that a file
// of the given config version is read with (FACTS 2.1).
func registryPath(version int) []string {
	switch version {
	case 1:
		return []string{"plugins", "cri", "registry"}
	case 2:
		return []string{"plugins", "io.containerd.grpc.v1.cri", "registry"}
	default:
		return []string{"plugins", "io.containerd.cri.v1.images", "registry"}
	}
}

// EditConfig returns config.toml src with the CRI registry's config_path
// set to CertsDir and the legacy registry.mirrors tables removed, changing
// no other byte. major is the installed containerd's major version, 0 when
// unknown; it only matters for a file without a version line, which
// containerd 2.x reads without its registry table.
//
// The registry table is the one the file's version selects: plugins.cri
// for version 1, plugins."io.containerd.grpc.v1.cri" for 2, and
// plugins."io.containerd.cri.v1.images" for 3 and 4. An existing config_path
// has its value replaced wherever it is written; a registry table without
// the key gets a line after its last key; a file without the table gets a
// new table at its end.
//
// It refuses, with an error naming the key and line: a file it cannot
// parse, an unknown version, a registry table it cannot edit in place
// (an inline table), a legacy mirror endpoint that hosts.toml cannot
// express, and configs.*.tls on version 1 or 2, which containerd 1.x
// refuses next to config_path. The returned data always decodes to the
// input document with only config_path and the mirrors entries changed;
// anything else is an error, never data.
func EditConfig(src []byte, major int) (Edit, error) {
	doc, err := decodeConfig(src)
	if err != nil {
		return Edit{}, err
	}

	version, err := configVersion(doc)
	if err != nil {
		return Edit{}, err
	}
	if criDisabled(doc, version) {
		return Edit{Data: src, Version: version, CRIDisabled: true}, nil
	}
	if version == 1 && major >= 2 {
		return Edit{}, fmt.Errorf("config.toml has no version line, and containerd %d.x "+
			"ignores the plugins.cri.registry table of such a file; rewrite it as "+
			"version = 2 (plugins named \"io.containerd.grpc.v1.cri\") or version = 3, "+
			"then run mirrord again", major)
	}

	exprs, err := scan(src)
	if err != nil {
		return Edit{}, fmt.Errorf("parse config.toml: %w", err)
	}
	regPath := registryPath(version)
	reg, err := tableAt(doc, regPath)
	if err != nil {
		return Edit{}, fmt.Errorf("config.toml %w", err)
	}
	if version <= 2 {
		if err := checkTLS(src, exprs, reg, regPath); err != nil {
			return Edit{}, err
		}
	}
	legacy, err := legacyRegistries(src, exprs, reg, regPath)
	if err != nil {
		return Edit{}, err
	}

	edits, appendTable, err := planEdits(src, exprs, reg, regPath)
	if err != nil {
		return Edit{}, err
	}
	out, err := splice(src, edits)
	if err != nil {
		return Edit{}, err
	}
	if appendTable {
		out = appendRegistryTable(out, regPath, newline(src))
	}
	if err := verify(doc, out, regPath); err != nil {
		return Edit{}, err
	}

	ed := Edit{Data: out, Version: version, Legacy: legacy}
	if old, ok := reg["config_path"]; ok && old != CertsDir {
		ed.OldConfigPath = fmt.Sprint(old)
	}
	if bytes.Equal(out, src) {
		ed.Data = src
	}
	return ed, nil
}

// MinimalConfig returns the config.toml mirrord writes when there is none:
// version 3 for containerd 2.x and later, version 2 otherwise (it is read by
// 1.x and, migrated in memory, by 2.x alike). It sets config_path and
// nothing else, so containerd's defaults apply to every other setting.
func MinimalConfig(major int) []byte {
	version := 2
	if major >= 2 {
		version = 3
	}
	return fmt.Appendf(nil, "# Written by mirrord: there was no config.toml. It only points the\n"+
		"# CRI plugin at the hosts.toml files under %s;\n"+
		"# containerd's defaults apply to everything else.\n"+
		"version = %d\n\n[%s]\n  config_path = %s\n",
		CertsDir, version, renderKey(registryPath(version)), quote(CertsDir))
}

// decodeConfig decodes src, turning go-toml's error into one that names the
// line.
func decodeConfig(src []byte) (map[string]any, error) {
	doc := map[string]any{}
	err := toml.Unmarshal(src, &doc)
	var de *toml.DecodeError
	switch {
	case errors.As(err, &de):
		line, _ := de.Position()
		return nil, fmt.Errorf("parse config.toml: line %d: %s", line,
			strings.TrimPrefix(de.Error(), "toml: "))
	case err != nil:
		return nil, fmt.Errorf("parse config.toml: %w", err)
	}
	return doc, nil
}

// configVersion returns the document's version, 1 when it has none.
func configVersion(doc map[string]any) (int, error) {
	v, ok := doc["version"]
	if !ok {
		return 1, nil
	}
	n, isInt := v.(int64)
	if !isInt {
		return 0, fmt.Errorf("config.toml version = %s is not an integer; want 2, 3 or 4",
			tomlValue(v))
	}
	if n < 1 || n > 4 {
		return 0, fmt.Errorf("config.toml version = %d is not supported; mirrord knows "+
			"versions 1 (no version line), 2, 3 and 4", n)
	}
	return int(n), nil
}

// criDisabled reports whether disabled_plugins turns off CRI image pulls.
func criDisabled(doc map[string]any, version int) bool {
	list, _ := doc["disabled_plugins"].([]any)
	for _, v := range list {
		if s, ok := v.(string); ok && slices.Contains(criPlugins[version], s) {
			return true
		}
	}
	return false
}

// tableAt returns the table at path, nil when some part of it is missing.
// A part that exists but is not a table is an error that names it.
func tableAt(doc map[string]any, path []string) (map[string]any, error) {
	cur := doc
	for i, k := range path {
		v, ok := cur[k]
		if !ok {
			return nil, nil
		}
		t, ok := v.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("%s = %s is %s, not a table; containerd reads its "+
				"registry settings from [%s]", renderKey(path[:i+1]), tomlValue(v), tomlType(v),
				renderKey(path))
		}
		cur = t
	}
	return cur, nil
}

// checkTLS refuses configs."<host>".tls, which containerd 1.x rejects when
// config_path is set.
func checkTLS(src []byte, exprs []expr, reg map[string]any, regPath []string) error {
	configs, _ := reg["configs"].(map[string]any)
	for _, host := range sortedKeys(configs) {
		cfg, _ := configs[host].(map[string]any)
		if _, ok := cfg["tls"]; !ok {
			continue
		}
		key := append(slices.Clone(regPath), "configs", host, "tls")
		return fmt.Errorf("config.toml %s%s cannot stay beside config_path: containerd "+
			"1.x refuses it; move it to %s/%s/hosts.toml (ca_file as ca, cert_file and "+
			"key_file as client, insecure_skip_verify as skip_verify) and delete it",
			renderKey(key), atLine(src, exprs, key), CertsDir, hostDirOf(host))
	}
	return nil
}

// hostDirOf is HostDir for a host as written in config.toml.
func hostDirOf(raw string) string {
	host, err := spec.NormalizeHost(raw)
	if err != nil {
		return raw
	}
	return HostDir(host)
}

// atLine returns " (line N)" for the first expression under key, or "".
func atLine(src []byte, exprs []expr, key []string) string {
	for _, e := range exprs {
		if hasPrefix(e.path, key) || hasPrefix(key, e.path) && e.kind == unstable.KeyValue {
			return fmt.Sprintf(" (line %d)", lineOf(src, e.start))
		}
	}
	return ""
}

// edit replaces src[start:end] with text; start == end inserts.
type edit struct {
	start, end int
	text       string
}

// planEdits lists the byte edits that set config_path and drop the legacy
// mirrors. appendTable asks for a new registry table at the end.
func planEdits(src []byte, exprs []expr, reg map[string]any, regPath []string) (
	edits []edit, appendTable bool, err error) {

	mirrorsPath := append(slices.Clone(regPath), "mirrors")
	cfgPath := append(slices.Clone(regPath), "config_path")
	nl := newline(src)
	var (
		cfg, header, dotted = -1, -1, -1
		dottedSection       = -2
	)
	for i, e := range exprs {
		switch {
		case e.kind == unstable.KeyValue && e.valKind == unstable.InlineTable &&
			hasPrefix(regPath, e.path):
			return nil, false, fmt.Errorf("config.toml %s (line %d) is an inline table, "+
				"which mirrord cannot edit safely; write it as a [%s] table and run mirrord "+
				"again", renderKey(e.path), lineOf(src, e.start), renderKey(e.path))

		case e.kind == unstable.Table && slices.Equal(e.path, regPath):
			header = i

		case e.kind == unstable.KeyValue && slices.Equal(e.path, cfgPath):
			cfg = i

		case len(e.path) > len(mirrorsPath) && hasPrefix(e.path, mirrorsPath):
			edits = append(edits, edit{start: e.start, end: sectionEnd(exprs, i)})

		case e.kind == unstable.KeyValue && slices.Equal(e.path, mirrorsPath) && !e.valEmpty:
			edits = append(edits, edit{start: e.valStart, end: e.valEnd, text: "{}"})
		}

		// A key under the registry table written as a dotted key below one
		// of its parents: config_path can join it there.
		if e.kind == unstable.KeyValue && !e.inArray && len(e.table) < len(regPath) &&
			hasPrefix(regPath, e.table) && len(e.path) > len(regPath) &&
			hasPrefix(e.path, regPath) {
			section := sectionOf(exprs, i)
			if dottedSection == -2 {
				dottedSection = section
			}
			if section == dottedSection {
				dotted = i
			}
		}
	}

	value := quote(CertsDir)
	switch {
	case cfg >= 0:
		if s, ok := reg["config_path"].(string); !ok || s != CertsDir {
			e := exprs[cfg]
			edits = append(edits, edit{start: e.valStart, end: e.valEnd, text: value})
		}

	case header >= 0:
		last, indent := header, exprs[header].indent+keyIndent(exprs)
		for j := header + 1; j < len(exprs) && exprs[j].kind == unstable.KeyValue; j++ {
			last, indent = j, exprs[j].indent
		}
		edits = append(edits, insertLine(src, exprs[last].end,
			indent+"config_path = "+value, nl))

	case dotted >= 0:
		e := exprs[dotted]
		key := append(slices.Clone(regPath[len(e.table):]), "config_path")
		edits = append(edits, insertLine(src, e.end, e.indent+renderKey(key)+" = "+value, nl))

	default:
		appendTable = true
	}
	return edits, appendTable, nil
}

// sectionEnd returns the end of the last line that belongs to the table or
// key/value at i: for a header, its last key/value (comments and blank lines
// after it stay); for a key/value, its own last line.
func sectionEnd(exprs []expr, i int) int {
	if exprs[i].kind == unstable.KeyValue {
		return exprs[i].end
	}
	end := exprs[i].end
	for j := i + 1; j < len(exprs) && exprs[j].kind == unstable.KeyValue; j++ {
		end = exprs[j].end
	}
	return end
}

// sectionOf returns the index of the header that expression i sits under,
// -1 for the root table.
func sectionOf(exprs []expr, i int) int {
	for j := i; j >= 0; j-- {
		if exprs[j].kind != unstable.KeyValue {
			return j
		}
	}
	return -1
}

// keyIndent returns how much deeper than its header the file indents a
// table's keys, judged by the first header directly followed by a key.
func keyIndent(exprs []expr) string {
	for i := 0; i+1 < len(exprs); i++ {
		h, k := exprs[i], exprs[i+1]
		if h.kind == unstable.Table && k.kind == unstable.KeyValue &&
			strings.HasPrefix(k.indent, h.indent) {
			return k.indent[len(h.indent):]
		}
	}
	return ""
}

// insertLine inserts line at pos, which is the start of a line or the end
// of a file without a final newline.
func insertLine(src []byte, pos int, line, nl string) edit {
	text := line + nl
	if pos > 0 && src[pos-1] != '\n' {
		text = nl + text
	}
	return edit{start: pos, end: pos, text: text}
}

// splice applies edits to src. Removals may nest or overlap; any other
// overlap is a bug in planEdits and an error.
func splice(src []byte, edits []edit) ([]byte, error) {
	sort.SliceStable(edits, func(i, j int) bool {
		if edits[i].start != edits[j].start {
			return edits[i].start < edits[j].start
		}
		return edits[i].end < edits[j].end
	})

	var merged []edit
	for _, e := range edits {
		if n := len(merged); n > 0 && e.start < merged[n-1].end {
			last := &merged[n-1]
			if e.text != "" || last.text != "" {
				return nil, fmt.Errorf("edit config.toml: overlapping changes at offset %d; "+
					"the file was left as it is", e.start)
			}
			last.end = max(last.end, e.end)
			continue
		}
		merged = append(merged, e)
	}

	out := make([]byte, 0, len(src)+64)
	pos := 0
	for _, e := range merged {
		out = append(out, src[pos:e.start]...)
		out = append(out, e.text...)
		pos = e.end
	}
	return append(out, src[pos:]...), nil
}

// appendRegistryTable adds a registry table holding config_path at the end
// of out, after one blank line.
func appendRegistryTable(out []byte, regPath []string, nl string) []byte {
	if len(out) > 0 && !bytes.HasSuffix(out, []byte(nl)) {
		out = append(out, nl...)
	}
	if len(bytes.TrimSpace(out)) > 0 && !bytes.HasSuffix(out, []byte(nl+nl)) {
		out = append(out, nl...)
	}
	return fmt.Appendf(out, "[%s]%s  config_path = %s%s", renderKey(regPath), nl,
		quote(CertsDir), nl)
}

// newline returns the file's line ending.
func newline(src []byte) string {
	if bytes.Contains(src, []byte("\r\n")) {
		return "\r\n"
	}
	return "\n"
}

// verify decodes out and checks that it says what doc said, except that
// config_path is CertsDir and the mirrors table is empty.
func verify(doc map[string]any, out []byte, regPath []string) error {
	got := map[string]any{}
	if err := toml.Unmarshal(out, &got); err != nil {
		return fmt.Errorf("edit config.toml: the edited file does not parse (%v); "+
			"the file was left as it is", err)
	}

	want, _ := clone(doc).(map[string]any)
	reg := want
	for _, k := range regPath {
		next, ok := reg[k].(map[string]any)
		if !ok {
			next = map[string]any{}
			reg[k] = next
		}
		reg = next
	}
	reg["config_path"] = CertsDir
	delete(reg, "mirrors")
	if t, err := tableAt(got, regPath); err == nil && t != nil {
		if m, ok := t["mirrors"].(map[string]any); ok && len(m) == 0 {
			delete(t, "mirrors")
		}
	}

	if where := firstDiff(want, got, nil); where != nil {
		what := renderKey(where)
		if what == "" {
			what = "the document"
		}
		return fmt.Errorf("edit config.toml: the edit would change %s as well; "+
			"the file was left as it is", what)
	}
	return nil
}
