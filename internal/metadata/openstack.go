package metadata

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
)

// openStackMetaPath is meta_data.json, on the metadata service and on a
// config drive alike (FACTS.md §1.6).
const openStackMetaPath = "/openstack/latest/meta_data.json"

// configDriveMounts are where a config drive (label config-2) is looked
// for, relative to the root: /mnt/config is where the OpenStack and
// Rackspace guides mount it; /media/config-2 is where desktop-style
// automounters put a volume by its label. cloud-init mounts the drive only
// while it reads it, so a drive nobody mounted is not found.
var configDriveMounts = []string{"mnt/config", "media/config-2"}

// openStack reads "meta" of meta_data.json: from a mounted config drive
// when there is one (and no endpoint was given), else from the metadata
// service.
type openStack struct {
	c    *client
	root string
	// drive is false when an endpoint was given: the service, not the
	// drive, was asked for.
	drive bool
}

// newOpenStack returns the OpenStack provider.
func newOpenStack(o Options) *openStack {
	return &openStack{c: newClient(OpenStack, o), root: o.Root, drive: o.Endpoint == ""}
}

func (p *openStack) close() { p.c.close() }

// fetch reads meta_data.json from the drive or the service.
func (p *openStack) fetch(ctx context.Context) (Values, error) {
	if p.drive {
		if dir := configDrive(p.root); dir != "" {
			return p.fromDrive(dir)
		}
	}

	r, err := p.c.do(ctx, http.MethodGet, openStackMetaPath, nil)
	if err != nil {
		return Values{}, err
	}
	if r.status != http.StatusOK {
		return Values{}, p.c.statusError("read "+openStackMetaPath, r)
	}
	v, err := openStackMeta(r.body, "openstack meta %s")
	if err != nil {
		return Values{}, unavailablef("openstack: decode %s: %w", openStackMetaPath, err)
	}
	return v, nil
}

// fromDrive reads meta_data.json from the config drive mounted at dir (a
// node path).
func (p *openStack) fromDrive(dir string) (Values, error) {
	path := filepath.Join(p.root, dir, openStackMetaPath)
	b, err := os.ReadFile(path)
	if err != nil {
		return Values{}, fmt.Errorf("openstack: read the config drive: %w", err)
	}
	v, err := openStackMeta(b, "openstack meta %s (config drive "+dir+")")
	if err != nil {
		return Values{}, fmt.Errorf("openstack: decode %s: %w", path, err)
	}
	return v, nil
}

// openStackMeta takes every key from the "meta" map of a meta_data.json;
// source is the format of each key's source.
func openStackMeta(b []byte, source string) (Values, error) {
	var doc struct {
		Meta map[string]json.RawMessage `json:"meta"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		return Values{}, err
	}

	var v Values
	meta := stringValues(doc.Meta)
	for _, key := range keys {
		v.set(key, meta[key], fmt.Sprintf(source, key))
	}
	return v, nil
}

// configDrive returns the node path of the first mount point under root
// that holds a meta_data.json it can see, or "".
func configDrive(root string) string {
	for _, m := range configDriveMounts {
		if _, err := os.Stat(filepath.Join(root, m, openStackMetaPath)); err == nil {
			return "/" + m
		}
	}
	return ""
}
