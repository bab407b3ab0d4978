package containerd

import (
	"fmt"
	"math"
	"reflect"
	"slices"
	"strconv"
)

// clone deep-copies a decoded TOML value.
func clone(v any) any {
	switch v := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(v))
		for k, e := range v {
			out[k] = clone(e)
		}
		return out
	case []any:
		out := make([]any, len(v))
		for i, e := range v {
			out[i] = clone(e)
		}
		return out
	}
	return v
}

// firstDiff returns the key path of the first difference between two
// decoded TOML values, nil when they are equal. NaN equals NaN, since a file
// may hold nan and stay unchanged.
func firstDiff(a, b any, at []string) []string {
	switch a := a.(type) {
	case map[string]any:
		bm, ok := b.(map[string]any)
		if !ok {
			return nonNil(at)
		}
		keys := sortedKeys(a)
		for k := range bm {
			if _, ok := a[k]; !ok {
				keys = append(keys, k)
			}
		}
		for _, k := range keys {
			av, inA := a[k]
			bv, inB := bm[k]
			if inA != inB {
				return append(slices.Clone(at), k)
			}
			if d := firstDiff(av, bv, append(slices.Clone(at), k)); d != nil {
				return d
			}
		}
		return nil

	case []any:
		bs, ok := b.([]any)
		if !ok || len(a) != len(bs) {
			return nonNil(at)
		}
		for i := range a {
			if d := firstDiff(a[i], bs[i], append(slices.Clone(at), strconv.Itoa(i))); d != nil {
				return d
			}
		}
		return nil

	case float64:
		bf, ok := b.(float64)
		if ok && (a == bf || math.IsNaN(a) && math.IsNaN(bf)) {
			return nil
		}
		return nonNil(at)
	}

	if !reflect.DeepEqual(a, b) {
		return nonNil(at)
	}
	return nil
}

// nonNil turns the root path into a non-nil empty path.
func nonNil(at []string) []string {
	if at == nil {
		return []string{}
	}
	return at
}

// sortedKeys returns the keys of m in order.
func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// tomlType names the TOML type of a decoded value, with its article, for
// error messages: "a table", "an integer".
func tomlType(v any) string {
	switch v.(type) {
	case map[string]any:
		return "a table"
	case []any:
		return "an array"
	case string:
		return "a string"
	case int64:
		return "an integer"
	case float64:
		return "a float"
	case bool:
		return "a boolean"
	}
	return fmt.Sprintf("a %T", v)
}

// tomlValue renders a decoded scalar for an error message, strings quoted;
// tables and arrays are only named.
func tomlValue(v any) string {
	switch v := v.(type) {
	case string:
		return quote(v)
	case map[string]any:
		return "{...}"
	case []any:
		return "[...]"
	}
	return fmt.Sprint(v)
}
