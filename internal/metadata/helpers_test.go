package metadata

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mirrord/mirrord/internal/metadata/emulator"
)

// Sample values: valid-looking, though Fetch does not care.
const (
	sampleMirrors = "docker.io=https://mirror.gcr.io;quay.io=https://quay-mirror.example.net"
	sampleConfig  = "[registries.\"docker.io\"]\nmirrors = [\"https://mirror.example.net\"]\n"
)

// logRecorder is a slog.Handler that keeps every record, for tests to
// count levels and search the text.
type logRecorder struct {
	mu      sync.Mutex
	records []slog.Record
}

func (h *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (h *logRecorder) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *logRecorder) WithGroup(string) slog.Handler            { return h }

func (h *logRecorder) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.records = append(h.records, r.Clone())
	return nil
}

// count returns how many records have level l.
func (h *logRecorder) count(l slog.Level) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, r := range h.records {
		if r.Level == l {
			n++
		}
	}
	return n
}

// String renders every record, one a line, for failure messages and
// searches.
func (h *logRecorder) String() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var b strings.Builder
	for _, r := range h.records {
		fmt.Fprintf(&b, "%s %s", r.Level, r.Message)
		r.Attrs(func(a slog.Attr) bool {
			fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
			return true
		})
		b.WriteByte('\n')
	}
	return b.String()
}

// newLog returns a logger and what it records.
func newLog() (*slog.Logger, *logRecorder) {
	rec := &logRecorder{}
	return slog.New(rec), rec
}

// trouble is the injected trouble every emulator takes.
type trouble interface {
	SetDelay(time.Duration)
	SetDown(bool)
	FailNext(n, status int)
	Requests() int
}

// service is an emulator of one provider, served on loopback.
type service struct {
	provider string
	url      string
	set      func(key, value string)
	del      func(key string)
	trouble  trouble
	close    func() // the server; for a "service down" test
}

// serve starts h on loopback and stops it when the test ends; stop runs
// first, to release held requests.
func serve(t *testing.T, h http.Handler, stop func()) (string, func()) {
	t.Helper()
	srv := httptest.NewServer(h)
	var once sync.Once
	closeAll := func() {
		once.Do(func() {
			if stop != nil {
				stop()
			}
			srv.Close()
		})
	}
	t.Cleanup(closeAll)
	return srv.URL, closeAll
}

// services returns an emulator for each network provider, each with no
// keys set.
func services(t *testing.T) []*service {
	t.Helper()
	gce := emulator.NewGCE()
	yandex := emulator.NewYandex()
	ec2 := emulator.NewEC2()
	azure := emulator.NewAzure()
	openstack := emulator.NewOpenStack()

	var out []*service
	add := func(name string, h http.Handler, stop func(), set func(k, v string),
		del func(k string), tr trouble) {
		url, closeFn := serve(t, h, stop)
		out = append(out, &service{name, url, set, del, tr, closeFn})
	}
	add(GCE, gce, gce.Close, gce.SetInstance, gce.DeleteInstance, gce)
	add(Yandex, yandex, yandex.Close, yandex.SetInstance, yandex.DeleteInstance, yandex)
	add(AWS, ec2, nil, ec2.SetTag, ec2.DeleteTag, ec2)
	add(Azure, azure, nil, azure.SetTag, azure.DeleteTag, azure)
	add(OpenStack, openstack, nil, openstack.SetMeta, openstack.DeleteMeta, openstack)
	return out
}

// forEach runs f as a subtest for each service, all at once. The tests it
// runs mostly wait on timers, so it does not count them against
// -test.parallel (GOMAXPROCS by default), which would make a 2-CPU machine
// run five providers' waits two by two.
func forEach(t *testing.T, ss []*service, f func(t *testing.T, s *service)) {
	t.Helper()
	var wg sync.WaitGroup
	for _, s := range ss {
		wg.Go(func() {
			t.Run(s.provider, func(t *testing.T) { f(t, s) })
		})
	}
	wg.Wait()
}

// sourceOf returns the Source each provider gives a key at the instance
// level.
func sourceOf(provider, key string) string {
	switch provider {
	case GCE, Yandex:
		return provider + " instance attribute " + key
	case AWS:
		return "aws instance tag " + key
	case Azure:
		return "azure tag " + key
	case OpenStack:
		return "openstack meta " + key
	}
	panic("no source for " + provider)
}

// writeFile writes content to root/rel, making the directories.
func writeFile(t *testing.T, root, rel, content string) {
	t.Helper()
	path := filepath.Join(root, rel)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// closedURL returns the URL of a loopback port that nothing listens on.
func closedURL(t *testing.T) string {
	t.Helper()
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close()
	return url
}
