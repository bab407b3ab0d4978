package emulator

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// call sends method url with header to h and returns the status, the body
// and the answer's header.
func call(t *testing.T, h http.Handler, method, url string, header http.Header) (int, string, http.Header) {
	t.Helper()
	srv := httptest.NewServer(h)
	defer srv.Close()
	return callServer(t, srv, method, url, header)
}

// callServer is call against a running server.
func callServer(t *testing.T, srv *httptest.Server, method, url string, header http.Header) (int, string, http.Header) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, srv.URL+url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header = header
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b), resp.Header
}

var google = http.Header{"Metadata-Flavor": {"Google"}}

func TestGCERefusals(t *testing.T) {
	g := NewGCE()
	g.SetInstance("k", "v")
	y := NewYandex()
	y.SetDisabled(true)

	tests := []struct {
		name   string
		h      http.Handler
		method string
		url    string
		header http.Header
		want   int
	}{
		{"no_flavor", g, "GET", "/computeMetadata/v1/instance/attributes/k", nil, 403},
		{"wrong_flavor", g, "GET", "/computeMetadata/v1/instance/attributes/k",
			http.Header{"Metadata-Flavor": {"google"}}, 403},
		{"forwarded", g, "GET", "/computeMetadata/v1/instance/attributes/k",
			http.Header{"Metadata-Flavor": {"Google"}, "X-Forwarded-For": {"10.0.0.1"}}, 403},
		{"post", g, "POST", "/computeMetadata/v1/instance/attributes/k", google, 405},
		{"absent_key", g, "GET", "/computeMetadata/v1/instance/attributes/x", google, 404},
		{"leaf_as_dir", g, "GET", "/computeMetadata/v1/instance/attributes/k/", google, 404},
		{"outside", g, "GET", "/latest/meta-data/", google, 404},
		{"yandex_off", y, "GET", "/computeMetadata/v1/instance/id", google, 400},
		{"yandex_no_project", NewYandex(), "GET",
			"/computeMetadata/v1/project/attributes/", google, 404},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, _, _ := call(t, tt.h, tt.method, tt.url, tt.header)
			if got != tt.want {
				t.Errorf("status %d, want %d", got, tt.want)
			}
		})
	}
}

func TestGCEAnswers(t *testing.T) {
	g := NewGCE()
	g.SetInstance("k", "v1")
	g.SetProject("p", "v2")

	status, body, h := call(t, g, "GET", "/computeMetadata/v1/instance/attributes/k", google)
	if status != 200 || body != "v1" || h.Get("Metadata-Flavor") != "Google" || h.Get("ETag") == "" {
		t.Errorf("leaf: %d %q, headers %v", status, body, h)
	}

	_, body, _ = call(t, g, "GET", "/computeMetadata/v1/instance/attributes/", google)
	if body != "k\n" {
		t.Errorf("listing: %q, want %q", body, "k\n")
	}

	_, body, _ = call(t, g, "GET", "/computeMetadata/v1/?recursive=true&alt=json", google)
	var doc struct {
		Instance struct{ Attributes map[string]string }
		Project  struct{ Attributes map[string]string }
	}
	if err := json.Unmarshal([]byte(body), &doc); err != nil {
		t.Fatalf("recursive root: %v: %s", err, body)
	}
	if doc.Instance.Attributes["k"] != "v1" || doc.Project.Attributes["p"] != "v2" {
		t.Errorf("recursive root: %s", body)
	}

	srv := httptest.NewServer(g)
	defer srv.Close()
	client := *srv.Client()
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	req, _ := http.NewRequestWithContext(t.Context(), "GET",
		srv.URL+"/computeMetadata/v1/instance/attributes", nil)
	req.Header = google
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 301 || resp.Header.Get("Location") != "/computeMetadata/v1/instance/attributes/" {
		t.Errorf("directory without slash: %d to %q", resp.StatusCode, resp.Header.Get("Location"))
	}
}

func TestGCEWaitForChange(t *testing.T) {
	g := NewGCE()
	g.SetInstance("k", "v1")
	srv := httptest.NewServer(g)
	t.Cleanup(func() { g.Close(); srv.Close() })
	const path = "/computeMetadata/v1/instance/attributes/?recursive=true&wait_for_change=true"

	start := time.Now()
	_, _, h := callServer(t, srv, "GET", path+"&last_etag=NONE", google)
	etag := h.Get("ETag")
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Errorf("last_etag=NONE held %s; want an answer at once", d)
	}

	t.Run("held_until_change", func(t *testing.T) {
		go func() {
			time.Sleep(300 * time.Millisecond)
			g.SetInstance("k", "v2")
		}()
		start := time.Now()
		_, body, h := callServer(t, srv, "GET", path+"&timeout_sec=10&last_etag="+etag, google)
		d := time.Since(start)
		if d < 250*time.Millisecond || d > 5*time.Second {
			t.Errorf("answered after %s; want it held until the change at 300ms", d)
		}
		if !strings.Contains(body, "v2") || h.Get("ETag") == etag {
			t.Errorf("answer %q with ETag %q; want v2 under a new ETag", body, h.Get("ETag"))
		}
		etag = h.Get("ETag")
	})

	t.Run("held_until_timeout", func(t *testing.T) {
		start := time.Now()
		_, _, h := callServer(t, srv, "GET", path+"&timeout_sec=1&last_etag="+etag, google)
		d := time.Since(start)
		if d < 900*time.Millisecond || d > 3*time.Second {
			t.Errorf("answered after %s; want timeout_sec=1", d)
		}
		if h.Get("ETag") != etag {
			t.Errorf("ETag %q after the timeout, want the same %q", h.Get("ETag"), etag)
		}
	})

	t.Run("change_elsewhere_keeps_holding", func(t *testing.T) {
		go func() {
			time.Sleep(200 * time.Millisecond)
			g.SetProject("other", "x") // outside instance/attributes/
		}()
		start := time.Now()
		callServer(t, srv, "GET", path+"&timeout_sec=1&last_etag="+etag, google)
		if d := time.Since(start); d < 900*time.Millisecond {
			t.Errorf("answered after %s; a change outside the path must not end the wait", d)
		}
	})
}

func TestEC2(t *testing.T) {
	e := NewEC2()
	e.SetTag("k", "v")
	srv := httptest.NewServer(e)
	defer srv.Close()

	ttl := func(s string) http.Header { return http.Header{"X-Aws-Ec2-Metadata-Token-Ttl-Seconds": {s}} }
	status, token, _ := callServer(t, srv, "PUT", "/latest/api/token", ttl("21600"))
	if status != 200 || token == "" {
		t.Fatalf("token: %d %q", status, token)
	}
	withToken := http.Header{"X-Aws-Ec2-Metadata-Token": {token}}

	tests := []struct {
		name   string
		method string
		url    string
		header http.Header
		want   int
		body   string
	}{
		{"token_no_ttl", "PUT", "/latest/api/token", nil, 400, ""},
		{"token_ttl_zero", "PUT", "/latest/api/token", ttl("0"), 400, ""},
		{"token_ttl_too_long", "PUT", "/latest/api/token", ttl("21601"), 400, ""},
		{"token_forwarded", "PUT", "/latest/api/token",
			http.Header{"X-Aws-Ec2-Metadata-Token-Ttl-Seconds": {"60"}, "X-Forwarded-For": {"1.2.3.4"}},
			403, ""},
		{"read_no_token", "GET", "/latest/meta-data/tags/instance/k", nil, 401, ""},
		{"read_bad_token", "GET", "/latest/meta-data/tags/instance/k",
			http.Header{"X-Aws-Ec2-Metadata-Token": {"forged"}}, 401, ""},
		{"read", "GET", "/latest/meta-data/tags/instance/k", withToken, 200, "v"},
		{"list", "GET", "/latest/meta-data/tags/instance", withToken, 200, "k"},
		{"absent_tag", "GET", "/latest/meta-data/tags/instance/x", withToken, 404, ""},
		{"post", "POST", "/latest/meta-data/tags/instance/k", withToken, 405, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body, _ := callServer(t, srv, tt.method, tt.url, tt.header)
			if status != tt.want || (tt.body != "" && body != tt.body) {
				t.Errorf("%d %q, want %d %q", status, body, tt.want, tt.body)
			}
		})
	}

	t.Run("tags_off", func(t *testing.T) {
		e.SetTagsEnabled(false)
		defer e.SetTagsEnabled(true)
		if status, _, _ := callServer(t, srv, "GET", "/latest/meta-data/tags/instance/k", withToken); status != 404 {
			t.Errorf("status %d, want 404", status)
		}
	})
	t.Run("optional_tokens", func(t *testing.T) {
		e.SetTokensOptional(true)
		defer e.SetTokensOptional(false)
		if status, _, _ := callServer(t, srv, "GET", "/latest/meta-data/tags/instance/k", nil); status != 200 {
			t.Errorf("status %d, want 200", status)
		}
	})
	t.Run("disabled", func(t *testing.T) {
		e.SetDisabled(true)
		defer e.SetDisabled(false)
		if status, _, _ := callServer(t, srv, "PUT", "/latest/api/token", ttl("60")); status != 403 {
			t.Errorf("status %d, want 403", status)
		}
	})
	t.Run("ttl_expiry", func(t *testing.T) {
		_, short, _ := callServer(t, srv, "PUT", "/latest/api/token", ttl("1"))
		h := http.Header{"X-Aws-Ec2-Metadata-Token": {short}}
		if status, _, _ := callServer(t, srv, "GET", "/latest/meta-data/instance-id", h); status != 200 {
			t.Fatalf("fresh token: status %d", status)
		}
		time.Sleep(1100 * time.Millisecond)
		if status, _, _ := callServer(t, srv, "GET", "/latest/meta-data/instance-id", h); status != 401 {
			t.Errorf("token past its TTL: status %d, want 401", status)
		}
	})
	t.Run("expire_tokens", func(t *testing.T) {
		e.ExpireTokens()
		if status, _, _ := callServer(t, srv, "GET", "/latest/meta-data/instance-id", withToken); status != 401 {
			t.Errorf("status %d, want 401", status)
		}
	})
}

func TestAzure(t *testing.T) {
	a := NewAzure()
	a.SetTag("k", "v")
	srv := httptest.NewServer(a)
	defer srv.Close()
	md := http.Header{"Metadata": {"true"}}
	const list = "/metadata/instance/compute/tagsList"

	tests := []struct {
		name   string
		method string
		url    string
		header http.Header
		want   int
	}{
		{"no_header", "GET", list + "?api-version=2021-08-01", nil, 400},
		{"header_false", "GET", list + "?api-version=2021-08-01", http.Header{"Metadata": {"false"}}, 400},
		{"forwarded", "GET", list + "?api-version=2021-08-01",
			http.Header{"Metadata": {"true"}, "X-Forwarded-For": {"1.2.3.4"}}, 400},
		{"no_version", "GET", list, md, 400},
		{"bad_version", "GET", list + "?api-version=2099-01-01", md, 400},
		{"repeated", "GET", list + "?api-version=2021-08-01&api-version=2021-08-01", md, 400},
		{"too_old_for_list", "GET", list + "?api-version=2019-06-01", md, 404},
		{"unknown_path", "GET", "/metadata/nothing?api-version=2021-08-01", md, 404},
		{"post", "POST", list + "?api-version=2021-08-01", md, 405},
		{"ok", "GET", list + "?api-version=2021-08-01&format=json", md, 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body, _ := callServer(t, srv, tt.method, tt.url, tt.header)
			if status != tt.want {
				t.Errorf("status %d (%s), want %d", status, body, tt.want)
			}
		})
	}

	t.Run("body", func(t *testing.T) {
		_, body, _ := callServer(t, srv, "GET", list+"?api-version=2021-08-01", md)
		var got []Tag
		if err := json.Unmarshal([]byte(body), &got); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff([]Tag{{"k", "v"}}, got); diff != "" {
			t.Errorf("tagsList (-want +got):\n%s", diff)
		}
	})
	t.Run("newest_versions", func(t *testing.T) {
		_, body, _ := callServer(t, srv, "GET", list, md)
		if !strings.Contains(body, `"newest-versions":["2025-04-07"`) {
			t.Errorf("400 body %s does not list the newest versions", body)
		}
	})
	t.Run("rate_limit", func(t *testing.T) {
		a.SetRateLimit(2)
		defer a.SetRateLimit(0)
		var got []int
		for range 3 {
			status, _, _ := callServer(t, srv, "GET", list+"?api-version=2021-08-01", md)
			got = append(got, status)
		}
		if diff := cmp.Diff([]int{200, 200, 429}, got); diff != "" {
			t.Errorf("statuses (-want +got):\n%s", diff)
		}
	})
}

func TestOpenStack(t *testing.T) {
	o := NewOpenStack()
	o.SetMeta("k", "v")
	srv := httptest.NewServer(o)
	defer srv.Close()

	status, body, _ := callServer(t, srv, "GET", "/openstack/latest/meta_data.json", nil)
	var doc struct{ Meta map[string]string }
	if err := json.Unmarshal([]byte(body), &doc); status != 200 || err != nil || doc.Meta["k"] != "v" {
		t.Errorf("meta_data.json: %d %s (%v)", status, body, err)
	}
	if status, _, _ := callServer(t, srv, "GET", "/openstack/latest/nothing.json", nil); status != 404 {
		t.Errorf("unknown file: status %d, want 404", status)
	}
	if status, _, _ := callServer(t, srv, "PUT", "/openstack/latest/meta_data.json", nil); status != 405 {
		t.Errorf("PUT: status %d, want 405", status)
	}
	if _, body, _ := callServer(t, srv, "GET", "/openstack", nil); !strings.HasSuffix(body, "latest") {
		t.Errorf("versions %q do not end with latest", body)
	}
}

func TestTrouble(t *testing.T) {
	o := NewOpenStack()
	srv := httptest.NewServer(o)
	defer srv.Close()
	const url = "/openstack/latest/meta_data.json"

	o.FailNext(1, 503)
	if status, _, _ := callServer(t, srv, "GET", url, nil); status != 503 {
		t.Errorf("FailNext: status %d, want 503", status)
	}
	if status, _, _ := callServer(t, srv, "GET", url, nil); status != 200 {
		t.Errorf("after FailNext: status %d, want 200", status)
	}

	o.SetDelay(200 * time.Millisecond)
	start := time.Now()
	callServer(t, srv, "GET", url, nil)
	if d := time.Since(start); d < 200*time.Millisecond {
		t.Errorf("SetDelay: answered after %s", d)
	}
	o.SetDelay(0)

	o.SetDown(true)
	req, _ := http.NewRequestWithContext(t.Context(), "GET", srv.URL+url, nil)
	if resp, err := srv.Client().Do(req); err == nil {
		resp.Body.Close()
		t.Errorf("SetDown: got an answer, status %d", resp.StatusCode)
	}
	o.SetDown(false)

	// The client may retry the dropped request once on a new connection.
	if got := o.Requests(); got < 4 || got > 5 {
		t.Errorf("Requests() = %d, want 4 or 5", got)
	}
}
