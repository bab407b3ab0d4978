package metadata

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// computePrefix is the path of the computeMetadata API that GCE and Yandex
// Cloud serve (FACTS.md §1.2, §1.3).
const computePrefix = "/computeMetadata/v1/"

// flavorHeader is the header the computeMetadata API requires; without it
// the service answers 403.
var flavorHeader = http.Header{"Metadata-Flavor": {"Google"}}

// compute reads the computeMetadata API: instance attributes, and on GCE
// project attributes beneath them.
type compute struct {
	c       *client
	project bool // read project attributes for keys the instance lacks

	// watchPath is what a long poll asks for: a directory whose recursive
	// JSON holds the attributes.
	watchPath string

	// attributes extracts the instance and project attributes from the
	// recursive JSON of watchPath.
	attributes func(body []byte) (instance, project map[string]string, err error)
}

// newCompute returns the GCE provider.
func newCompute(name string, o Options) *compute {
	return &compute{
		c:       newClient(name, o),
		project: true,
		// The root, as the guest agent watches it (FACTS.md §1.3): it
		// holds instance and project attributes both.
		watchPath:  "",
		attributes: gceAttributes,
	}
}

func (p *compute) close() { p.c.close() }

// fetch reads each key from the instance attributes, then from the project
// attributes if the instance has none.
func (p *compute) fetch(ctx context.Context) (Values, error) {
	var v Values
	for _, key := range keys {
		value, ok, err := p.attribute(ctx, "instance", key)
		if err != nil {
			return v, err
		}
		if ok && value != "" {
			v.set(key, value, p.source("instance", key))
			continue
		}
		if !p.project {
			continue
		}

		value, ok, err = p.attribute(ctx, "project", key)
		if err != nil {
			return v, err
		}
		if ok {
			v.set(key, value, p.source("project", key))
		}
	}
	return v, nil
}

// attribute reads level/attributes/key; 404 means absent.
func (p *compute) attribute(ctx context.Context, level, key string) (string, bool, error) {
	path := computePrefix + level + "/attributes/" + url.PathEscape(key)
	r, err := p.c.do(ctx, http.MethodGet, path, flavorHeader)
	if err != nil {
		return "", false, err
	}

	switch r.status {
	case http.StatusOK:
		return string(r.body), true, nil
	case http.StatusNotFound:
		return "", false, nil
	}
	return "", false, p.c.statusError("read "+level+" attribute "+key, r)
}

// source says where a key came from.
func (p *compute) source(level, key string) string {
	return fmt.Sprintf("%s %s attribute %s", p.c.name, level, key)
}

// wait long-polls watchPath with wait_for_change and last_etag, as the GCE
// guest agent does (FACTS.md §1.3).
func (p *compute) wait(ctx context.Context, etag string,
	hang time.Duration) (Values, string, error) {
	q := url.Values{
		"recursive":       {"true"},
		"alt":             {"json"},
		"wait_for_change": {"true"},
		"last_etag":       {etag},
		"timeout_sec":     {strconv.Itoa(max(1, int(hang/time.Second)))},
	}
	path := computePrefix + p.watchPath + "?" + q.Encode()
	r, err := p.c.doOnce(ctx, http.MethodGet, path, flavorHeader)
	if err != nil {
		return Values{}, "", err
	}
	if r.status != http.StatusOK {
		return Values{}, "", p.c.statusError("watch "+computePrefix+p.watchPath, r)
	}

	instance, project, err := p.attributes(r.body)
	if err != nil {
		return Values{}, "", unavailablef("%s: decode %s: %w",
			p.c.name, computePrefix+p.watchPath, err)
	}
	var v Values
	for _, key := range keys {
		if value, ok := instance[key]; ok && value != "" {
			v.set(key, value, p.source("instance", key))
		} else if value, ok := project[key]; ok && p.project {
			v.set(key, value, p.source("project", key))
		}
	}
	return v, r.header.Get("ETag"), nil
}

// gceAttributes reads the attributes out of the recursive JSON of the
// root.
func gceAttributes(body []byte) (map[string]string, map[string]string, error) {
	var doc struct {
		Instance struct {
			Attributes map[string]json.RawMessage `json:"attributes"`
		} `json:"instance"`
		Project struct {
			Attributes map[string]json.RawMessage `json:"attributes"`
		} `json:"project"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return nil, nil, err
	}
	return stringValues(doc.Instance.Attributes), stringValues(doc.Project.Attributes), nil
}

// stringValues keeps the members of m whose values are JSON strings, decoded;
// attributes are strings, and anything else is no value of mirrord's.
func stringValues(m map[string]json.RawMessage) map[string]string {
	out := make(map[string]string, len(m))
	for k, raw := range m {
		var s string
		if json.Unmarshal(raw, &s) == nil {
			out[k] = s
		}
	}
	return out
}
