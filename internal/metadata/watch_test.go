package metadata

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mirrord/mirrord/internal/metadata/emulator"
)

// watchOptions returns options for a quick watcher of s.
func watchOptions(s *service, log *slog.Logger) Options {
	return Options{
		Provider: s.provider,
		Endpoint: s.url,
		Timeout:  time.Second,
		Interval: 50 * time.Millisecond,
		Log:      log,
		hang:     5 * time.Second,
		backoff:  20 * time.Millisecond,
	}
}

// nextResult is what a Next call returned.
type nextResult struct {
	v   Values
	err error
}

// startNext calls w.Next in the background and returns where its result
// will come.
func startNext(ctx context.Context, w Watcher) <-chan nextResult {
	ch := make(chan nextResult, 1)
	go func() {
		v, err := w.Next(ctx)
		ch <- nextResult{v, err}
	}()
	return ch
}

// await returns the result from ch, failing the test after limit.
func await(t *testing.T, ch <-chan nextResult, limit time.Duration) nextResult {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(limit):
		t.Fatalf("Next did not return within %s", limit)
		return nextResult{}
	}
}

// quiet checks that ch gives nothing for d.
func quiet(t *testing.T, ch <-chan nextResult, d time.Duration) {
	t.Helper()
	select {
	case r := <-ch:
		t.Fatalf("Next returned %+v, %v with nothing changed", r.v, r.err)
	case <-time.After(d):
	}
}

func TestWatchChange(t *testing.T) {
	forEach(t, services(t), func(t *testing.T, s *service) {
		s.set(KeyMirrors, sampleMirrors)
		log, rec := newLog()
		o := watchOptions(s, log)
		first, err := Fetch(t.Context(), o)
		if err != nil {
			t.Fatal(err)
		}
		w, err := NewWatcher(o, first)
		if err != nil {
			t.Fatal(err)
		}

		ch := startNext(t.Context(), w)
		quiet(t, ch, 300*time.Millisecond)
		s.set(KeyConfig, sampleConfig)
		r := await(t, ch, 2*time.Second)
		if r.err != nil || string(r.v.Config) != sampleConfig || r.v.Mirrors != sampleMirrors ||
			r.v.Provider != s.provider {
			t.Fatalf("Next: %+v, %v; want both keys", r.v, r.err)
		}

		// Removing the keys is a change too: nothing from metadata.
		ch = startNext(t.Context(), w)
		s.del(KeyMirrors)
		s.del(KeyConfig)
		r = await(t, ch, 2*time.Second)
		if r.err != nil || !r.v.Empty() {
			t.Fatalf("Next: %+v, %v; want no keys", r.v, r.err)
		}
		if n := rec.count(slog.LevelWarn); n != 0 {
			t.Errorf("%d warnings:\n%s", n, rec)
		}
	})
}

// GCE and Yandex are told of a change by the held request itself, well
// before any poll would: the watcher makes few requests.
func TestWatchLongPollHeld(t *testing.T) {
	forEach(t, services(t)[:2], func(t *testing.T, s *service) {
		s.set(KeyMirrors, sampleMirrors)
		o := watchOptions(s, nil)
		o.Interval = time.Hour // a poll would never come
		first, _ := Fetch(t.Context(), o)
		before := s.trouble.Requests()
		w, err := NewWatcher(o, first)
		if err != nil {
			t.Fatal(err)
		}

		ch := startNext(t.Context(), w)
		time.Sleep(200 * time.Millisecond) // the request is held by now
		s.set(KeyMirrors, "docker.io=https://new.example.net")
		start := time.Now()
		r := await(t, ch, time.Second)
		if r.err != nil || r.v.Mirrors != "docker.io=https://new.example.net" {
			t.Fatalf("Next: %+v, %v", r.v, r.err)
		}
		if d := time.Since(start); d > 300*time.Millisecond {
			t.Errorf("the change took %s to arrive; want it at once", d)
		}
		// "NONE" first, then the held request.
		if n := s.trouble.Requests() - before; n != 2 {
			t.Errorf("%d requests, want 2", n)
		}
	})
}

// A long poll outlives any per-request timeout: held for the whole hang,
// answered unchanged, and asked again, without a warning.
func TestWatchLongPollHang(t *testing.T) {
	s := services(t)[0]
	s.set(KeyMirrors, sampleMirrors)
	log, rec := newLog()
	o := watchOptions(s, log)
	o.Timeout = 100 * time.Millisecond // the Fetch bound must not cut a long poll
	o.hang = time.Second
	first, _ := Fetch(t.Context(), o)
	before := s.trouble.Requests()
	w, _ := NewWatcher(o, first)

	ctx, cancel := context.WithTimeout(t.Context(), 1500*time.Millisecond)
	defer cancel()
	_, err := w.Next(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Next: %v; want nothing until ctx ends", err)
	}
	// NONE, then requests held 1 s each: 3 in 1.5 s.
	if n := s.trouble.Requests() - before; n != 3 {
		t.Errorf("%d requests in 1.5 s with timeout_sec=1, want 3", n)
	}
	if rec.count(slog.LevelWarn) != 0 {
		t.Errorf("warnings:\n%s", rec)
	}
}

// A service that ignores wait_for_change does not make the watcher spin.
func TestWatchLongPollIgnored(t *testing.T) {
	requests := 0
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests++
		w.Header().Set("ETag", "same")
		fmt.Fprint(w, `{"instance": {"attributes": {}}}`)
	})
	url, _ := serve(t, h, nil)
	w, err := NewWatcher(Options{Provider: GCE, Endpoint: url, backoff: 100 * time.Millisecond},
		Values{})
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
	defer cancel()
	if _, err := w.Next(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Next: %v", err)
	}
	if requests > 8 {
		t.Errorf("%d requests in 500 ms; want about 5", requests)
	}
}

// An unreachable service is logged once, retried with backoff, and its
// failures are no change; when it is back, a change comes through.
func TestWatchUnreachable(t *testing.T) {
	forEach(t, services(t), func(t *testing.T, s *service) {
		s.set(KeyMirrors, sampleMirrors)
		log, rec := newLog()
		o := watchOptions(s, log)
		o.Timeout = 100 * time.Millisecond
		o.hang = 500 * time.Millisecond // caps the long pollers' backoff
		first, _ := Fetch(t.Context(), o)
		w, _ := NewWatcher(o, first)

		s.trouble.SetDown(true)
		ch := startNext(t.Context(), w)
		quiet(t, ch, 500*time.Millisecond)
		if rec.count(slog.LevelWarn) != 1 || rec.count(slog.LevelDebug) < 2 {
			t.Errorf("want one warning, then debug lines:\n%s", rec)
		}

		s.set(KeyMirrors, "docker.io=https://back.example.net")
		s.trouble.SetDown(false)
		r := await(t, ch, 3*time.Second)
		if r.err != nil || r.v.Mirrors != "docker.io=https://back.example.net" {
			t.Fatalf("Next: %+v, %v", r.v, r.err)
		}
		if !strings.Contains(rec.String(), "metadata reachable again") {
			t.Errorf("no line saying the service is back:\n%s", rec)
		}
	})
}

// A watcher keeps renewing IMDSv2 tokens the service expired.
func TestWatchAWSTokenExpiry(t *testing.T) {
	e := emulator.NewEC2()
	url, _ := serve(t, e, nil)
	e.SetTag(KeyMirrors, sampleMirrors)
	log, rec := newLog()
	o := Options{Provider: AWS, Endpoint: url, Interval: 50 * time.Millisecond, Log: log}
	first, _ := Fetch(t.Context(), o)
	w, _ := NewWatcher(o, first)

	ch := startNext(t.Context(), w)
	quiet(t, ch, 200*time.Millisecond)
	e.ExpireTokens()
	quiet(t, ch, 200*time.Millisecond)
	e.SetTag(KeyMirrors, "docker.io=https://new.example.net")
	r := await(t, ch, 2*time.Second)
	if r.err != nil || r.v.Mirrors != "docker.io=https://new.example.net" {
		t.Fatalf("Next: %+v, %v", r.v, r.err)
	}
	// One for Fetch, one for the watcher, one after the expiry.
	if n := e.TokensIssued(); n != 3 {
		t.Errorf("%d tokens issued, want 3", n)
	}
	if rec.count(slog.LevelWarn) != 0 {
		t.Errorf("warnings:\n%s", rec)
	}
}

func TestWatchCloudInit(t *testing.T) {
	root := t.TempDir()
	write := func(mirrors string) {
		doc := `{"v1": {"cloud_name": "nocloud"}, "ds": {"meta_data": {"mirrord-mirrors": "` +
			mirrors + `"}}}`
		path := filepath.Join(root, instanceDataPath)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(sampleMirrors)
	o := Options{Root: root, Interval: 50 * time.Millisecond}
	first, err := Fetch(t.Context(), o)
	if err != nil || first.Provider != CloudInit {
		t.Fatalf("Fetch: %+v, %v", first, err)
	}
	w, _ := NewWatcher(o, first)

	ch := startNext(t.Context(), w)
	quiet(t, ch, 200*time.Millisecond)
	write("docker.io=https://new.example.net")
	if r := await(t, ch, time.Second); r.v.Mirrors != "docker.io=https://new.example.net" {
		t.Errorf("Next: %+v, %v", r.v, r.err)
	}
}

// The watcher follows the provider Fetch named, even next to ErrNoMetadata.
func TestNewWatcherProvider(t *testing.T) {
	if _, err := NewWatcher(Options{Provider: "none"}, Values{}); !errors.Is(err, ErrNoMetadata) {
		t.Errorf("provider none: %v, want ErrNoMetadata", err)
	}
	if _, err := NewWatcher(Options{Root: t.TempDir()}, Values{}); !errors.Is(err, ErrNoMetadata) {
		t.Errorf("nothing detected: %v, want ErrNoMetadata", err)
	}

	w, err := NewWatcher(Options{Root: t.TempDir()}, Values{Provider: Azure})
	if err != nil {
		t.Fatal(err)
	}
	if got := w.(*watcher).name; got != Azure {
		t.Errorf("watching %q, want azure as first named", got)
	}
}

func TestJitter(t *testing.T) {
	for range 1000 {
		if d := jitter(time.Minute); d < 54*time.Second || d > 66*time.Second {
			t.Fatalf("jitter(1m) = %s, want within ±10%%", d)
		}
	}
}
