package metadata

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strings"
)

// cloudInit reads every key from cloud-init's saved instance data, which
// needs no network. It knows where cloud-init keeps each cloud's user
// key/values under ds.meta_data (FACTS.md §1.7) and looks in this order,
// taking each key from the first place that has it:
//
//	ds.meta_data.instance-data.<key>       GCE instance attributes
//	ds.meta_data.tags.instance.<key>       EC2 instance tags
//	ds.meta_data.meta.<key>                OpenStack and config drive meta
//	ds.meta_data.imds.compute.tagsList     Azure tags, [{name, value}]
//	ds.meta_data.<key>                     NoCloud and others: meta-data keys
//	ds.meta_data.project-data.<key>        GCE project attributes
//
// Names match with '-' and '_' taken alike, as cloud-init writes both
// spellings across versions; GCE's attribute maps may be JSON text. Values
// listed in base64_encoded_keys are decoded.
type cloudInit struct{ root string }

// newCloudInit returns the cloud-init provider.
func newCloudInit(o Options) *cloudInit { return &cloudInit{root: o.Root} }

func (p *cloudInit) close() {}

// fetch reads instance-data.json. A missing file is kindAbsent; an
// unreadable or malformed one is an error of its own.
func (p *cloudInit) fetch(context.Context) (Values, error) {
	d, err := readInstanceData(p.root)
	if errors.Is(err, fs.ErrNotExist) {
		return Values{}, absentf("cloud-init: /%s does not exist", instanceDataPath)
	}
	if err != nil {
		return Values{}, fmt.Errorf("cloud-init: %w", err)
	}

	var v Values
	ds := d.DS
	md, mdName, _ := member(ds, "meta_data")
	mdMap, _ := md.(map[string]any)
	for _, key := range keys {
		value, path, err := lookupKey(mdMap, key)
		if err != nil {
			return Values{}, fmt.Errorf("cloud-init: /%s: in ds.%s: %w",
				instanceDataPath, mdName, err)
		}
		if path == nil {
			continue
		}

		full := append([]string{"ds", mdName}, path...)
		if slices.Contains(d.Base64EncodedKeys, strings.Join(full, "/")) {
			b, err := base64.StdEncoding.DecodeString(value)
			if err != nil {
				return Values{}, fmt.Errorf("cloud-init: /%s: %s: decode base64: %w",
					instanceDataPath, strings.Join(full, "."), err)
			}
			value = string(b)
		}
		v.set(key, value, fmt.Sprintf("cloud-init /%s %s", instanceDataPath,
			strings.Join(full, ".")))
	}
	return v, nil
}

// lookupKey finds key in the datasource metadata md and returns its value
// and the names on the way to it, or a nil path when no place has it.
func lookupKey(md map[string]any, key string) (string, []string, error) {
	places := []struct {
		path     []string // to a map of key/values
		tagsList bool     // Azure's list of {name, value} instead
	}{
		{path: []string{"instance-data"}},
		{path: []string{"tags", "instance"}},
		{path: []string{"meta"}},
		{tagsList: true},
		{path: nil}, // md itself
		{path: []string{"project-data"}},
	}
	for _, at := range places {
		if at.tagsList {
			if value, path := azureTagsList(md, key); path != nil {
				return value, path, nil
			}
			continue
		}

		m, names, err := mapAt(md, at.path)
		if err != nil {
			return "", nil, err
		}
		value, name, ok := member(m, key)
		if s, isString := value.(string); ok && isString && s != "" {
			return s, append(names, name), nil
		}
	}
	return "", nil, nil
}

// mapAt walks path from md and returns the map there with the names it
// went by; a JSON string on the way is decoded as a JSON object, the form
// GCE's attribute maps take. A path that does not lead to a map gives nil.
func mapAt(md map[string]any, path []string) (map[string]any, []string, error) {
	m := md
	var names []string
	for _, want := range path {
		next, name, ok := member(m, want)
		if !ok {
			return nil, nil, nil
		}
		names = append(names, name)

		if s, isString := next.(string); isString {
			var decoded map[string]any
			if err := json.Unmarshal([]byte(s), &decoded); err != nil {
				return nil, nil, fmt.Errorf("%s holds text that is no JSON object: %w",
					strings.Join(names, "."), err)
			}
			next = decoded
		}
		if m, ok = next.(map[string]any); !ok {
			return nil, nil, nil
		}
	}
	return m, names, nil
}

// azureTagsList finds key in imds.compute.tagsList, where cloud-init keeps
// Azure's IMDS answer.
func azureTagsList(md map[string]any, key string) (string, []string) {
	m, names, err := mapAt(md, []string{"imds", "compute"})
	if err != nil || m == nil {
		return "", nil
	}
	list, name, _ := member(m, "tagsList")
	tags, _ := list.([]any)
	for _, t := range tags {
		tag, _ := t.(map[string]any)
		n, _ := tag["name"].(string)
		value, _ := tag["value"].(string)
		if strings.EqualFold(n, key) && value != "" {
			return value, append(names, name, n)
		}
	}
	return "", nil
}

// member returns m's member called name, also under the name with '-' and
// '_' swapped, and the name it was found under.
func member(m map[string]any, name string) (any, string, bool) {
	for _, n := range []string{
		name, strings.ReplaceAll(name, "-", "_"), strings.ReplaceAll(name, "_", "-"),
	} {
		if v, ok := m[n]; ok {
			return v, n, true
		}
	}
	return nil, name, false
}
