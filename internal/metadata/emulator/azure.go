package emulator

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"
)

// azureVersions are the api-versions the emulator accepts, newest last; a
// subset of what IMDS lists.
var azureVersions = []string{
	"2017-03-01", "2017-08-01", "2018-02-01", "2018-10-01", "2019-03-11", "2019-06-01",
	"2019-06-04", "2019-08-15", "2020-06-01", "2020-09-01", "2021-01-01", "2021-02-01",
	"2021-05-01", "2021-08-01", "2021-12-13", "2023-07-01", "2024-03-15", "2025-04-07",
}

// Tag is an Azure tag.
type Tag struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// Azure emulates Azure's Instance Metadata Service. It enforces and
// answers, in this order:
//
//   - X-Forwarded-For present: 400.
//   - Metadata other than "true": 400, "Required metadata header not
//     specified".
//   - A query parameter given twice: 400.
//   - No api-version: 400 naming the newest versions; an unknown one: 400.
//   - Over the rate limit (SetRateLimit, off by default; IMDS allows 5 a
//     second): 429.
//   - A method other than GET: 405.
//   - /metadata/instance, /metadata/instance/compute: JSON with the tags
//     as "tags" ("k:v;k:v") and "tagsList" ([{name, value}], from
//     api-version 2019-06-04); /metadata/instance/compute/tagsList: that
//     list alone (404 before 2019-06-04). Anything else: 404.
type Azure struct {
	control

	dmu         sync.Mutex
	tags        []Tag
	rateLimit   int
	windowStart time.Time
	inWindow    int
}

// NewAzure returns an Azure emulator with no tags.
func NewAzure() *Azure { return &Azure{} }

// SetTag sets tag name to value, in place if it exists.
func (a *Azure) SetTag(name, value string) {
	a.dmu.Lock()
	defer a.dmu.Unlock()
	for i := range a.tags {
		if a.tags[i].Name == name {
			a.tags[i].Value = value
			return
		}
	}
	a.tags = append(a.tags, Tag{name, value})
}

// DeleteTag removes tag name.
func (a *Azure) DeleteTag(name string) {
	a.dmu.Lock()
	defer a.dmu.Unlock()
	a.tags = slices.DeleteFunc(a.tags, func(t Tag) bool { return t.Name == name })
}

// SetRateLimit answers 429 to requests beyond n within a second (0: no
// limit).
func (a *Azure) SetRateLimit(n int) {
	a.dmu.Lock()
	defer a.dmu.Unlock()
	a.rateLimit = n
}

// ServeHTTP implements http.Handler.
func (a *Azure) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !a.gate(w, r) {
		return
	}
	q := r.URL.Query()
	version := q.Get("api-version")

	switch {
	case r.Header.Get("X-Forwarded-For") != "":
		azureError(w, http.StatusBadRequest, "Bad request. X-Forwarded-For is not allowed")
		return
	case r.Header.Get("Metadata") != "true":
		azureError(w, http.StatusBadRequest, "Bad request. Required metadata header not specified")
		return
	case duplicated(q):
		azureError(w, http.StatusBadRequest, "Bad request. Query parameters must not repeat")
		return
	case version == "":
		azureError(w, http.StatusBadRequest,
			"Bad request. api-version was not specified in the request")
		return
	case !slices.Contains(azureVersions, version):
		azureError(w, http.StatusBadRequest, "Bad request. api-version is invalid")
		return
	case !a.allow():
		azureError(w, http.StatusTooManyRequests, "Too many requests")
		return
	case r.Method != http.MethodGet:
		azureError(w, http.StatusMethodNotAllowed, "Method not allowed")
		return
	}

	a.dmu.Lock()
	tags := slices.Clone(a.tags)
	a.dmu.Unlock()
	if tags == nil {
		tags = []Tag{}
	}
	withList := version >= "2019-06-04"
	compute := map[string]any{
		"name":     "node-1",
		"vmId":     "02aab8a4-74ef-476e-8182-f6d2ba4166a6",
		"location": "westeurope",
		"tags":     joinTags(tags),
	}
	if withList {
		compute["tagsList"] = tags
	}

	var body any
	switch strings.TrimSuffix(r.URL.Path, "/") {
	case "/metadata/instance":
		body = map[string]any{"compute": compute, "network": map[string]any{}}
	case "/metadata/instance/compute":
		body = compute
	case "/metadata/instance/compute/tagsList":
		if !withList {
			azureError(w, http.StatusNotFound, "Not found")
			return
		}
		body = tags
	default:
		azureError(w, http.StatusNotFound, "Not found")
		return
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	_ = json.NewEncoder(w).Encode(body)
}

// allow counts a request against the rate limit and reports whether it is
// within it.
func (a *Azure) allow() bool {
	a.dmu.Lock()
	defer a.dmu.Unlock()
	if a.rateLimit == 0 {
		return true
	}
	if now := time.Now(); now.Sub(a.windowStart) >= time.Second {
		a.windowStart, a.inWindow = now, 0
	}
	a.inWindow++
	return a.inWindow <= a.rateLimit
}

// duplicated reports whether a query parameter is given more than once.
func duplicated(q map[string][]string) bool {
	for _, v := range q {
		if len(v) > 1 {
			return true
		}
	}
	return false
}

// joinTags renders tags in the form of compute/tags, "k:v;k:v".
func joinTags(tags []Tag) string {
	parts := make([]string, len(tags))
	for i, t := range tags {
		parts[i] = t.Name + ":" + t.Value
	}
	return strings.Join(parts, ";")
}

// azureError writes IMDS's JSON error form; a 400 also lists the newest
// versions, as IMDS does.
func azureError(w http.ResponseWriter, status int, msg string) {
	body := map[string]any{"error": msg}
	if status == http.StatusBadRequest {
		newest := make([]string, 0, 3)
		for _, v := range slices.Backward(azureVersions) {
			if newest = append(newest, v); len(newest) == 3 {
				break
			}
		}
		body["newest-versions"] = newest
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(body)
}
