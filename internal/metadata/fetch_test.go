package metadata

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/mirrord/mirrord/internal/metadata/emulator"
)

// fetch calls Fetch against s with a bound, and returns its values, the
// time it took, its logs and its error.
func fetch(t *testing.T, s *service, bound time.Duration) (Values, time.Duration, *logRecorder, error) {
	t.Helper()
	log, rec := newLog()
	o := Options{
		Provider: s.provider,
		Endpoint: s.url,
		Timeout:  bound,
		Root:     t.TempDir(),
		Log:      log,
	}
	start := time.Now()
	v, err := Fetch(t.Context(), o)
	return v, time.Since(start), rec, err
}

func TestFetchPresent(t *testing.T) {
	for _, s := range services(t) {
		t.Run(s.provider, func(t *testing.T) {
			s.set(KeyMirrors, sampleMirrors)
			s.set(KeyConfig, sampleConfig)

			got, _, _, err := fetch(t, s, time.Second)
			if err != nil {
				t.Fatalf("Fetch: %v", err)
			}
			want := Values{
				Provider: s.provider,
				Mirrors:  sampleMirrors,
				Config:   []byte(sampleConfig),
				Source: map[string]string{
					KeyMirrors: sourceOf(s.provider, KeyMirrors),
					KeyConfig:  sourceOf(s.provider, KeyConfig),
				},
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("values (-want +got):\n%s", diff)
			}
		})
	}
}

func TestFetchOneKey(t *testing.T) {
	for _, s := range services(t) {
		t.Run(s.provider, func(t *testing.T) {
			s.set(KeyConfig, sampleConfig)

			got, _, _, err := fetch(t, s, time.Second)
			if err != nil {
				t.Fatalf("Fetch: %v", err)
			}
			want := Values{
				Provider: s.provider,
				Config:   []byte(sampleConfig),
				Source:   map[string]string{KeyConfig: sourceOf(s.provider, KeyConfig)},
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("values (-want +got):\n%s", diff)
			}
		})
	}
}

// Invalid values come back raw: judging them is the caller's job.
func TestFetchInvalidReturnedRaw(t *testing.T) {
	const badMirrors, badConfig = "docker.io==;;=nothing", "[[[ not toml"
	for _, s := range services(t) {
		t.Run(s.provider, func(t *testing.T) {
			s.set(KeyMirrors, badMirrors)
			s.set(KeyConfig, badConfig)

			got, _, _, err := fetch(t, s, time.Second)
			if err != nil {
				t.Fatalf("Fetch: %v", err)
			}
			if got.Mirrors != badMirrors || string(got.Config) != badConfig {
				t.Errorf("got %q and %q, want the values as set", got.Mirrors, got.Config)
			}
		})
	}
}

func TestFetchAbsent(t *testing.T) {
	for _, s := range services(t) {
		t.Run(s.provider, func(t *testing.T) {
			s.set("unrelated", "x")
			s.set(KeyMirrors, "") // set but empty counts as absent

			got, _, rec, err := fetch(t, s, time.Second)
			if !errors.Is(err, ErrNoMetadata) {
				t.Fatalf("Fetch: %v, want ErrNoMetadata", err)
			}
			if got.Provider != s.provider || !got.Empty() {
				t.Errorf("values %+v, want provider %s and no keys", got, s.provider)
			}
			if n := rec.count(slog.LevelWarn); n != 0 {
				t.Errorf("%d warnings for absent keys:\n%s", n, rec)
			}
		})
	}
}

// A service that is not there ends the step at once, without a warning.
func TestFetchServiceDown(t *testing.T) {
	for _, s := range services(t) {
		t.Run(s.provider, func(t *testing.T) {
			s.set(KeyMirrors, sampleMirrors)
			s.close()

			_, took, rec, err := fetch(t, s, 2*time.Second)
			if !errors.Is(err, ErrNoMetadata) {
				t.Fatalf("Fetch: %v, want ErrNoMetadata", err)
			}
			if took > 1500*time.Millisecond {
				t.Errorf("took %s against a refused port; want it at once, well before "+
					"the 2s bound", took)
			}
			if rec.count(slog.LevelWarn) != 0 || rec.count(slog.LevelInfo) != 1 {
				t.Errorf("want one Info and no Warn:\n%s", rec)
			}
		})
	}
}

// A service slower than the bound is abandoned at the bound, with a
// warning.
func TestFetchSlow(t *testing.T) {
	const bound = 300 * time.Millisecond
	forEach(t, services(t), func(t *testing.T, s *service) {
		s.set(KeyMirrors, sampleMirrors)
		s.trouble.SetDelay(5 * time.Second)

		_, took, rec, err := fetch(t, s, bound)
		if !errors.Is(err, ErrNoMetadata) {
			t.Fatalf("Fetch: %v, want ErrNoMetadata", err)
		}
		// The service would answer after 5 s; a margin this wide holds on a
		// loaded machine and still tells the bound from the delay.
		if took < bound || took > bound+2*time.Second {
			t.Errorf("took %s; want the bound, %s", took, bound)
		}
		if !strings.Contains(err.Error(), "gave up after 300ms") {
			t.Errorf("error %q does not say it gave up at the bound", err)
		}
		if n := rec.count(slog.LevelWarn); n != 1 {
			t.Errorf("%d warnings, want 1:\n%s", n, rec)
		}
	})
}

// A service that drops connections is retried until the bound.
func TestFetchDroppedConnections(t *testing.T) {
	const bound = 400 * time.Millisecond
	forEach(t, services(t), func(t *testing.T, s *service) {
		s.trouble.SetDown(true)

		_, took, rec, err := fetch(t, s, bound)
		if !errors.Is(err, ErrNoMetadata) || rec.count(slog.LevelWarn) != 1 {
			t.Fatalf("Fetch: %v; want ErrNoMetadata and one warning:\n%s", err, rec)
		}
		if took < bound {
			t.Errorf("took %s; want retries until the bound, %s", took, bound)
		}
		if n := s.trouble.Requests(); n < 3 {
			t.Errorf("%d requests; want retries", n)
		}
	})
}

// 429 and 5xx answers are retried within the bound.
func TestFetchRetriesTransient(t *testing.T) {
	for _, status := range []int{http.StatusServiceUnavailable, http.StatusTooManyRequests} {
		t.Run(http.StatusText(status), func(t *testing.T) {
			forEach(t, services(t), func(t *testing.T, s *service) {
				s.set(KeyMirrors, sampleMirrors)
				s.trouble.FailNext(2, status)

				got, _, _, err := fetch(t, s, 2*time.Second)
				if err != nil || got.Mirrors != sampleMirrors {
					t.Fatalf("Fetch: %v, %q; want the value after the retries", err, got.Mirrors)
				}
			})
		})
	}
}

// A service that refuses mirrord's request gives no metadata, quickly and
// with a warning.
func TestFetchRefusedRequest(t *testing.T) {
	for _, s := range services(t) {
		t.Run(s.provider, func(t *testing.T) {
			s.set(KeyMirrors, sampleMirrors)
			s.trouble.FailNext(10, http.StatusForbidden)

			_, took, rec, err := fetch(t, s, 2*time.Second)
			if !errors.Is(err, ErrNoMetadata) || rec.count(slog.LevelWarn) != 1 {
				t.Fatalf("Fetch: %v; want ErrNoMetadata and one warning:\n%s", err, rec)
			}
			if !strings.Contains(err.Error(), "403") || took > 1500*time.Millisecond {
				t.Errorf("error %q after %s; want the status, at once", err, took)
			}
		})
	}
}

func TestFetchGCEProjectBeneath(t *testing.T) {
	g := emulator.NewGCE()
	url, _ := serve(t, g, g.Close)
	g.SetInstance(KeyMirrors, sampleMirrors)
	g.SetProject(KeyMirrors, "ignored=https://beneath.example.net")
	g.SetProject(KeyConfig, sampleConfig)

	got, err := Fetch(t.Context(), Options{Provider: GCE, Endpoint: url})
	if err != nil {
		t.Fatal(err)
	}
	want := Values{
		Provider: GCE,
		Mirrors:  sampleMirrors,
		Config:   []byte(sampleConfig),
		Source: map[string]string{
			KeyMirrors: "gce instance attribute mirrord-mirrors",
			KeyConfig:  "gce project attribute mirrord-config",
		},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("values (-want +got):\n%s", diff)
	}
}

// Yandex with its GCE-format endpoint off answers 400.
func TestFetchYandexEndpointOff(t *testing.T) {
	y := emulator.NewYandex()
	url, _ := serve(t, y, y.Close)
	y.SetInstance(KeyMirrors, sampleMirrors)
	y.SetDisabled(true)
	log, rec := newLog()

	_, err := Fetch(t.Context(), Options{Provider: Yandex, Endpoint: url, Log: log})
	if !errors.Is(err, ErrNoMetadata) || !strings.Contains(err.Error(), "400") {
		t.Fatalf("Fetch: %v; want ErrNoMetadata naming status 400", err)
	}
	if rec.count(slog.LevelWarn) != 1 {
		t.Errorf("want one warning:\n%s", rec)
	}
}

func TestFetchAWS(t *testing.T) {
	tests := []struct {
		name    string
		setup   func(e *emulator.EC2)
		allowV1 bool
		want    string // the value of mirrord-mirrors; "" for ErrNoMetadata
		warn    bool
	}{
		{"tags_off", func(e *emulator.EC2) { e.SetTagsEnabled(false) }, false, "", false},
		{"endpoint_off", func(e *emulator.EC2) { e.SetDisabled(true) }, false, "", true},
		{"token_refused_v1_allowed", func(e *emulator.EC2) {
			e.SetTokensOptional(true)
			e.FailNext(1, http.StatusMethodNotAllowed) // the token request
		}, true, sampleMirrors, false},
		{"token_refused_v1_not_allowed", func(e *emulator.EC2) {
			e.SetTokensOptional(true)
			e.FailNext(1, http.StatusMethodNotAllowed)
		}, false, "", true},
		{"v1_allowed_v2_works", func(e *emulator.EC2) {}, true, sampleMirrors, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := emulator.NewEC2()
			url, _ := serve(t, e, nil)
			e.SetTag(KeyMirrors, sampleMirrors)
			tt.setup(e)
			log, rec := newLog()

			got, err := Fetch(t.Context(), Options{
				Provider: AWS, Endpoint: url, AllowIMDSv1: tt.allowV1, Log: log,
			})
			switch {
			case tt.want == "" && !errors.Is(err, ErrNoMetadata):
				t.Fatalf("Fetch: %v, want ErrNoMetadata", err)
			case tt.want != "" && (err != nil || got.Mirrors != tt.want):
				t.Fatalf("Fetch: %v, %q; want %q", err, got.Mirrors, tt.want)
			}
			if warned := rec.count(slog.LevelWarn) > 0; warned != tt.warn {
				t.Errorf("warned %v, want %v:\n%s", warned, tt.warn, rec)
			}
		})
	}
}

// An expired token is replaced: on a 401, and ahead of its expiry.
func TestAWSTokenExpiry(t *testing.T) {
	e := emulator.NewEC2()
	url, _ := serve(t, e, nil)
	e.SetTag(KeyMirrors, sampleMirrors)
	o, _ := Options{Provider: AWS, Endpoint: url}.normalized()
	p := newEC2(o)
	defer p.close()

	check := func(step string, wantTokens, wantRequests int) {
		t.Helper()
		v, err := p.fetch(t.Context())
		if err != nil || v.Mirrors != sampleMirrors {
			t.Fatalf("%s: %v, %q", step, err, v.Mirrors)
		}
		if got := e.TokensIssued(); got != wantTokens {
			t.Errorf("%s: %d tokens issued, want %d", step, got, wantTokens)
		}
		if got := e.Requests(); got != wantRequests {
			t.Errorf("%s: %d requests in all, want %d", step, got, wantRequests)
		}
	}

	// One GET per key: mirrord-mirrors, mirrord-config, mirrord-credentials.
	check("first", 1, 4)        // PUT, GET, GET, GET
	check("token_reused", 1, 7) // GET, GET, GET
	e.ExpireTokens()            // the service forgets the token
	check("after_401", 2, 12)   // GET (401), PUT, GET, GET, GET
	p.ttl = time.Second         // a new token renewed 0.5 s ahead
	p.dropToken()               //
	check("short_token", 3, 16) // PUT, GET, GET, GET
	time.Sleep(600 * time.Millisecond)
	check("renewed_ahead", 4, 20) // PUT, GET, GET, GET: no 401 first
}

// Tokens appear in no log and no error, even when reads fail.
func TestAWSTokenNotLeaked(t *testing.T) {
	e := emulator.NewEC2()
	url, _ := serve(t, e, nil)
	e.SetTag(KeyMirrors, sampleMirrors)
	log, rec := newLog()
	o := Options{Provider: AWS, Endpoint: url, Log: log, Timeout: 300 * time.Millisecond}

	var errs []string
	if _, err := Fetch(t.Context(), o); err != nil {
		errs = append(errs, err.Error())
	}
	e.ExpireTokens()
	for _, status := range []int{http.StatusUnauthorized, http.StatusInternalServerError} {
		e.FailNext(1000, status)
		_, err := Fetch(t.Context(), o)
		errs = append(errs, err.Error())
	}

	text := rec.String() + strings.Join(errs, "\n")
	for _, token := range e.Tokens() {
		if strings.Contains(text, token) {
			t.Errorf("token %q appears in:\n%s", token, text)
		}
	}
}

func TestFetchAzureTagCase(t *testing.T) {
	a := emulator.NewAzure()
	url, _ := serve(t, a, nil)
	a.SetTag("Mirrord-Mirrors", sampleMirrors)

	got, err := Fetch(t.Context(), Options{Provider: Azure, Endpoint: url})
	if err != nil || got.Mirrors != sampleMirrors || got.Source[KeyMirrors] != "azure tag Mirrord-Mirrors" {
		t.Errorf("Fetch: %v, %+v; want the tag whatever its case", err, got)
	}
}

func TestFetchOpenStackConfigDrive(t *testing.T) {
	o := emulator.NewOpenStack()
	url, _ := serve(t, o, nil)
	o.SetMeta(KeyMirrors, sampleMirrors)

	for _, mount := range configDriveMounts {
		t.Run(strings.ReplaceAll(mount, "/", "_"), func(t *testing.T) {
			root := t.TempDir()
			drive := emulator.NewOpenStack()
			drive.SetMeta(KeyConfig, sampleConfig)
			if err := drive.WriteConfigDrive(root + "/" + mount); err != nil {
				t.Fatal(err)
			}
			before := o.Requests()

			got, err := Fetch(t.Context(), Options{Provider: OpenStack, Root: root})
			if err != nil {
				t.Fatal(err)
			}
			want := Values{
				Provider: OpenStack,
				Config:   []byte(sampleConfig),
				Source: map[string]string{
					KeyConfig: "openstack meta mirrord-config (config drive /" + mount + ")",
				},
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("values (-want +got):\n%s", diff)
			}

			// An endpoint asks for the service instead.
			got, err = Fetch(t.Context(), Options{Provider: OpenStack, Root: root, Endpoint: url})
			if err != nil || got.Mirrors != sampleMirrors || o.Requests() != before+1 {
				t.Errorf("with an endpoint: %v, %+v; want the service's values", err, got)
			}
		})
	}

	t.Run("malformed_drive", func(t *testing.T) {
		root := t.TempDir()
		writeFile(t, root, "mnt/config/openstack/latest/meta_data.json", "{not json")
		_, err := Fetch(t.Context(), Options{Provider: OpenStack, Root: root})
		if err == nil || errors.Is(err, ErrNoMetadata) {
			t.Errorf("Fetch: %v; want an error of its own", err)
		}
	})
}

func TestFetchWithoutProvider(t *testing.T) {
	tests := []struct {
		name string
		o    Options
	}{
		{"none", Options{Provider: "none"}},
		{"auto_nothing_detected", Options{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.o.Root = t.TempDir()
			tt.o.Endpoint = closedURL(t)
			got, err := Fetch(t.Context(), tt.o)
			if !errors.Is(err, ErrNoMetadata) || got.Provider != "" {
				t.Errorf("Fetch: %v, %+v; want ErrNoMetadata and no provider", err, got)
			}
		})
	}
}

// auto detects the provider from the root, then asks its service.
func TestFetchAutoDetected(t *testing.T) {
	g := emulator.NewGCE()
	url, _ := serve(t, g, g.Close)
	g.SetInstance(KeyMirrors, sampleMirrors)
	root := t.TempDir()
	writeFile(t, root, "sys/class/dmi/id/product_name", "Google Compute Engine\n")

	got, err := Fetch(t.Context(), Options{Root: root, Endpoint: url})
	if err != nil || got.Provider != GCE || got.Mirrors != sampleMirrors {
		t.Errorf("Fetch: %v, %+v; want gce's values", err, got)
	}
}

// The caller's cancellation is no ErrNoMetadata: nothing was learnt.
func TestFetchCanceled(t *testing.T) {
	g := emulator.NewGCE()
	url, _ := serve(t, g, g.Close)
	g.SetDelay(5 * time.Second)
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()

	_, err := Fetch(ctx, Options{Provider: GCE, Endpoint: url})
	if err == nil || errors.Is(err, ErrNoMetadata) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Fetch: %v; want the context's error, not ErrNoMetadata", err)
	}
}

// Every client goes around proxies and has no timeout of its own.
func TestClientsNoProxyNoTimeout(t *testing.T) {
	t.Setenv("HTTP_PROXY", "http://proxy.invalid:3128")
	o, _ := Options{}.normalized()
	clients := map[string]*client{
		GCE:       newCompute(GCE, o).c,
		Yandex:    newYandex(o).c,
		AWS:       newEC2(o).c,
		Azure:     newAzure(o).c,
		OpenStack: newOpenStack(o).c,
	}
	for name, c := range clients {
		tr := c.hc.Transport.(*http.Transport)
		if tr.Proxy != nil || c.hc.Timeout != 0 || tr.ResponseHeaderTimeout != 0 {
			t.Errorf("%s: proxy set %v, client timeout %s, header timeout %s; want none",
				name, tr.Proxy != nil, c.hc.Timeout, tr.ResponseHeaderTimeout)
		}
		if c.base != linkLocal {
			t.Errorf("%s: base %q, want %q", name, c.base, linkLocal)
		}
	}
}

func TestOptionsValidate(t *testing.T) {
	tests := []struct {
		name string
		o    Options
		want string // a part of the error; "" for none
	}{
		{"zero", Options{}, ""},
		{"each_provider", Options{Provider: CloudInit}, ""},
		{"unknown_provider", Options{Provider: "ec2"}, `provider "ec2" unknown; want one of auto`},
		{"endpoint_http", Options{Endpoint: "http://127.0.0.1:8080"}, ""},
		{"endpoint_https_slash", Options{Endpoint: "https://imds.example.net/"}, ""},
		{"endpoint_ipv6", Options{Endpoint: "http://[fd00:ec2::254]"}, ""},
		{"endpoint_scheme", Options{Endpoint: "ftp://h"}, `scheme "ftp" is not http or https`},
		{"endpoint_bare_host", Options{Endpoint: "169.254.169.254"}, "not http or https"},
		{"endpoint_path", Options{Endpoint: "http://h/latest"}, `path "/latest" is not allowed`},
		{"endpoint_query", Options{Endpoint: "http://h?x=1"}, "a query is not allowed"},
		{"endpoint_user", Options{Endpoint: "http://u:p@h"}, "user information"},
		{"endpoint_no_host", Options{Endpoint: "http://"}, "no host"},
		{"endpoint_port", Options{Endpoint: "http://h:port"}, "invalid port"},
		{"negative_timeout", Options{Timeout: -time.Second}, "timeout -1s is negative"},
		{"negative_interval", Options{Interval: -time.Second}, "interval -1s is negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.o.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("Validate: %v, want nil", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("Validate: %v, want an error with %q", err, tt.want)
			}
		})
	}

	o, err := Options{Endpoint: "https://imds.example.net/"}.normalized()
	if err != nil || o.Endpoint != "https://imds.example.net" || o.Timeout != DefaultTimeout ||
		o.Interval != DefaultInterval || o.Root != "/" || o.Provider != "auto" {
		t.Errorf("normalized: %+v, %v", o, err)
	}
}
