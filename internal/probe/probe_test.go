package probe

import (
	"context"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mirrord/mirrord/internal/spec"
)

const (
	testDigest = "sha256:1111111111111111111111111111111111111111111111111111111111111111"
	testUser   = "robot"
	testPass   = "s3cret-pass"
	testToken  = "t0ken-from-realm"
)

// registry is a minimal registry API on loopback: /v2/ and manifest HEADs
// under prefix, with no auth, Basic auth, or Bearer tokens from its own
// realm. It records what it was asked.
type registry struct {
	prefix string // the path /v2 lives under ("" or "/hub")
	repo   string // the repository it holds, "library/busybox"
	auth   string // "", "basic" or "bearer"
	srv    *httptest.Server

	mu   sync.Mutex
	seen []string // method path?query, authorization scheme
}

func (r *registry) record(req *http.Request) {
	r.mu.Lock()
	defer r.mu.Unlock()
	scheme, _, _ := strings.Cut(req.Header.Get("Authorization"), " ")
	r.seen = append(r.seen, req.Method+" "+req.URL.RequestURI()+" "+scheme)
}

func (r *registry) requests() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.seen...)
}

func (r *registry) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	r.record(req)
	if req.URL.Path == "/token" {
		if u, p, ok := req.BasicAuth(); !ok || u != testUser || p != testPass {
			http.Error(w, "no", http.StatusUnauthorized)
			return
		}
		fmt.Fprintf(w, `{"token": %q}`, testToken)
		return
	}
	if !r.authorized(req) {
		switch r.auth {
		case "basic":
			w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
		case "bearer":
			w.Header().Set("WWW-Authenticate", fmt.Sprintf(
				`Bearer realm="%s/token",service="test",scope="repository:%s:pull"`,
				r.srv.URL, r.repo))
		}
		w.WriteHeader(http.StatusUnauthorized)
		return
	}

	switch req.URL.Path {
	case r.prefix + "/v2/":
		w.WriteHeader(http.StatusOK)
	case r.prefix + "/v2/" + r.repo + "/manifests/latest",
		r.prefix + "/v2/" + r.repo + "/manifests/" + testDigest:
		w.Header().Set("Docker-Content-Digest", testDigest)
		w.WriteHeader(http.StatusOK)
	default:
		http.NotFound(w, req)
	}
}

func (r *registry) authorized(req *http.Request) bool {
	switch r.auth {
	case "basic":
		u, p, ok := req.BasicAuth()
		return ok && u == testUser && p == testPass
	case "bearer":
		return req.Header.Get("Authorization") == "Bearer "+testToken
	}
	return true
}

func serve(t *testing.T, r *registry, tls bool) *registry {
	t.Helper()
	if r.repo == "" {
		r.repo = "library/busybox"
	}
	if tls {
		r.srv = httptest.NewTLSServer(r)
	} else {
		r.srv = httptest.NewServer(r)
	}
	t.Cleanup(r.srv.Close)
	return r
}

func mirror(t *testing.T, url string) spec.Mirror {
	t.Helper()
	m, err := spec.NewMirror(url)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func withAuth(m spec.Mirror) spec.Mirror {
	m.Auth = &spec.Auth{Username: testUser, Password: spec.NewSecret(testPass),
		Key: spec.KeyPasswordEnv, Name: "PASS"}
	return m
}

// downURL is a loopback address nothing listens on.
func downURL(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return "http://" + addr
}

func TestCheck(t *testing.T) {
	root := t.TempDir()
	plain := serve(t, &registry{}, false)
	basic := serve(t, &registry{auth: "basic"}, false)
	bearer := serve(t, &registry{auth: "bearer"}, false)
	atPath := serve(t, &registry{prefix: "/hub"}, false)
	atPrefix := serve(t, &registry{repo: "cache/library/busybox"}, false)
	secure := serve(t, &registry{}, true)
	caFile := "/etc/mirrord/ca.pem"
	writeCA(t, filepath.Join(root, caFile), secure.srv)

	withCA := mirror(t, secure.srv.URL)
	withCA.CAFile = caFile
	tests := []struct {
		name       string
		m          spec.Mirror
		wantStatus Status
		wantStep   string
		wantAuth   string
		wantErr    string
	}{
		{name: "plain", m: mirror(t, plain.srv.URL), wantStatus: OK, wantAuth: "none"},
		{name: "basic", m: withAuth(mirror(t, basic.srv.URL)), wantStatus: OK, wantAuth: "basic"},
		{name: "basic_without_credentials", m: mirror(t, basic.srv.URL), wantStatus: Fail,
			wantStep: StepAuth, wantErr: "asks for Basic credentials"},
		{name: "basic_wrong_password", m: func() spec.Mirror {
			m := withAuth(mirror(t, basic.srv.URL))
			m.Auth.Password = spec.NewSecret("wrong")
			return m
		}(), wantStatus: Fail, wantStep: StepAuth, wantErr: "refused the credentials"},
		{name: "bearer", m: withAuth(mirror(t, bearer.srv.URL)), wantStatus: OK,
			wantAuth: "bearer"},
		{name: "bearer_without_credentials", m: mirror(t, bearer.srv.URL), wantStatus: Fail,
			wantStep: StepAuth, wantErr: "asks for a Bearer token: token realm"},
		{name: "root_at_path", m: mirror(t, atPath.srv.URL+"/hub"), wantStatus: OK,
			wantAuth: "none"},
		{name: "repository_prefix", m: mirror(t, atPrefix.srv.URL+"/v2/cache"),
			wantStatus: OK, wantAuth: "none"},
		{name: "prefix_written_as_root", m: mirror(t, atPrefix.srv.URL+"/cache"),
			wantStatus: Fail, wantStep: StepV2, wantErr: "no registry API there; a mirror " +
				"that serves a repository prefix in its API is written https://host/v2/PREFIX"},
		{name: "tls_with_ca", m: withCA, wantStatus: OK, wantAuth: "none"},
		{name: "tls_unknown_ca", m: mirror(t, secure.srv.URL), wantStatus: Fail,
			wantStep: StepTLS, wantErr: "TLS: "},
		{name: "tls_skip_verify", m: func() spec.Mirror {
			m := mirror(t, secure.srv.URL)
			m.SkipVerify = true
			return m
		}(), wantStatus: OK, wantAuth: "none"},
		{name: "down", m: mirror(t, downURL(t)), wantStatus: Fail, wantStep: StepConnect,
			wantErr: "connection refused"},
	}

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := spec.Registry{Host: "docker.io", Mirrors: []spec.Mirror{tt.m}}
			rep := Check(context.Background(), spec.Spec{Registries: []spec.Registry{r}},
				Options{Root: root, Timeout: 2 * time.Second})
			got := rep.Registries[0].Mirrors[0]
			if got.Status != tt.wantStatus || got.Step != tt.wantStep ||
				(tt.wantAuth != "" && got.Auth != tt.wantAuth) ||
				!strings.Contains(got.Error, tt.wantErr) {
				t.Errorf("got %+v\nwant status %s step %q auth %q error containing %q",
					got, tt.wantStatus, tt.wantStep, tt.wantAuth, tt.wantErr)
			}
			if rep.OK != (tt.wantStatus == OK) {
				t.Errorf("report OK %v", rep.OK)
			}
			if tt.wantStatus == OK && got.Digest != testDigest {
				t.Errorf("digest %q, want %q", got.Digest, testDigest)
			}
			for _, leak := range []string{testPass, testToken} {
				if strings.Contains(fmt.Sprintf("%+v", rep), leak) {
					t.Errorf("report shows %q: %+v", leak, rep)
				}
			}
		})
	}

	// The manifest request carries ?ns= as containerd's does.
	want := "HEAD /v2/library/busybox/manifests/latest?ns=docker.io "
	if !containsPrefix(plain.requests(), want) {
		t.Errorf("plain registry saw %q, want %q", plain.requests(), want)
	}
	if !containsPrefix(atPrefix.requests(), "HEAD /v2/cache/library/busybox/manifests/latest?ns=docker.io") {
		t.Errorf("prefix registry saw %q", atPrefix.requests())
	}
}

func containsPrefix(list []string, prefix string) bool {
	for _, s := range list {
		if strings.HasPrefix(s, prefix) {
			return true
		}
	}
	return false
}

func writeCA(t *testing.T, path string, srv *httptest.Server) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	cert := srv.Certificate()
	data := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// A pull-only mirror is asked by the digest a resolving mirror named; with
// none working and the upstream unreachable, it cannot be tested.
func TestPullOnly(t *testing.T) {
	plain := serve(t, &registry{}, false)
	pullOnly := mirror(t, serve(t, &registry{}, false).srv.URL)
	pullOnly.Untrusted, pullOnly.Capabilities = true, []spec.Capability{spec.Pull}

	r := spec.Registry{Host: "docker.io", Mirrors: []spec.Mirror{pullOnly,
		mirror(t, plain.srv.URL)}}
	rep := Check(context.Background(), spec.Spec{Registries: []spec.Registry{r}},
		Options{Timeout: 2 * time.Second})
	got := rep.Registries[0]
	if got.Working != 2 || got.Mirrors[0].Digest != testDigest ||
		got.Resolved != "mirror "+plain.srv.URL {
		t.Errorf("with a resolving mirror: %+v", got)
	}

	// No resolver, and an upstream that does not answer (a loopback port
	// with nothing behind it stands for one out of reach).
	closed := strings.TrimPrefix(downURL(t), "http://")
	r = spec.Registry{Host: closed, Canary: "library/busybox:latest",
		Mirrors: []spec.Mirror{pullOnly}}
	rep = Check(context.Background(), spec.Spec{Registries: []spec.Registry{r}},
		Options{Timeout: 2 * time.Second})
	got = rep.Registries[0]
	if rep.OK || got.Mirrors[0].Status != Unknown || !strings.Contains(got.Unresolved,
		"the upstream https://"+closed+" cannot resolve them either") {
		t.Errorf("with the upstream out of reach: %+v", got)
	}

	// No resolver: the upstream is off here, so nothing can name the digest.
	r = spec.Registry{Host: "docker.io", NoUpstream: true, Mirrors: []spec.Mirror{pullOnly,
		mirror(t, downURL(t))}}
	rep = Check(context.Background(), spec.Spec{Registries: []spec.Registry{r}},
		Options{Timeout: 2 * time.Second})
	got = rep.Registries[0]
	if rep.OK || got.Mirrors[0].Status != Unknown || got.Mirrors[0].Step != StepResolve ||
		!strings.Contains(got.Mirrors[0].Error, "may not resolve tags") {
		t.Errorf("without a resolver: %+v", got)
	}
}

// A mirror that accepts connections and never answers is given up at the
// bound, and the other mirrors are probed meanwhile.
func TestHangingMirrorBounded(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	var conns []net.Conn
	var mu sync.Mutex
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c) // held open, never answered
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})

	plain := serve(t, &registry{}, false)
	r := spec.Registry{Host: "docker.io", Mirrors: []spec.Mirror{
		mirror(t, "http://"+l.Addr().String()), mirror(t, plain.srv.URL)}}
	start := time.Now()
	rep := Check(context.Background(), spec.Spec{Registries: []spec.Registry{r}},
		Options{Timeout: 300 * time.Millisecond})
	took := time.Since(start)

	got := rep.Registries[0]
	if got.Mirrors[0].Status != Fail || got.Mirrors[0].Error != "no answer within 300ms" ||
		got.Mirrors[1].Status != OK || !rep.OK {
		t.Errorf("got %+v", got)
	}
	if took > 2*time.Second {
		t.Errorf("check took %v with a 300ms bound", took)
	}
}

func TestParseChallenge(t *testing.T) {
	c, ok := parseChallenge(`Bearer realm="https://auth.example.net/token",` +
		`service="registry.example.net",scope="repository:a/b:pull,push"`)
	if !ok || c.scheme != "bearer" || c.params["realm"] != "https://auth.example.net/token" ||
		c.params["service"] != "registry.example.net" ||
		c.params["scope"] != "repository:a/b:pull,push" {
		t.Errorf("bearer: %+v %v", c, ok)
	}
	if c, ok := parseChallenge(`Basic realm="Registry Realm"`); !ok || c.scheme != "basic" {
		t.Errorf("basic: %+v %v", c, ok)
	}
	for _, bad := range []string{"", "Negotiate", `Bearer service="x"`} {
		if _, ok := parseChallenge(bad); ok {
			t.Errorf("parseChallenge(%q) ok", bad)
		}
	}
}
