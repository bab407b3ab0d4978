package e2e

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// registry is a docker-registry serving on loopback inside a test's
// network namespace: the mirror the runtimes should pull from.
type registry struct {
	addr   string // host:port inside the namespace
	access string // the access log: docker-registry writes it to stdout
	ns     *netns
	d      *daemon
}

// registryConfig is docker-registry's configuration: storage in a
// directory, listening on one address, access log on, no background jobs.
const registryConfig = `version: 0.1
log:
  level: info
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
http:
  addr: %s
  secret: mirrord-e2e
maintenance:
  uploadpurging:
    enabled: false
`

// startRegistry starts docker-registry on 127.0.0.1:port inside ns, waits
// until it listens, and pushes the test image to it.
func startRegistry(t *testing.T, ns *netns, port int) *registry {
	t.Helper()
	lookTools(t, "docker-registry", "skopeo")

	dir := t.TempDir()
	r := &registry{
		addr:   fmt.Sprintf("127.0.0.1:%d", port),
		access: filepath.Join(dir, "access.log"),
		ns:     ns,
	}

	cfg := filepath.Join(dir, "config.yml")
	data := fmt.Sprintf(registryConfig, filepath.Join(dir, "storage"), r.addr)
	if err := os.WriteFile(cfg, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}

	r.d = &daemon{
		name:   "docker-registry " + r.addr,
		log:    filepath.Join(dir, "registry.log"),
		stdout: r.access,
	}
	startDaemon(t, r.d, ns.argv("docker-registry", "serve", cfg))
	r.d.waitFor(t, r.d.name, 10*time.Second, func() error {
		return ns.listening(r.d.pid(), port)
	})
	r.d.requireProgram(t, "docker-registry")

	r.push(t)
	return r
}

// push copies the test image into the registry as
// library/<imageName>:<imageTag>.
func (r *registry) push(t *testing.T) {
	t.Helper()

	dest := fmt.Sprintf("docker://%s/library/%s:%s", r.addr, imageName, imageTag)
	r.ns.run(t, "skopeo", "copy", "--quiet", "--dest-tls-verify=false",
		"oci:"+imageDir+":"+imageTag, dest)
}

// accessEntry is one request in a registry's access log.
type accessEntry struct {
	Method    string
	Path      string // with the query, as requested
	Status    int
	UserAgent string
}

// accessLine matches the combined log format docker-registry writes:
// host ident user [time] "method path proto" status size "referer" "agent".
var accessLine = regexp.MustCompile(
	`^\S+ \S+ \S+ \[[^\]]*\] "(\S+) (\S+) [^"]*" (\d{3}) \S+ "[^"]*" "([^"]*)"`)

// parseAccessLog returns the requests in a combined-format access log, in
// order. Lines in another format are skipped.
func parseAccessLog(r io.Reader) ([]accessEntry, error) {
	var entries []accessEntry
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		m := accessLine.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		var status int
		fmt.Sscan(m[3], &status)
		entries = append(entries, accessEntry{
			Method: m[1], Path: m[2], Status: status, UserAgent: m[4],
		})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read access log: %w", err)
	}
	return entries, nil
}

// requests returns the requests in the registry's access log so far.
func (r *registry) requests(t *testing.T) []accessEntry {
	t.Helper()

	f, err := os.Open(r.access)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()

	entries, err := parseAccessLog(f)
	if err != nil {
		t.Fatalf("%s: %v", r.access, err)
	}
	return entries
}

// matching returns the entries that are method requests of path (query
// included) whose user agent starts with agent. An empty method matches
// any method.
func matching(entries []accessEntry, method, path, agent string) []accessEntry {
	var out []accessEntry
	for _, e := range entries {
		if (method == "" || e.Method == method) && e.Path == path &&
			strings.HasPrefix(e.UserAgent, agent) {
			out = append(out, e)
		}
	}
	return out
}

// manifestPath is the path of the test image's manifest by tag, as a client
// asks a registry for it.
func manifestPath(query string) string {
	p := "/v2/library/" + imageName + "/manifests/" + imageTag
	if query != "" {
		p += "?" + query
	}
	return p
}

// requireRequest fails the test unless the registry's access log has a
// method request of path from a user agent starting with agent, and logs
// the matching entries.
func (r *registry) requireRequest(t *testing.T, method, path, agent string) {
	t.Helper()

	all := r.requests(t)
	got := matching(all, method, path, agent)
	if len(got) == 0 {
		var b strings.Builder
		for _, e := range all {
			fmt.Fprintf(&b, "\n  %s %s %d %q", e.Method, e.Path, e.Status, e.UserAgent)
		}
		t.Fatalf("registry %s: no %s %s from a %q* agent; requests:%s",
			r.addr, orAny(method), path, agent, b.String())
	}
	for _, e := range got {
		t.Logf("registry %s served %s %s: %d %q", r.addr, e.Method, e.Path, e.Status, e.UserAgent)
	}
}

func orAny(method string) string {
	if method == "" {
		return "(any method)"
	}
	return method
}
