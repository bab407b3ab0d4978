package emulator

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// GCE emulates the computeMetadata/v1 API of Google Compute Engine, or of
// Yandex Cloud (NewYandex). It enforces and answers:
//
//   - X-Forwarded-For present: 403.
//   - Metadata-Flavor other than "Google": 403.
//   - Yandex with the GCE-format endpoint off (SetDisabled): 400.
//   - A method other than GET: 405.
//   - A path outside the tree: 404; a directory without its trailing
//     slash: 301 to the path with it.
//   - A value: its text (alt=json: a JSON string). A directory: its names,
//     one a line, subdirectories ending in '/' (recursive=true: the whole
//     subtree as JSON).
//   - Every answer carries Metadata-Flavor: Google and an ETag, a hash of
//     the body.
//   - wait_for_change=true: with a last_etag other than the current one
//     (e.g. "NONE"), the answer comes at once; otherwise the request is
//     held until the content of the path changes, or timeout_sec (default
//     300) passes and the unchanged content comes back with its same ETag.
//
// The tree has instance/{id,zone,hostname,attributes/} and, on GCE only,
// project/{project-id,attributes/}.
type GCE struct {
	control
	yandex bool

	dmu      sync.Mutex
	instance map[string]string
	project  map[string]string
	disabled bool
	changed  chan struct{} // closed and replaced at each change
	quit     chan struct{} // closed by Close
	closed   bool
}

// NewGCE returns a GCE emulator with no attributes.
func NewGCE() *GCE {
	return &GCE{
		instance: map[string]string{},
		project:  map[string]string{},
		changed:  make(chan struct{}),
		quit:     make(chan struct{}),
	}
}

// NewYandex returns a Yandex Cloud emulator: the same API with no project
// attributes.
func NewYandex() *GCE {
	g := NewGCE()
	g.yandex = true
	return g
}

// SetInstance sets the instance attribute key.
func (g *GCE) SetInstance(key, value string) { g.edit(func() { g.instance[key] = value }) }

// DeleteInstance removes the instance attribute key.
func (g *GCE) DeleteInstance(key string) { g.edit(func() { delete(g.instance, key) }) }

// SetProject sets the project attribute key (GCE only; Yandex serves none).
func (g *GCE) SetProject(key, value string) { g.edit(func() { g.project[key] = value }) }

// DeleteProject removes the project attribute key.
func (g *GCE) DeleteProject(key string) { g.edit(func() { delete(g.project, key) }) }

// SetDisabled turns the endpoint off (true): every request gets 400, as
// on a Yandex VM whose gce-http-endpoint is off.
func (g *GCE) SetDisabled(off bool) { g.edit(func() { g.disabled = off }) }

// Close answers the held requests at once; call it before closing the
// server, whose Close waits for them.
func (g *GCE) Close() {
	g.dmu.Lock()
	defer g.dmu.Unlock()
	if !g.closed {
		g.closed = true
		close(g.quit)
	}
}

// edit applies f under the lock and wakes the held requests.
func (g *GCE) edit(f func()) {
	g.dmu.Lock()
	defer g.dmu.Unlock()
	f()
	close(g.changed)
	g.changed = make(chan struct{})
}

// tree returns the whole tree as nested maps; values are strings.
func (g *GCE) tree() map[string]any {
	attrs := func(m map[string]string) map[string]any {
		out := make(map[string]any, len(m))
		for k, v := range m {
			out[k] = v
		}
		return out
	}

	t := map[string]any{
		"instance": map[string]any{
			"id":         "4520031799277581759",
			"hostname":   "node-1.c.example-project.internal",
			"zone":       "projects/123456789012/zones/europe-west1-b",
			"attributes": attrs(g.instance),
		},
	}
	if g.yandex {
		inst := t["instance"].(map[string]any)
		inst["id"] = "fhm0b28lgfp4tkoa3jl6"
		inst["hostname"] = "node-1.ru-central1.internal"
		inst["zone"] = "projects/b1g00000000000000000/zones/ru-central1-a"
		return t
	}
	t["project"] = map[string]any{
		"project-id": "example-project",
		"attributes": attrs(g.project),
	}
	return t
}

// ServeHTTP implements http.Handler.
func (g *GCE) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !g.gate(w, r) {
		return
	}
	w.Header().Set("Metadata-Flavor", "Google")

	g.dmu.Lock()
	disabled := g.disabled
	g.dmu.Unlock()
	switch {
	case r.Header.Get("X-Forwarded-For") != "":
		http.Error(w, "Forbidden: X-Forwarded-For is not allowed", http.StatusForbidden)
		return
	case r.Header.Get("Metadata-Flavor") != "Google":
		http.Error(w, "Forbidden: missing Metadata-Flavor:Google header", http.StatusForbidden)
		return
	case disabled:
		http.Error(w, "Bad Request: the GCE-format metadata endpoint is off",
			http.StatusBadRequest)
		return
	case r.Method != http.MethodGet:
		http.Error(w, "Method Not Allowed", http.StatusMethodNotAllowed)
		return
	}

	const prefix = "/computeMetadata/v1/"
	if !strings.HasPrefix(r.URL.Path, prefix) {
		http.NotFound(w, r)
		return
	}
	rest := strings.TrimPrefix(r.URL.Path, prefix)
	q := r.URL.Query()

	if q.Get("wait_for_change") != "true" {
		g.answer(w, r, rest, q.Get("alt"), q.Get("recursive") == "true")
		return
	}
	g.hold(w, r, rest)
}

// hold answers a wait_for_change request when its content differs from
// last_etag, or when timeout_sec passes.
func (g *GCE) hold(w http.ResponseWriter, r *http.Request, rest string) {
	q := r.URL.Query()
	timeout := 300 * time.Second
	if s := q.Get("timeout_sec"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			http.Error(w, "Bad Request: timeout_sec", http.StatusBadRequest)
			return
		}
		timeout = time.Duration(n) * time.Second
	}
	last := q.Get("last_etag")
	timer := time.NewTimer(timeout)
	defer timer.Stop()

	for {
		g.dmu.Lock()
		a := render(g.tree(), rest, q.Get("alt"), q.Get("recursive") == "true")
		changed, quit := g.changed, g.quit
		g.dmu.Unlock()

		if a.status != http.StatusOK || (last != "" && last != a.etag) {
			a.write(w)
			return
		}
		select {
		case <-changed:
		case <-timer.C:
			a.write(w)
			return
		case <-quit:
			a.write(w)
			return
		case <-r.Context().Done():
			return
		}
	}
}

// answer writes the content at rest.
func (g *GCE) answer(w http.ResponseWriter, r *http.Request, rest, alt string, recursive bool) {
	g.dmu.Lock()
	a := render(g.tree(), rest, alt, recursive)
	g.dmu.Unlock()
	if a.status == http.StatusMovedPermanently {
		http.Redirect(w, r, r.URL.Path+"/", http.StatusMovedPermanently)
		return
	}
	a.write(w)
}

// rendered is an answer ready to write.
type rendered struct {
	status      int
	contentType string
	body        []byte
	etag        string
}

func (a rendered) write(w http.ResponseWriter) {
	if a.status != http.StatusOK {
		http.Error(w, http.StatusText(a.status), a.status)
		return
	}
	w.Header().Set("Content-Type", a.contentType)
	w.Header().Set("ETag", a.etag)
	_, _ = w.Write(a.body)
}

// render finds rest ("instance/attributes/k", "instance/", "") in tree
// and renders it.
func render(tree map[string]any, rest, alt string, recursive bool) rendered {
	dirWanted := rest == "" || strings.HasSuffix(rest, "/")
	var node any = tree
	for _, name := range strings.Split(strings.TrimSuffix(rest, "/"), "/") {
		if name == "" {
			continue
		}
		dir, ok := node.(map[string]any)
		if !ok {
			return rendered{status: http.StatusNotFound}
		}
		if node, ok = dir[name]; !ok {
			return rendered{status: http.StatusNotFound}
		}
	}

	var a rendered
	switch n := node.(type) {
	case string:
		if dirWanted {
			return rendered{status: http.StatusNotFound}
		}
		a.contentType, a.body = "application/text", []byte(n)
		if alt == "json" {
			a.contentType = "application/json"
			a.body, _ = json.Marshal(n)
		}
	case map[string]any:
		if !dirWanted {
			return rendered{status: http.StatusMovedPermanently}
		}
		if recursive {
			a.contentType = "application/json"
			a.body, _ = json.Marshal(n)
			break
		}
		var b strings.Builder
		for _, k := range slices.Sorted(maps.Keys(n)) {
			if _, isDir := n[k].(map[string]any); isDir {
				k += "/"
			}
			fmt.Fprintln(&b, k)
		}
		a.contentType, a.body = "application/text", []byte(b.String())
	}
	a.status, a.etag = http.StatusOK, etagOf(a.body)
	return a
}
