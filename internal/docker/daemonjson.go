package docker

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"unicode/utf8"
)

// The daemon.json keys that mirrord manages.
const (
	keyMirrors  = "registry-mirrors"
	keyInsecure = "insecure-registries"
)

// EditDaemonJSON returns src with registry-mirrors set to want.Mirrors and
// insecure-registries set to the entries already there, less those in
// prevInsecure (what mirrord added last time) that want.Insecure no longer
// names, followed by the entries of want.Insecure not yet present. An entry
// is present when the list names the same registry, ignoring case and an
// http:// or https:// prefix as dockerd does; prevInsecure entries go only
// when spelled exactly so. An entry mirrord still wants keeps its place.
// AddedInsecure says what to keep as prevInsecure for the next edit.
//
// Only the value bytes of those two keys change, and only when their content
// changes; a missing key is inserted after the last key, in the file's
// indentation, spacing and line endings. Every other byte stays: other keys,
// their values, their order, white space. registry-mirrors is written as []
// rather than dropped when want.Mirrors is empty and the key is present or
// force is set: dockerd keeps its old mirrors on reload when the key is
// missing (FACTS.md §3.1). insecure-registries is not added when it would be
// empty. An existing null counts as an empty list. An empty or blank src
// gives a new object indented with two spaces and ending in a newline.
//
// A file that is not one JSON object, or that gives either key twice or with
// a value other than an array of strings, is refused with an error
// "parse daemon.json: line L, column C: ..."; nothing is ever repaired. As a
// last guard the result is decoded and compared with src: every other key
// must decode to the same value.
func EditDaemonJSON(src []byte, want Settings, prevInsecure []string, force bool) ([]byte, error) {
	for _, e := range slices.Concat(want.Mirrors, want.Insecure) {
		if !utf8.ValidString(e) {
			return nil, fmt.Errorf("edit daemon.json: entry %q is not valid UTF-8", e)
		}
	}
	if len(bytes.TrimSpace(src)) == 0 {
		src = []byte("{}\n")
	}

	d, err := parseDocument(src)
	if err != nil {
		return nil, err
	}
	old, err := d.settings()
	if err != nil {
		return nil, err
	}

	insecure := mergeInsecure(old.Insecure, want.Insecure, prevInsecure)
	st := d.style()
	var edits []edit
	var added []string
	if m, ok := d.member(keyMirrors); ok {
		if !slices.Equal(old.Mirrors, want.Mirrors) {
			edits = append(edits, d.replace(m, want.Mirrors, st))
		}
	} else if len(want.Mirrors) > 0 || force {
		added = append(added, st.pair(keyMirrors, want.Mirrors))
	}
	if m, ok := d.member(keyInsecure); ok {
		if !slices.Equal(old.Insecure, insecure) {
			edits = append(edits, d.replace(m, insecure, st))
		}
	} else if len(insecure) > 0 {
		added = append(added, st.pair(keyInsecure, insecure))
	}
	if len(added) > 0 {
		edits = append(edits, d.insert(added, st))
	}

	out := applyEdits(src, edits)
	if err := verifyEdit(src, out); err != nil {
		return nil, err
	}
	return out, nil
}

// ReadSettings returns the registry-mirrors and insecure-registries lists of
// a daemon.json, as dockerd would read them; an empty or blank file, a
// missing key and null all give an empty list. It refuses the same files as
// EditDaemonJSON, with the same errors.
func ReadSettings(data []byte) (Settings, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return Settings{}, nil
	}
	d, err := parseDocument(data)
	if err != nil {
		return Settings{}, err
	}
	return d.settings()
}

// AddedInsecure returns what the caller should pass as prevInsecure next
// time, after EditDaemonJSON edited a file whose insecure-registries list
// was before: the entries of want that mirrord adds now or added earlier
// (prev). An entry the operator had put there already is not mirrord's, so
// that dropping the mirror later leaves the operator's entry in place.
func AddedInsecure(before, want, prev []string) []string {
	var out []string
	for _, w := range want {
		if slices.Contains(prev, w) || !containsRegistry(before, w) {
			out = append(out, w)
		}
	}
	return out
}

// mergeInsecure computes the new insecure-registries list; see
// EditDaemonJSON.
func mergeInsecure(old, want, prev []string) []string {
	var out []string
	for _, e := range old {
		if slices.Contains(prev, e) && !containsRegistry(want, e) {
			continue
		}
		out = append(out, e)
	}
	for _, w := range want {
		if !containsRegistry(out, w) {
			out = append(out, w)
		}
	}
	return out
}

// containsRegistry reports whether list names the registry e, the way
// dockerd compares them: scheme prefix dropped, case ignored.
func containsRegistry(list []string, e string) bool {
	key := registryKey(e)
	return slices.ContainsFunc(list, func(x string) bool { return registryKey(x) == key })
}

func registryKey(e string) string {
	e = strings.ToLower(strings.TrimSpace(e))
	e = strings.TrimPrefix(e, "http://")
	e = strings.TrimPrefix(e, "https://")
	return strings.TrimRight(e, "/")
}

// member is one top-level key of the document with the byte spans of its
// key (quotes included) and value.
type member struct {
	key              string
	keyStart, keyEnd int
	valStart, valEnd int
}

// document is a parsed daemon.json: the offsets of its top-level object and
// of each member, in file order.
type document struct {
	src         []byte
	open, close int
	members     []member
}

// parseDocument checks that src is one valid JSON object without duplicate
// managed keys, and locates its members.
func parseDocument(src []byte) (*document, error) {
	if !json.Valid(src) {
		return nil, syntaxError(src)
	}

	d := &document{src: src}
	i := skipSpace(src, 0)
	if src[i] != '{' {
		return nil, d.errorf(i, "the top-level value is %s; want a JSON object {...}",
			kindOf(src[i]))
	}
	d.open = i
	i = skipSpace(src, i+1)
	for src[i] != '}' {
		m := member{keyStart: i, keyEnd: skipString(src, i)}
		if err := json.Unmarshal(src[m.keyStart:m.keyEnd], &m.key); err != nil {
			return nil, d.errorf(i, "key: %w", err)
		}
		i = skipSpace(src, m.keyEnd) + 1 // past ':'
		m.valStart = skipSpace(src, i)
		m.valEnd = skipValue(src, m.valStart)
		if err := d.checkDuplicate(m); err != nil {
			return nil, err
		}
		d.members = append(d.members, m)

		i = skipSpace(src, m.valEnd)
		if src[i] == ',' {
			i = skipSpace(src, i+1)
		}
	}
	d.close = i
	return d, nil
}

// checkDuplicate refuses a second occurrence of a managed key: dockerd would
// silently use the last one, and editing either would be a guess.
func (d *document) checkDuplicate(m member) error {
	if m.key != keyMirrors && m.key != keyInsecure {
		return nil
	}
	first, ok := d.member(m.key)
	if !ok {
		return nil
	}
	line, col := position(d.src, first.keyStart)
	return d.errorf(m.keyStart, "key %q given twice (first at line %d, column %d); "+
		"want it once", m.key, line, col)
}

// syntaxError locates why src is not valid JSON.
func syntaxError(src []byte) error {
	var v any
	err := json.Unmarshal(src, &v)
	var se *json.SyntaxError
	if errors.As(err, &se) {
		off := max(int(se.Offset)-1, 0)
		line, col := position(src, off)
		return fmt.Errorf("parse daemon.json: line %d, column %d: %w", line, col, err)
	}
	if err == nil {
		err = errors.New("invalid JSON")
	}
	return fmt.Errorf("parse daemon.json: %w", err)
}

// errorf formats a parse error at byte offset off of the document.
func (d *document) errorf(off int, format string, args ...any) error {
	line, col := position(d.src, off)
	return fmt.Errorf("parse daemon.json: line %d, column %d: "+format,
		append([]any{line, col}, args...)...)
}

// position returns the 1-based line and column (in bytes) of offset off.
func position(src []byte, off int) (line, col int) {
	off = min(off, len(src))
	line = 1 + bytes.Count(src[:off], []byte("\n"))
	return line, off - bytes.LastIndexByte(src[:off], '\n')
}

// member returns the member named key.
func (d *document) member(key string) (member, bool) {
	for _, m := range d.members {
		if m.key == key {
			return m, true
		}
	}
	return member{}, false
}

// settings decodes the two managed keys.
func (d *document) settings() (Settings, error) {
	var s Settings
	var err error
	if m, ok := d.member(keyMirrors); ok {
		if s.Mirrors, err = d.stringList(m, "https://mirror.example.net"); err != nil {
			return Settings{}, err
		}
	}
	if m, ok := d.member(keyInsecure); ok {
		if s.Insecure, err = d.stringList(m, "10.0.0.5:5000"); err != nil {
			return Settings{}, err
		}
	}
	return s, nil
}

// stringList decodes the value of m, which must be an array of strings or
// null (an empty list). example is a valid item, for the error message.
func (d *document) stringList(m member, example string) ([]string, error) {
	src := d.src
	if src[m.valStart] == 'n' {
		return nil, nil
	}
	if src[m.valStart] != '[' {
		return nil, d.errorf(m.valStart, "%q is %s; want an array of strings such as [%q]",
			m.key, kindOf(src[m.valStart]), example)
	}

	var out []string
	i := skipSpace(src, m.valStart+1)
	for n := 1; src[i] != ']'; n++ {
		if src[i] != '"' {
			return nil, d.errorf(i, "%q item %d is %s; want a string such as %q",
				m.key, n, kindOf(src[i]), example)
		}
		end := skipString(src, i)
		var s string
		if err := json.Unmarshal(src[i:end], &s); err != nil {
			return nil, d.errorf(i, "%q item %d: %w", m.key, n, err)
		}
		out = append(out, s)

		i = skipSpace(src, end)
		if src[i] == ',' {
			i = skipSpace(src, i+1)
		}
	}
	return out, nil
}

// style is how the file lays out its top-level object, so that what mirrord
// writes looks like what was there.
type style struct {
	multiline bool   // each key on its own line
	indent    string // before a key, when multiline
	unit      string // one level of indentation, for array items
	colon     string // between a key and its value: ":", ": ", " : "
	gap       string // after the comma between keys, when on one line
	sep       string // between the items of a one-line array
	nl        string // "\n" or "\r\n"
}

// defaultStyle is json.MarshalIndent's with two spaces.
var defaultStyle = style{multiline: true, indent: "  ", unit: "  ", colon: ": ", sep: ", ",
	nl: "\n"}

// style infers the layout from the white space around the existing keys:
// the first line break before a key gives the indentation, the first key
// gives the colon spacing.
func (d *document) style() style {
	if len(d.members) == 0 {
		return defaultStyle
	}
	st := style{colon: string(d.src[d.members[0].keyEnd:d.members[0].valStart]), nl: "\n"}
	st.sep = ","
	if strings.HasSuffix(st.colon, " ") {
		st.sep = ", "
	}

	leads := make([][]byte, len(d.members)) // white space before each key
	prev := d.open
	for k, m := range d.members {
		leads[k] = d.src[prev+1 : m.keyStart] // after '{' or ','
		prev = skipSpace(d.src, m.valEnd)
	}
	st.gap = string(leads[min(1, len(leads)-1)])

	for _, lead := range leads {
		nl := bytes.LastIndexByte(lead, '\n')
		if nl < 0 {
			continue
		}
		st.multiline = true
		st.indent = string(lead[nl+1:])
		if bytes.Contains(lead, []byte("\r\n")) {
			st.nl = "\r\n"
		}
		break
	}
	st.unit = st.indent
	if st.unit == "" {
		st.unit = "  "
	}
	return st
}

// pair renders `"key": [...]` for a key that is not in the file yet.
func (st style) pair(key string, items []string) string {
	return quote(key) + st.colon + st.array(items, st.multiline, st.indent+st.unit, st.indent)
}

// array renders items as a JSON array, on one line or one item per line.
func (st style) array(items []string, multiline bool, itemIndent, closeIndent string) string {
	if len(items) == 0 {
		return "[]"
	}
	var b strings.Builder
	b.WriteString("[")
	for k, it := range items {
		if k > 0 {
			b.WriteString(",")
			if !multiline {
				b.WriteString(strings.TrimPrefix(st.sep, ","))
			}
		}
		if multiline {
			b.WriteString(st.nl + itemIndent)
		}
		b.WriteString(quote(it))
	}
	if multiline {
		b.WriteString(st.nl + closeIndent)
	}
	b.WriteString("]")
	return b.String()
}

// edit replaces src[start:end] with text; an insertion has start == end.
type edit struct {
	start, end int
	text       string
}

// replace rewrites the value of m as items. A value that spanned several
// lines keeps its item and bracket indentation; an empty or null value
// follows the file's layout; a one-line value stays on one line.
func (d *document) replace(m member, items []string, st style) edit {
	old := d.src[m.valStart:m.valEnd]
	multiline := bytes.ContainsRune(old, '\n')
	itemIndent, closeIndent := st.indent+st.unit, st.indent
	if multiline {
		itemIndent, closeIndent = d.arrayIndent(m, itemIndent, closeIndent)
	}
	if !multiline && (string(old) == "null" || len(bytes.TrimSpace(old[1:len(old)-1])) == 0) {
		multiline = st.multiline
	}
	return edit{m.valStart, m.valEnd, st.array(items, multiline, itemIndent, closeIndent)}
}

// arrayIndent reads the indentation of the first item and of the closing
// bracket of a multi-line array value, keeping the given ones where the
// value does not show them.
func (d *document) arrayIndent(m member, item, closing string) (string, string) {
	old := d.src[m.valStart:m.valEnd]
	lead := old[1:skipSpace(old, 1)]
	if nl := bytes.LastIndexByte(lead, '\n'); nl >= 0 && len(lead) < len(old)-2 {
		item = string(lead[nl+1:])
	}
	body := bytes.TrimRight(old[:len(old)-1], " \t")
	if bytes.HasSuffix(body, []byte("\n")) {
		closing = string(old[len(body) : len(old)-1])
	}
	return item, closing
}

// insert adds the rendered pairs after the last key, or fills an empty
// object in the default style.
func (d *document) insert(pairs []string, st style) edit {
	if len(d.members) == 0 {
		body := "{" + st.nl + st.indent + strings.Join(pairs, ","+st.nl+st.indent) + st.nl + "}"
		return edit{d.open, d.close + 1, body}
	}

	last := d.members[len(d.members)-1].valEnd
	join := "," + st.gap
	if st.multiline {
		join = "," + st.nl + st.indent
	}
	return edit{last, last, join + strings.Join(pairs, join)}
}

// applyEdits returns src with the non-overlapping edits applied.
func applyEdits(src []byte, edits []edit) []byte {
	slices.SortFunc(edits, func(a, b edit) int { return a.start - b.start })
	out := make([]byte, 0, len(src)+256)
	at := 0
	for _, e := range edits {
		out = append(out, src[at:e.start]...)
		out = append(out, e.text...)
		at = e.end
	}
	return append(out, src[at:]...)
}

// verifyEdit checks that out is a valid daemon.json whose unmanaged keys
// decode exactly as in src.
func verifyEdit(src, out []byte) error {
	before, err := decodeObject(src)
	if err != nil {
		return fmt.Errorf("edit daemon.json: self-check of the original: %w", err)
	}
	after, err := decodeObject(out)
	if err != nil {
		return fmt.Errorf("edit daemon.json: self-check of the result: %w", err)
	}
	if _, err := ReadSettings(out); err != nil {
		return fmt.Errorf("edit daemon.json: self-check of the result: %w", err)
	}

	for _, k := range keysOf(before, after) {
		if k == keyMirrors || k == keyInsecure {
			continue
		}
		if !reflect.DeepEqual(before[k], after[k]) {
			return fmt.Errorf("edit daemon.json: self-check: key %q would change; "+
				"file left as it was", k)
		}
	}
	return nil
}

// decodeObject decodes a JSON object keeping numbers exact.
func decodeObject(data []byte) (map[string]any, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		return nil, err
	}
	return m, nil
}

// keysOf returns the keys of both maps.
func keysOf(a, b map[string]any) []string {
	keys := make([]string, 0, len(a)+len(b))
	for k := range a {
		keys = append(keys, k)
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			keys = append(keys, k)
		}
	}
	return keys
}

// quote renders s as a JSON string, leaving <, > and & as they are.
func quote(s string) string {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s) // a string always encodes
	return strings.TrimSuffix(b.String(), "\n")
}

// kindOf names the JSON value that starts with c.
func kindOf(c byte) string {
	switch c {
	case '{':
		return "an object"
	case '[':
		return "an array"
	case '"':
		return "a string"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	}
	return "a number"
}

// The scanners below assume valid JSON (parseDocument checks it first), so
// they need not guard against a missing quote or bracket.

func skipSpace(src []byte, i int) int {
	for i < len(src) && (src[i] == ' ' || src[i] == '\t' || src[i] == '\n' || src[i] == '\r') {
		i++
	}
	return i
}

// skipString returns the offset just past the string starting at i.
func skipString(src []byte, i int) int {
	for i++; ; i++ {
		switch src[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
}

// skipValue returns the offset just past the value starting at i.
func skipValue(src []byte, i int) int {
	switch src[i] {
	case '"':
		return skipString(src, i)
	case '{', '[':
		depth := 0
		for {
			switch src[i] {
			case '"':
				i = skipString(src, i)
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
			i++
		}
	}
	for i < len(src) && !strings.ContainsRune(",]} \t\r\n", rune(src[i])) {
		i++
	}
	return i
}
