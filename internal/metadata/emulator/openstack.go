package emulator

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
)

// openStackVersions are the meta_data.json versions the emulator serves,
// "latest" last.
var openStackVersions = []string{"2012-08-10", "2013-04-04", "2016-06-30", "2018-08-27", "latest"}

// OpenStack emulates nova's metadata service, which needs no header. It
// answers:
//
//   - A method other than GET: 405.
//   - /openstack: the versions, one a line.
//   - /openstack/<version>/meta_data.json: uuid, name, hostname,
//     availability_zone, and "meta" with the instance's key/values.
//   - Anything else: 404.
type OpenStack struct {
	control

	dmu  sync.Mutex
	meta map[string]string
}

// NewOpenStack returns an OpenStack emulator with no meta.
func NewOpenStack() *OpenStack { return &OpenStack{meta: map[string]string{}} }

// SetMeta sets the meta key.
func (o *OpenStack) SetMeta(key, value string) {
	o.dmu.Lock()
	defer o.dmu.Unlock()
	o.meta[key] = value
}

// DeleteMeta removes the meta key.
func (o *OpenStack) DeleteMeta(key string) {
	o.dmu.Lock()
	defer o.dmu.Unlock()
	delete(o.meta, key)
}

// MetaData returns meta_data.json as the service serves it now.
func (o *OpenStack) MetaData() []byte {
	o.dmu.Lock()
	defer o.dmu.Unlock()
	b, _ := json.Marshal(map[string]any{
		"uuid":              "83679162-1378-4288-a2d4-70e13ec132aa",
		"name":              "node-1",
		"hostname":          "node-1.novalocal",
		"availability_zone": "nova",
		"launch_index":      0,
		"meta":              maps.Clone(o.meta),
	})
	return b
}

// WriteConfigDrive writes meta_data.json as a config drive mounted at dir
// holds it: dir/openstack/latest/meta_data.json.
func (o *OpenStack) WriteConfigDrive(dir string) error {
	path := filepath.Join(dir, "openstack", "latest", "meta_data.json")
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, o.MetaData(), 0o644)
}

// ServeHTTP implements http.Handler.
func (o *OpenStack) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !o.gate(w, r) {
		return
	}
	if r.Method != http.MethodGet {
		http.Error(w, "Method Not Allowed", http.StatusMethodNotAllowed)
		return
	}

	p := strings.TrimSuffix(r.URL.Path, "/")
	if p == "/openstack" {
		w.Header().Set("Content-Type", "text/plain; charset=UTF-8")
		fmt.Fprint(w, strings.Join(openStackVersions, "\n"))
		return
	}
	for _, v := range openStackVersions {
		if p == "/openstack/"+v+"/meta_data.json" {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write(o.MetaData())
			return
		}
	}
	http.NotFound(w, r)
}
