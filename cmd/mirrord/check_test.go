package main

import (
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/mirrord/mirrord/internal/probe"
)

const checkDigest = "sha256:2222222222222222222222222222222222222222222222222222222222222222"

// basicRegistry serves /v2/ and library/busybox:latest to one user on
// loopback, and records the requests' paths.
type basicRegistry struct {
	user, pass string
	mu         sync.Mutex
	paths      []string
}

func (b *basicRegistry) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b.mu.Lock()
	b.paths = append(b.paths, r.Method+" "+r.URL.RequestURI())
	b.mu.Unlock()

	if u, p, ok := r.BasicAuth(); b.user != "" && (!ok || u != b.user || p != b.pass) {
		w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	switch r.URL.Path {
	case "/v2/":
	case "/v2/library/busybox/manifests/latest":
		w.Header().Set("Docker-Content-Digest", checkDigest)
	default:
		http.NotFound(w, r)
	}
}

func closedAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// TestCheck runs mirrord check on a spec with a mirror that needs
// credentials, one that is down, and a registry with no working mirror:
// the table and the JSON say which works, the exit status is 1, and the
// credentials show nowhere.
func TestCheck(t *testing.T) {
	clearEnv(t)
	root := t.TempDir()
	reg := &basicRegistry{user: leakUser, pass: leakToken}
	srv := httptest.NewServer(reg)
	t.Cleanup(srv.Close)
	down := closedAddr(t)

	spec := `[registries."docker.io"]
mirrors = [
  "http://` + down + `",
  { url = "` + srv.URL + `", username = "` + leakUser + `",
    password_file = "/etc/mirrord/secrets/hub" },
]

[registries."quay.io"]
canary = ""
mirrors = ["http://` + down + `/quay"]
`
	for rel, content := range map[string]string{
		"etc/mirrord/mirrord.toml":   spec,
		"etc/mirrord/secrets/hub":    leakToken + "\n",
		"etc/containerd/config.toml": "version = 2\n",
	} {
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}

	code, out, errOut := mirrord(t, "check", "--root", root, "--timeout", "2s")
	t.Logf("check:\n%s%s", out, errOut)
	if code != 1 || errOut != "mirrord: check: no working mirror for quay.io\n" {
		t.Errorf("exit %d, stderr %q; want 1 naming quay.io", code, errOut)
	}
	for _, want := range []string{
		"docker.io: OK, 1 of 2 mirrors work (canary library/busybox:latest; file /etc/mirrord/mirrord.toml)",
		"FAIL", "connect: dial tcp " + down + ": connect: connection refused",
		srv.URL + "  sha256:222222222222, basic auth",
		"quay.io: FAIL, 0 of 1 mirror works (no canary: /v2/ only;",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("check output lacks %q", want)
		}
	}
	if !strings.Contains(strings.Join(reg.paths, "\n"),
		"HEAD /v2/library/busybox/manifests/latest?ns=docker.io") {
		t.Errorf("registry saw %q", reg.paths)
	}

	code, js, errJS := mirrord(t, "check", "--root", root, "--json")
	var rep probe.Report
	if err := json.Unmarshal([]byte(js), &rep); err != nil || code != 1 {
		t.Fatalf("check --json: exit %d, %v:\n%s", code, err, js)
	}
	if rep.OK || !rep.Registries[0].OK || rep.Registries[0].Mirrors[1].Auth != "basic" ||
		rep.Registries[1].OK || rep.Registries[0].Mirrors[1].Latency <= 0 {
		t.Errorf("check --json: %+v", rep)
	}

	requireNoLeak(t, root, secretForms(leakUser, leakToken), map[string]string{
		"check stdout": out, "check stderr": errOut, "check --json": js + errJS})
	if _, err := os.Stat(filepath.Join(root, "var/lib/mirrord")); err == nil {
		t.Error("check wrote mirrord's state directory")
	}
}
