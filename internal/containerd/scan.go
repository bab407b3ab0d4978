package containerd

import (
	"bytes"
	"fmt"
	"slices"
	"strings"

	"github.com/pelletier/go-toml/v2/unstable"
)

// expr is one top-level TOML expression (a table header or a key/value) with
// the byte span of the whole lines it occupies. Comment lines and blank
// lines belong to no expression; they sit in the gaps between spans.
type expr struct {
	kind unstable.Kind // Table, ArrayTable or KeyValue

	// path is the absolute key path: the header's key for a table, the
	// enclosing table's path plus the dotted key for a key/value.
	path []string

	// table is, for a key/value, the path of the header it sits under (nil
	// before the first header). inArray is set when that header, or the
	// expression itself, is an array of tables.
	table   []string
	inArray bool

	// start is the offset of the first byte of the expression's first line,
	// end the offset just past its last line's newline (or len(src)).
	start, end int

	// indent is the white space before the expression on its first line.
	indent string

	// valStart and valEnd delimit a key/value's value; valKind is its kind
	// and valEmpty reports an inline table or array with no element.
	valStart, valEnd int
	valKind          unstable.Kind
	valEmpty         bool
}

// scan lists the top-level expressions of src in document order. src must
// already have decoded cleanly; scan only locates what the decoder read.
func scan(src []byte) ([]expr, error) {
	var (
		p       unstable.Parser
		out     []expr
		table   []string
		inArray bool
	)
	p.Reset(src)
	for p.NextExpression() {
		n := p.Expression()
		switch n.Kind {
		case unstable.Table, unstable.ArrayTable:
			path, first, last := keyPath(n)
			table = path
			inArray = n.Kind == unstable.ArrayTable
			start := lineStart(src, first)
			out = append(out, expr{
				kind:    n.Kind,
				path:    path,
				table:   path,
				inArray: inArray,
				start:   start,
				end:     lineEnd(src, last),
				indent:  indentAt(src, start),
			})

		case unstable.KeyValue:
			e, err := keyValue(src, n, table, inArray)
			if err != nil {
				return nil, err
			}
			out = append(out, e)
		}
	}
	if err := p.Error(); err != nil {
		return nil, fmt.Errorf("locate keys: %w", err)
	}
	return out, nil
}

// keyValue builds the expr of a top-level key/value node.
func keyValue(src []byte, n *unstable.Node, table []string, inArray bool) (expr, error) {
	rel, _, last := keyPath(n)
	kvStart := int(n.Raw.Offset)
	kvEnd := int(n.Raw.Offset + n.Raw.Length)

	// The value starts after the key, the '=' and the blanks around it.
	i := last
	for i < kvEnd && (src[i] == ' ' || src[i] == '\t') {
		i++
	}
	if i >= kvEnd || src[i] != '=' {
		return expr{}, fmt.Errorf("locate keys: no '=' after key %q at offset %d",
			strings.Join(rel, "."), i)
	}
	i++
	for i < kvEnd && (src[i] == ' ' || src[i] == '\t') {
		i++
	}

	v := n.Value()
	start := lineStart(src, kvStart)
	return expr{
		kind:     unstable.KeyValue,
		path:     append(slices.Clone(table), rel...),
		table:    table,
		inArray:  inArray,
		start:    start,
		end:      lineEnd(src, kvEnd),
		indent:   indentAt(src, start),
		valStart: i,
		valEnd:   kvEnd,
		valKind:  v.Kind,
		valEmpty: (v.Kind == unstable.InlineTable || v.Kind == unstable.Array) &&
			!hasValueChild(v),
	}, nil
}

// hasValueChild reports whether an array or inline table holds an element
// other than a comment.
func hasValueChild(n *unstable.Node) bool {
	for it := n.Children(); it.Next(); {
		if it.Node().Kind != unstable.Comment {
			return true
		}
	}
	return false
}

// keyPath returns the decoded parts of a table's or key/value's key, the
// offset of the key's first byte and the offset just past its last byte.
func keyPath(n *unstable.Node) (parts []string, first, last int) {
	first = -1
	for it := n.Key(); it.Next(); {
		k := it.Node()
		parts = append(parts, string(k.Data))
		if first < 0 {
			first = int(k.Raw.Offset)
		}
		last = int(k.Raw.Offset + k.Raw.Length)
	}
	return parts, first, last
}

// lineStart returns the offset of the start of the line holding offset.
func lineStart(src []byte, offset int) int {
	return bytes.LastIndexByte(src[:offset], '\n') + 1
}

// lineEnd returns the offset just past the newline that ends the line
// holding offset, or len(src) on the last line.
func lineEnd(src []byte, offset int) int {
	i := bytes.IndexByte(src[offset:], '\n')
	if i < 0 {
		return len(src)
	}
	return offset + i + 1
}

// indentAt returns the blanks that open the line starting at start.
func indentAt(src []byte, start int) string {
	i := start
	for i < len(src) && (src[i] == ' ' || src[i] == '\t') {
		i++
	}
	return string(src[start:i])
}

// lineOf returns the 1-based line number of offset.
func lineOf(src []byte, offset int) int {
	return bytes.Count(src[:offset], []byte{'\n'}) + 1
}

// hasPrefix reports whether path starts with prefix.
func hasPrefix(path, prefix []string) bool {
	return len(path) >= len(prefix) && slices.Equal(path[:len(prefix)], prefix)
}

// renderKey writes a dotted key, quoting the parts that are not bare keys.
func renderKey(parts []string) string {
	out := make([]string, len(parts))
	for i, p := range parts {
		if isBareKey(p) {
			out[i] = p
		} else {
			out[i] = quote(p)
		}
	}
	return strings.Join(out, ".")
}

func isBareKey(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		ok := c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' ||
			c == '-' || c == '_'
		if !ok {
			return false
		}
	}
	return true
}

// quote renders s as a TOML basic string.
func quote(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch r {
		case '"':
			b.WriteString(`\"`)
		case '\\':
			b.WriteString(`\\`)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case '\t':
			b.WriteString(`\t`)
		default:
			if r < 0x20 || r == 0x7f {
				fmt.Fprintf(&b, `\u%04X`, r)
			} else {
				b.WriteRune(r)
			}
		}
	}
	b.WriteByte('"')
	return b.String()
}
