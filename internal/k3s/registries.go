package k3s

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/mirrord/mirrord/internal/spec"
)

// marker is the head comment of every entry mirrord owns.
const marker = "# Managed by mirrord; edits are overwritten. Change the mirrord spec instead."

// The sections of registries.yaml that hold entries mirrord may own.
const (
	sectionMirrors = "mirrors"
	sectionConfigs = "configs"
)

// schema is what k3s and RKE2 decode registries.yaml into (rancher/wharfie
// registries.Registry), cut to the keys mirrord reads or writes. Decoding
// into it checks the types of those keys; other keys are kept, unread.
type schema struct {
	Mirrors map[string]struct {
		Endpoints []string          `yaml:"endpoint"`
		Rewrites  map[string]string `yaml:"rewrite"`
	} `yaml:"mirrors"`
	Configs map[string]struct {
		Auth map[string]any `yaml:"auth"`
		TLS  *struct {
			CAFile             string `yaml:"ca_file"`
			CertFile           string `yaml:"cert_file"`
			KeyFile            string `yaml:"key_file"`
			InsecureSkipVerify bool   `yaml:"insecure_skip_verify"`
		} `yaml:"tls"`
	} `yaml:"configs"`
}

// Edit is what Merge decided for one registries.yaml.
type Edit struct {
	// Data is the new file. It is the input itself, byte for byte, when
	// mirrord's entries already say what the spec says.
	Data []byte

	// Changed reports that Data differs from the input in any byte: the
	// file must be written and k3s or RKE2 restarted. It is false
	// whenever the entries were already right, so a second Merge of its
	// own output never asks for a restart.
	Changed bool

	// Warnings name what registries.yaml cannot express, and the
	// operator's entries that mirrord replaced or left in its way.
	Warnings []string
}

// entry is one key of a section with the value mirrord wants there.
type entry struct {
	key   string
	value *yaml.Node
}

// Merge returns registries.yaml src with mirrord's entries set to what s
// says, and the operator's entries kept. src may be empty (no file yet).
//
// For each registry of s, in spec order, mirrors.<host>.endpoint lists its
// mirror URLs in spec order; the wildcard is "*", which k3s reads as every
// registry. A mirror with a path is written as <path>/v2, the API root,
// which k3s then uses verbatim (override_path). A mirror with a CA file or
// skip_verify gets configs.<mirror host>.tls with ca_file and
// insecure_skip_verify. Each such entry carries mirrord's marker comment.
// An entry mirrord marked that s no longer wants is removed, and a section
// that held only mirrord's entries goes with its last one.
//
// The operator's own mirrors.<host> for a registry of s is replaced (a
// registry's mirror list comes whole from one source), with a warning; the
// operator's configs.<host> for a mirror host is kept as it is, with a
// warning, since it may hold credentials. Warned and not expressed:
// no_upstream (k3s's --disable-default-registry-endpoint flag does that for
// a whole node), and mirrors without both capabilities (k3s gives every
// endpoint pull and resolve).
//
// What is kept byte for byte: the whole file, when mirrord's entries are
// already right. Otherwise the file is decoded into yaml.v3 nodes, edited
// and encoded again, which keeps every key, value, key order, anchor,
// quoting style and comment, and uses the indentation width of the file's
// first nested mapping; it does not keep blank lines, the indentation of
// sequences, flow-style spacing or a comment's exact column, and a comment
// that yaml.v3 attached to an entry mirrord removes moves to the end of the
// file.
//
// It refuses, naming the problem: a file that is not YAML, holds more than
// one document, is not a mapping at the top, or gives mirrors or configs
// (or their keys) the wrong type, which k3s would refuse too; and a file
// that makes mirrors or configs an alias, or uses a YAML merge key (<<) or
// an alias as a key at the top level or among their entries, which mirrord
// would misread. As a last guard the result is decoded again and every
// entry of the operator's is compared with the input; any difference is an
// error, never data.
func Merge(src []byte, s spec.Spec) (Edit, error) {
	doc, err := parseDocument(src)
	if err != nil {
		return Edit{}, err
	}
	root := doc.Content[0]
	beforeOps := operatorView(root, nil)
	beforeOurs := ourView(root)

	mirrors, configs, warnings := desired(s)
	w, err := editSection(root, sectionMirrors, mirrors, true)
	if err != nil {
		return Edit{}, err
	}
	warnings = append(warnings, w...)
	if w, err = editSection(root, sectionConfigs, configs, false); err != nil {
		return Edit{}, err
	}
	warnings = append(warnings, w...)

	afterOurs := ourView(root)
	if reflect.DeepEqual(beforeOurs, afterOurs) {
		return Edit{Data: src, Warnings: warnings}, nil
	}

	out, err := encode(doc, indentOf(root))
	if err != nil {
		return Edit{}, err
	}
	if err := verify(out, beforeOps, afterOurs); err != nil {
		return Edit{}, err
	}
	return Edit{Data: out, Changed: !bytes.Equal(out, src), Warnings: warnings}, nil
}

// parseDocument decodes src into a document node whose content is one
// mapping, and checks the types k3s would check. Empty input, or input with
// only comments, gives an empty mapping.
func parseDocument(src []byte) (*yaml.Node, error) {
	dec := yaml.NewDecoder(bytes.NewReader(src))
	var doc yaml.Node
	err := dec.Decode(&doc)
	switch {
	case errors.Is(err, io.EOF):
		// No document at all: keep the file's comments, if any, as the
		// new document's head.
		return &yaml.Node{Kind: yaml.DocumentNode, HeadComment: comments(src),
			Content: []*yaml.Node{{Kind: yaml.MappingNode, Tag: "!!map"}}}, nil
	case err != nil:
		return nil, fmt.Errorf("parse registries.yaml: %w", unwrapYAML(err))
	}

	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("parse registries.yaml: more than one YAML document; " +
			"k3s reads one mapping")
	}
	if len(doc.Content) == 0 {
		doc.Content = []*yaml.Node{{Kind: yaml.MappingNode, Tag: "!!map"}}
	}

	root := doc.Content[0]
	if root.Kind == yaml.ScalarNode && root.Tag == "!!null" {
		doc.Content[0] = &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map",
			HeadComment: root.HeadComment, FootComment: root.FootComment}
		return &doc, nil
	}
	if root.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("parse registries.yaml: line %d: the top level is %s; "+
			"want a mapping of mirrors and configs", root.Line, kindName(root))
	}

	var sc schema
	if err := root.Decode(&sc); err != nil {
		return nil, fmt.Errorf("parse registries.yaml: %w", unwrapYAML(err))
	}
	if err := checkKeys(root, "the top level"); err != nil {
		return nil, err
	}
	for _, name := range []string{sectionMirrors, sectionConfigs} {
		_, v := lookup(root, name)
		if v != nil && v.Kind == yaml.AliasNode {
			return nil, fmt.Errorf("parse registries.yaml: line %d: %s is an alias; "+
				"write it out so that mirrord can edit it", v.Line, name)
		}
		if v != nil {
			if err := checkKeys(v, name); err != nil {
				return nil, err
			}
		}
	}
	return &doc, nil
}

// checkKeys refuses a YAML merge key (<<) or a key that is an alias (*name)
// among the keys of mapping m, called where in errors. k3s resolves both,
// but mirrord reads and edits the keys as written: a mirrors entry of its
// own would silently shadow the operator's entry for the same registry,
// merged in from elsewhere or named through an alias, and Parse would
// report "<<" or the alias's name as a registry.
func checkKeys(m *yaml.Node, where string) error {
	if m.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i < len(m.Content); i += 2 {
		switch k := m.Content[i]; {
		case k.Tag == "!!merge":
			return fmt.Errorf("parse registries.yaml: line %d: %s holds a YAML merge key "+
				"(<<); write its entries out so that mirrord can edit it", k.Line, where)
		case k.Kind == yaml.AliasNode:
			return fmt.Errorf("parse registries.yaml: line %d: %s has a key that is an "+
				"alias (*%s); write it out so that mirrord can edit it", k.Line, where, k.Value)
		}
	}
	return nil
}

// comments returns the comment lines of a file that holds no YAML node,
// without their indentation.
func comments(src []byte) string {
	var out []string
	for line := range strings.SplitSeq(string(src), "\n") {
		if c := strings.TrimSpace(line); strings.HasPrefix(c, "#") {
			out = append(out, c)
		}
	}
	return strings.Join(out, "\n")
}

// unwrapYAML drops the "yaml: " prefix of yaml.v3's errors.
func unwrapYAML(err error) error {
	var te *yaml.TypeError
	if errors.As(err, &te) {
		return errors.New(strings.Join(te.Errors, "; "))
	}
	return errors.New(strings.TrimPrefix(err.Error(), "yaml: "))
}

// kindName names a node's kind for an error.
func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.SequenceNode:
		return "a sequence"
	case yaml.MappingNode:
		return "a mapping"
	case yaml.AliasNode:
		return "an alias"
	}
	return "a scalar"
}

// desired returns the mirrors and configs entries s calls for, and the
// warnings for what registries.yaml cannot say.
func desired(s spec.Spec) (mirrors, configs []entry, warnings []string) {
	tlsSeen := map[string]string{}
	for _, r := range s.Registries {
		var urls []string
		for _, m := range r.Mirrors {
			if m.Untrusted || m.Auth != nil {
				why := "it is untrusted (trusted = false), and k3s resolves tags on every endpoint"
				// TODO(#6): registries.yaml can carry credentials in
				// configs.<host>.auth; write them there, with the file 0600.
				if !m.Untrusted {
					why = "it needs credentials, which mirrord does not write into " +
						"registries.yaml"
				}
				warnings = append(warnings, fmt.Sprintf("registry %s mirror %s: left out of "+
					"registries.yaml: %s", r.Host, m.URL, why))
				continue
			}
			u := m.URL
			if m.Path() != "" {
				u = m.API()
			}
			urls = append(urls, u)

			if !m.Has(spec.Pull) || !m.Has(spec.Resolve) {
				warnings = append(warnings, fmt.Sprintf("registry %s mirror %s: capabilities "+
					"%v cannot be expressed in registries.yaml; k3s uses every endpoint "+
					"for tags and content alike", r.Host, m.URL, m.Capabilities))
			}
			if m.CAFile == "" && !m.SkipVerify {
				continue
			}
			if prev, dup := tlsSeen[m.Host()]; dup {
				if prev != m.URL {
					warnings = append(warnings, fmt.Sprintf("registry %s mirror %s: "+
						"configs.%s already set for %s; k3s keeps TLS settings per host",
						r.Host, m.URL, m.Host(), prev))
				}
				continue
			}
			tlsSeen[m.Host()] = m.URL
			configs = append(configs, entry{m.Host(), tlsNode(m)})
		}
		if len(urls) == 0 {
			continue // every mirror left out: k3s keeps what it had
		}
		mirrors = append(mirrors, entry{r.Host, endpointNode(urls)})

		if r.NoUpstream {
			warnings = append(warnings, fmt.Sprintf("registry %s: no_upstream cannot be "+
				"expressed in registries.yaml; k3s still falls back to the registry unless "+
				"started with --disable-default-registry-endpoint", r.Host))
		}
	}
	return mirrors, configs, warnings
}

// endpointNode is the value of mirrors.<host>: {endpoint: [urls]}.
func endpointNode(urls []string) *yaml.Node {
	seq := &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq"}
	for _, u := range urls {
		seq.Content = append(seq.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str",
			Value: u, Style: yaml.DoubleQuotedStyle})
	}
	return &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map",
		Content: []*yaml.Node{scalar("endpoint"), seq}}
}

// tlsNode is the value of configs.<mirror host>: {tls: {...}}.
func tlsNode(m spec.Mirror) *yaml.Node {
	tls := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
	if m.CAFile != "" {
		tls.Content = append(tls.Content, scalar("ca_file"), &yaml.Node{Kind: yaml.ScalarNode,
			Tag: "!!str", Value: m.CAFile, Style: yaml.DoubleQuotedStyle})
	}
	if m.SkipVerify {
		tls.Content = append(tls.Content, scalar("insecure_skip_verify"),
			&yaml.Node{Kind: yaml.ScalarNode, Tag: "!!bool", Value: "true"})
	}
	return &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map",
		Content: []*yaml.Node{scalar("tls"), tls}}
}

// scalar is a plain string node; the encoder quotes it if it must.
func scalar(s string) *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: s}
}

// lookup returns the key and value nodes of key in mapping m, or nils.
func lookup(m *yaml.Node, key string) (k, v *yaml.Node) {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i], m.Content[i+1]
		}
	}
	return nil, nil
}

// isMarked reports whether key node k carries mirrord's marker.
func isMarked(k *yaml.Node) bool {
	for line := range strings.SplitSeq(k.HeadComment, "\n") {
		if strings.TrimSpace(line) == marker {
			return true
		}
	}
	return false
}

// editSection sets the entries of section name in root to want, as Merge
// describes. replaceOperator says whether the operator's entry for a wanted
// key is replaced (mirrors) or kept (configs).
func editSection(root *yaml.Node, name string, want []entry, replaceOperator bool) ([]string,
	error) {
	secKey, sec := lookup(root, name)
	if sec == nil && len(want) == 0 {
		return nil, nil
	}
	if sec == nil {
		secKey, sec = scalar(name), &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
		root.Content = append(root.Content, secKey, sec)
	}
	if sec.Kind == yaml.ScalarNode && sec.Tag == "!!null" {
		if len(want) == 0 {
			// Nothing of mirrord's in it, nothing to add: left as written.
			// Made {}, it would follow a comment on its key's line, which
			// yaml.v3 writes as a line of its own that no parser reads.
			return nil, nil
		}
		sec.Kind, sec.Tag, sec.Value, sec.Style = yaml.MappingNode, "!!map", "", 0
	}
	if sec.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("parse registries.yaml: line %d: %s is %s; want a mapping",
			sec.Line, name, kindName(sec))
	}

	wanted := map[string]*yaml.Node{}
	for _, e := range want {
		wanted[e.key] = e.value
	}
	var warnings []string
	var content []*yaml.Node
	done := map[string]bool{}
	hadEntries, operatorLeft := len(sec.Content) > 0, false
	var orphans []string
	for i := 0; i+1 < len(sec.Content); i += 2 {
		k, v := sec.Content[i], sec.Content[i+1]
		val, isWanted := wanted[k.Value]
		switch {
		case isWanted && done[k.Value]:
			// A duplicate key; k3s would have refused the file already.
		case isWanted && (isMarked(k) || replaceOperator):
			if !isMarked(k) {
				warnings = append(warnings, fmt.Sprintf("registries.yaml %s%s: the "+
					"operator's entry replaced by mirrord's", name, keyPath(k.Value)))
			}
			content = append(content, markedKey(k), val)
			done[k.Value] = true
		case isWanted:
			warnings = append(warnings, fmt.Sprintf("registries.yaml %s%s: the operator's "+
				"entry kept; mirrord's TLS settings for that host are not written",
				name, keyPath(k.Value)))
			content = append(content, k, v)
			done[k.Value] = true
			operatorLeft = true
		case isMarked(k):
			// mirrord's, no longer wanted: dropped, but not the operator's
			// comments that yaml.v3 hung on it.
			orphans = append(orphans, commentsIn(k, v)...)
		default:
			content = append(content, k, v)
			operatorLeft = true
		}
	}
	for _, e := range want {
		if !done[e.key] {
			content = append(content, markedKey(scalar(e.key)), e.value)
		}
	}

	sec.Content = content
	if hadEntries && len(content) == 0 && !operatorLeft {
		orphans = append(orphans, commentsIn(secKey, nil)...)
		removeKey(root, secKey)
	}
	if len(orphans) > 0 {
		root.FootComment = strings.Join(append(orphans, root.FootComment), "\n")
		root.FootComment = strings.TrimRight(root.FootComment, "\n")
	}
	return warnings, nil
}

// commentsIn returns the comments held by the nodes under k and v that are
// not mirrord's marker, in document order.
func commentsIn(k, v *yaml.Node) []string {
	var out []string
	var walk func(n *yaml.Node)
	walk = func(n *yaml.Node) {
		if n == nil {
			return
		}
		for _, c := range []string{n.HeadComment, n.LineComment} {
			if c != "" && strings.TrimSpace(c) != marker {
				out = append(out, c)
			}
		}
		for _, child := range n.Content {
			walk(child)
		}
		if n.FootComment != "" {
			out = append(out, n.FootComment)
		}
	}
	walk(k)
	walk(v)
	return out
}

// keyPath renders a key as it follows a section name: ".docker.io",
// or `."*"` for a key that needs quotes.
func keyPath(key string) string {
	if key == "" || strings.ContainsAny(key, `*"' :#`) {
		return fmt.Sprintf(".%q", key)
	}
	return "." + key
}

// markedKey returns a copy of key node k with mirrord's marker as its head
// comment, and the wildcard quoted.
func markedKey(k *yaml.Node) *yaml.Node {
	c := *k
	c.HeadComment = marker
	if c.Value == spec.Wildcard {
		c.Style = yaml.DoubleQuotedStyle
	}
	return &c
}

// removeKey drops key node k and its value from mapping m.
func removeKey(m, k *yaml.Node) {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i] == k {
			m.Content = slices.Delete(m.Content, i, i+2)
			return
		}
	}
}

// indentOf returns the indentation width of the first nested block mapping
// of root, clamped to 2..8; 2 when there is none.
func indentOf(root *yaml.Node) int {
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		if v.Kind == yaml.MappingNode && v.Style&yaml.FlowStyle == 0 && len(v.Content) > 0 &&
			v.Content[0].Column > k.Column {
			return min(max(v.Content[0].Column-k.Column, 2), 8)
		}
	}
	return 2
}

// encode renders doc with the given indentation.
func encode(doc *yaml.Node, indent int) ([]byte, error) {
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(indent)
	if err := enc.Encode(doc); err != nil {
		return nil, fmt.Errorf("encode registries.yaml: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("encode registries.yaml: %w", err)
	}
	return b.Bytes(), nil
}

// view is the decoded value of each entry of a section, by section and key.
type view map[string]map[string]any

// ourView returns mirrord's marked entries of root, decoded.
func ourView(root *yaml.Node) view {
	v := view{}
	for _, name := range []string{sectionMirrors, sectionConfigs} {
		_, sec := lookup(root, name)
		if sec == nil || sec.Kind != yaml.MappingNode {
			continue
		}
		for i := 0; i+1 < len(sec.Content); i += 2 {
			if isMarked(sec.Content[i]) {
				if v[name] == nil {
					v[name] = map[string]any{}
				}
				v[name][sec.Content[i].Value] = decodeAny(sec.Content[i+1])
			}
		}
	}
	return v
}

// operatorView returns everything of root that is not mirrord's, decoded:
// every top-level key but mirrors and configs whole, and the unmarked
// entries of those two, less the mirrors keys in skip.
func operatorView(root *yaml.Node, skip map[string]bool) map[string]any {
	out := map[string]any{}
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		isSection := k.Value == sectionMirrors || k.Value == sectionConfigs
		switch {
		case isSection && v.Kind == yaml.ScalarNode && v.Tag == "!!null":
			continue // an empty section, which mirrord may fill
		case !isSection || v.Kind != yaml.MappingNode:
			out[k.Value] = decodeAny(v)
			continue
		}
		sec := map[string]any{}
		for j := 0; j+1 < len(v.Content); j += 2 {
			ek := v.Content[j]
			if isMarked(ek) || k.Value == sectionMirrors && skip[ek.Value] {
				continue
			}
			sec[ek.Value] = decodeAny(v.Content[j+1])
		}
		if len(sec) > 0 {
			out[k.Value] = sec
		}
	}
	return out
}

// decodeAny decodes a node into plain Go values; nil when it cannot.
func decodeAny(n *yaml.Node) any {
	var v any
	if err := n.Decode(&v); err != nil {
		return nil
	}
	return v
}

// verify decodes out and checks that the operator's entries are those of
// before (less the mirrors mirrord replaced) and that mirrord's entries are
// ours.
func verify(out []byte, before map[string]any, ours view) error {
	doc, err := parseDocument(out)
	if err != nil {
		return fmt.Errorf("verify registries.yaml: the result does not parse: %w", err)
	}
	root := doc.Content[0]

	replaced := map[string]bool{}
	for key := range ours[sectionMirrors] {
		replaced[key] = true
	}
	ops := operatorView(root, replaced)
	want := dropKeys(before, replaced)
	if !reflect.DeepEqual(want, ops) {
		return fmt.Errorf("verify registries.yaml: the operator's entries changed " +
			"on the way; nothing written")
	}
	if got := ourView(root); !reflect.DeepEqual(got, ours) {
		return fmt.Errorf("verify registries.yaml: mirrord's entries did not come out " +
			"as meant; nothing written")
	}
	return nil
}

// dropKeys returns before less the mirrors entries named in keys.
func dropKeys(before map[string]any, keys map[string]bool) map[string]any {
	out := map[string]any{}
	for k, v := range before {
		out[k] = v
	}
	m, ok := out[sectionMirrors].(map[string]any)
	if !ok {
		return out
	}
	kept := map[string]any{}
	for k, v := range m {
		if !keys[k] {
			kept[k] = v
		}
	}
	if len(kept) == 0 {
		delete(out, sectionMirrors)
	} else {
		out[sectionMirrors] = kept
	}
	return out
}
