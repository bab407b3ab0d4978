package metadata

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
)

// azureAPIVersion is the IMDS api-version mirrord asks for: the one
// cloud-init uses; tagsList needs 2019-06-04 or later (FACTS.md §1.5).
const azureAPIVersion = "2021-08-01"

// azureTagsPath is the VM's tags as a JSON list of {name, value}.
const azureTagsPath = "/metadata/instance/compute/tagsList"

// azureHeader is the header IMDS requires; without it, it answers 400.
var azureHeader = http.Header{"Metadata": {"true"}}

// azure reads the VM's tags from Azure IMDS. The client never uses a proxy
// and sends no X-Forwarded-For, which IMDS refuses.
type azure struct{ c *client }

// newAzure returns the Azure provider.
func newAzure(o Options) *azure { return &azure{c: newClient(Azure, o)} }

func (p *azure) close() { p.c.close() }

// fetch reads the tag list, one request for every key.
func (p *azure) fetch(ctx context.Context) (Values, error) {
	q := url.Values{"api-version": {azureAPIVersion}, "format": {"json"}}
	r, err := p.c.do(ctx, http.MethodGet, azureTagsPath+"?"+q.Encode(), azureHeader)
	if err != nil {
		return Values{}, err
	}

	var v Values
	switch r.status {
	case http.StatusOK:
	case http.StatusNotFound:
		return v, nil
	default:
		return v, p.c.statusError("read "+azureTagsPath, r)
	}

	var tags []struct {
		Name  string `json:"name"`
		Value string `json:"value"`
	}
	if err := json.Unmarshal(r.body, &tags); err != nil {
		return v, unavailablef("azure: decode %s: %w", azureTagsPath, err)
	}
	// Azure treats tag names without regard to case.
	for _, key := range keys {
		for _, t := range tags {
			if strings.EqualFold(t.Name, key) && !v.has(key) {
				v.set(key, t.Value, "azure tag "+t.Name)
			}
		}
	}
	return v, nil
}
