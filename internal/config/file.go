package config

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/pelletier/go-toml/v2"

	"github.com/mirrord/mirrord/internal/spec"
)

// File is one parsed config file or drop-in.
type File struct {
	Spec     spec.Spec
	Runtimes []Runtime // nil when the file does not set runtimes
}

// fileDoc is the schema of mirrord.toml:
//
//	runtimes = ["containerd", "docker"]   # optional
//
//	[registries."docker.io"]
//	upstream = true                       # keep the registry as last resort
//	canary = "library/busybox:latest"     # what probes ask for; "" for none
//	mirrors = [
//	  "https://mirror.example.net",
//	  "google",                           # a preset
//	  { url = "http://10.0.0.5:5000", capabilities = ["pull"] },
//	  { url = "gitlab:gitlab.example.net/platform", username = "robot",
//	    password_file = "/etc/mirrord/secrets/gitlab" },
//	  { url = "https://cache.example.net", trusted = false },
//	]
type fileDoc struct {
	Runtimes   *[]string              `toml:"runtimes"`
	Registries map[string]registryDoc `toml:"registries"`
}

type registryDoc struct {
	Mirrors  []any   `toml:"mirrors"`
	Upstream *bool   `toml:"upstream"`
	Canary   *string `toml:"canary"`
}

// mirrorKeys are the keys a mirror table may have.
var mirrorKeys = []string{"url", "capabilities", "ca_file", "skip_verify", "trusted",
	"username", spec.KeyPasswordFile, spec.KeyPasswordEnv, spec.KeyPasswordMetadata}

// ParseFile parses one config file or drop-in; path names it in errors and
// in the source of every registry it defines.
func ParseFile(data []byte, path string) (File, error) {
	f, err := parseDoc(data, spec.Source{Layer: spec.LayerFile, Name: path})
	if err != nil {
		return File{}, fmt.Errorf("file %s: %w", path, err)
	}
	return f, nil
}

// parseDoc parses a document in the file's schema, from a file or from
// metadata; every registry it defines carries src. Its errors name the key
// at fault but not the document, which the caller names. A document that
// is no TOML, or does not fit the schema's types, gives a *decodeError.
func parseDoc(data []byte, src spec.Source) (File, error) {
	var doc fileDoc
	dec := toml.NewDecoder(bytes.NewReader(data)).DisallowUnknownFields()
	if err := dec.Decode(&doc); err != nil {
		return File{}, newDecodeError(err)
	}
	if err := checkKeyCase(data); err != nil {
		return File{}, err
	}

	var f File
	if doc.Runtimes != nil {
		rs, err := ParseRuntimes(*doc.Runtimes)
		if err != nil {
			return File{}, fmt.Errorf("runtimes: %w", err)
		}
		f.Runtimes = rs
	}

	var rs []spec.Registry
	for _, name := range sortedKeys(doc.Registries) {
		key := fmt.Sprintf("registries.%q", name)
		r, err := parseRegistry(name, doc.Registries[name], src)
		if err != nil {
			return File{}, fmt.Errorf("%s: %w", key, err)
		}
		rs = append(rs, r)
	}
	s, err := spec.New(rs)
	if err != nil {
		return File{}, fmt.Errorf("registries: %w", err)
	}
	f.Spec = s
	return f, nil
}

func parseRegistry(name string, doc registryDoc, src spec.Source) (spec.Registry, error) {
	host, err := spec.NormalizeHost(name)
	if err != nil {
		return spec.Registry{}, err
	}
	r := spec.Registry{Host: host, Source: src}
	if doc.Upstream != nil {
		r.NoUpstream = !*doc.Upstream
	}
	if doc.Canary != nil {
		if *doc.Canary == "" {
			r.NoCanary = true
		} else if r.Canary, err = spec.ParseCanary(*doc.Canary, host); err != nil {
			return spec.Registry{}, fmt.Errorf("canary: %q: %w", *doc.Canary, err)
		}
	}

	for i, raw := range doc.Mirrors {
		m, err := parseMirror(raw, host)
		if err != nil {
			return spec.Registry{}, fmt.Errorf("mirrors[%d]: %w", i, err)
		}
		r.Mirrors = append(r.Mirrors, m)
	}
	if err := spec.CheckMirrors(r); err != nil {
		return spec.Registry{}, err
	}
	return r, nil
}

// parseMirror takes a mirror of registry host given as a URL or preset
// string, or as a table.
func parseMirror(raw any, host string) (spec.Mirror, error) {
	switch v := raw.(type) {
	case string:
		m, err := spec.NewMirrorFor(v, host)
		if err != nil {
			return spec.Mirror{}, fmt.Errorf("%q: %w", v, err)
		}
		return m, nil
	case map[string]any:
		return parseMirrorTable(v, host)
	}
	return spec.Mirror{}, fmt.Errorf("%v is a %s; want a URL string or a table "+
		"{ url = \"https://...\", capabilities = [...], ca_file = \"...\", skip_verify = false }",
		raw, tomlType(raw))
}

func parseMirrorTable(t map[string]any, host string) (spec.Mirror, error) {
	for _, k := range sortedKeys(t) {
		if !slices.Contains(mirrorKeys, k) {
			return spec.Mirror{}, fmt.Errorf("unknown key %q; valid: %s", k,
				strings.Join(mirrorKeys, ", "))
		}
	}

	rawURL, ok := t["url"].(string)
	if !ok {
		return spec.Mirror{}, fmt.Errorf("url: missing or not a string; want url = \"https://...\"")
	}
	m, err := spec.NewMirrorFor(rawURL, host)
	if err != nil {
		return spec.Mirror{}, fmt.Errorf("url: %q: %w", rawURL, err)
	}

	if v, ok := t["capabilities"]; ok {
		names, err := stringList(v)
		if err != nil {
			return spec.Mirror{}, fmt.Errorf("capabilities: %w", err)
		}
		caps, err := spec.ParseCapabilities(names)
		if err != nil {
			return spec.Mirror{}, fmt.Errorf("capabilities: %w", err)
		}
		m.Capabilities = caps
	}
	if v, ok := t["ca_file"]; ok {
		ca, ok := v.(string)
		if !ok || !strings.HasPrefix(ca, "/") {
			return spec.Mirror{}, fmt.Errorf("ca_file: %v: want an absolute path as a string", v)
		}
		m.CAFile = ca
	}
	if v, ok := t["skip_verify"]; ok {
		b, ok := v.(bool)
		if !ok {
			return spec.Mirror{}, fmt.Errorf("skip_verify: %v: want true or false", v)
		}
		m.SkipVerify = b
	}
	if err := parseTrust(t, &m); err != nil {
		return spec.Mirror{}, err
	}

	auth, err := parseAuth(t)
	if err != nil {
		return spec.Mirror{}, err
	}
	m.Auth = auth
	return m, nil
}

// parseTrust reads trusted: false makes the mirror pull-only, and
// capabilities that say resolve too are a contradiction.
func parseTrust(t map[string]any, m *spec.Mirror) error {
	v, ok := t["trusted"]
	if !ok {
		return nil
	}
	trusted, ok := v.(bool)
	if !ok {
		return fmt.Errorf("trusted: %v: want true or false", v)
	}
	if trusted {
		return nil
	}

	if _, set := t["capabilities"]; set && m.Has(spec.Resolve) {
		return fmt.Errorf("trusted: false allows pull only, but capabilities include " +
			"resolve; drop resolve (or the capabilities key)")
	}
	m.Untrusted = true
	m.Capabilities = []spec.Capability{spec.Pull}
	return nil
}

func stringList(v any) ([]string, error) {
	list, ok := v.([]any)
	if !ok {
		return nil, fmt.Errorf("%v is a %s; want a list of strings", v, tomlType(v))
	}
	out := make([]string, 0, len(list))
	for _, e := range list {
		s, ok := e.(string)
		if !ok {
			return nil, fmt.Errorf("%v is a %s; want a list of strings", e, tomlType(e))
		}
		out = append(out, s)
	}
	return out, nil
}

func tomlType(v any) string {
	switch v.(type) {
	case string:
		return "string"
	case bool:
		return "boolean"
	case int64, float64:
		return "number"
	case []any:
		return "list"
	case map[string]any:
		return "table"
	}
	return fmt.Sprintf("%T", v)
}

// registryKeys are the keys a registry table may have.
var registryKeys = []string{"mirrors", "upstream", "canary"}

// validKeys lists the keys of the file's schema, for errors.
const validKeys = `runtimes, registries."HOST".mirrors, registries."HOST".upstream, ` +
	`registries."HOST".canary`

// checkKeyCase refuses a key that names one of the schema's only when case
// is ignored, as go-toml matches struct fields: TOML keys are
// case-sensitive, and a [Registries."docker.io"] table beside
// [registries."docker.io"] would otherwise replace it without a word.
// Unknown keys in any case have been refused before, with their line.
func checkKeyCase(data []byte) error {
	var doc map[string]any
	if err := toml.Unmarshal(data, &doc); err != nil {
		return newDecodeError(err)
	}

	unknown := func(key string) error {
		return &decodeError{msg: fmt.Sprintf("unknown key %q (keys are case-sensitive); "+
			"valid: %s", key, validKeys)}
	}
	for _, k := range sortedKeys(doc) {
		if k != "runtimes" && k != "registries" {
			return unknown(k)
		}
	}
	regs, _ := doc["registries"].(map[string]any)
	for _, name := range sortedKeys(regs) {
		table, _ := regs[name].(map[string]any)
		for _, k := range sortedKeys(table) {
			if !slices.Contains(registryKeys, k) {
				return unknown("registries." + name + "." + k)
			}
		}
	}
	return nil
}

// decodeError is a document that go-toml could not decode: not TOML, an
// unknown key, or a value of the wrong type. Its text is one line with the
// line number.
type decodeError struct {
	msg string
	// needsHint is true when the text does not already say what is valid:
	// anything but an unknown key.
	needsHint bool
	err       error
}

func (e *decodeError) Error() string { return e.msg }
func (e *decodeError) Unwrap() error { return e.err }

// newDecodeError turns go-toml's errors into one line with the line number
// and, for unknown keys, the keys that are valid.
func newDecodeError(err error) *decodeError {
	var strict *toml.StrictMissingError
	if errors.As(err, &strict) && len(strict.Errors) > 0 {
		e := strict.Errors[0]
		row, _ := e.Position()
		return &decodeError{err: err, msg: fmt.Sprintf("line %d: unknown key %q; valid: %s",
			row, strings.Join(e.Key(), "."), validKeys)}
	}
	var de *toml.DecodeError
	if errors.As(err, &de) {
		row, _ := de.Position()
		return &decodeError{err: err, needsHint: true, msg: fmt.Sprintf("line %d: %s", row,
			strings.TrimPrefix(de.Error(), "toml: "))}
	}
	return &decodeError{err: err, needsHint: true, msg: strings.TrimPrefix(err.Error(), "toml: ")}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
