package metadatatest

import (
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/mirrord/mirrord/internal/metadata"
)

// networkProviders are the providers that reach for the network.
var networkProviders = []string{
	metadata.GCE, metadata.Yandex, metadata.AWS, metadata.Azure, metadata.OpenStack,
}

// fast is how quickly a service that is not there must end the step:
// far below the bound.
const fast = 200 * time.Millisecond

// fetchIn runs Fetch for provider in n with the bound and returns what it
// gave.
func fetchIn(t *testing.T, n *netns, provider string, bound time.Duration, env ...string) result {
	t.Helper()
	env = append(env, childProvider+"="+provider, childTimeout+"="+bound.String())
	return n.run(t, "fetch", env...)
}

// checkGaveUp checks that r is ErrNoMetadata, warned about or not.
func checkGaveUp(t *testing.T, r result, warned bool) {
	t.Helper()
	if !r.NoMetadata {
		t.Errorf("error %q, want ErrNoMetadata", r.Error)
	}
	if r.Warned != warned {
		t.Errorf("warned %v, want %v (error %q)", r.Warned, warned, r.Error)
	}
}

// Nothing to reach the metadata address by: each provider gives up at
// once, without a warning.
func TestNotThere(t *testing.T) {
	requireRoot(t)

	tests := []struct {
		name  string
		route []string // added in a namespace with loopback only
		errno string   // in the error
	}{
		{"no_route", nil, "network is unreachable"},
		{"unreachable_route", []string{"unreachable", metadataIP + "/32"}, "no route to host"},
		{"blackhole_route", []string{"blackhole", metadataIP + "/32"}, "invalid argument"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := newNetns(t)
			if tt.route != nil {
				n.ip(t, append([]string{"route", "add"}, tt.route...)...)
			}
			for _, p := range networkProviders {
				r := fetchIn(t, n, p, 2*time.Second)
				t.Logf("%s: %s: %v", tt.name, p, r.Elapsed)
				checkGaveUp(t, r, false)
				if r.Elapsed > fast || !strings.Contains(r.Error, tt.errno) {
					t.Errorf("%s: gave up after %v with %q; want %q at once",
						p, r.Elapsed, r.Error, tt.errno)
				}
			}
		})
	}
}

// A peer that owns the metadata address with nothing listening refuses at
// once.
func TestRefused(t *testing.T) {
	requireRoot(t)
	client, peer := pair(t)
	peer.ip(t, "addr", "add", metadataIP+"/32", "dev", "veth0")

	for _, p := range networkProviders {
		r := fetchIn(t, client, p, 2*time.Second)
		t.Logf("refused: %s: %v", p, r.Elapsed)
		checkGaveUp(t, r, false)
		if r.Elapsed > fast || !strings.Contains(r.Error, "connection refused") {
			t.Errorf("%s: gave up after %v with %q; want refused at once", p, r.Elapsed, r.Error)
		}
	}
}

// A route into a black hole is abandoned at the bound, with a warning,
// where a bare connect would wait for minutes.
func TestBlackHole(t *testing.T) {
	requireRoot(t)
	client, _ := pair(t)
	const bound = 2 * time.Second

	// The set-up really is a black hole: a bare connect gets no answer.
	d := client.run(t, "dial", childAddr+"="+metadataAddr, childTimeout+"=3s")
	if !strings.Contains(d.Error, "i/o timeout") || d.Elapsed < 3*time.Second {
		t.Fatalf("bare connect: %q after %v; want a timeout at 3s", d.Error, d.Elapsed)
	}

	// All at once: each waits out the bound, and t.Parallel would run
	// them GOMAXPROCS at a time.
	var wg sync.WaitGroup
	defer wg.Wait()
	for _, p := range networkProviders {
		wg.Go(func() {
			t.Run(p, func(t *testing.T) {
				r := fetchIn(t, client, p, bound)
				t.Logf("black hole: %s: %v", p, r.Elapsed)
				checkGaveUp(t, r, true)
				// Without the bound a black hole holds a dial for about 130 s.
				if r.Elapsed < bound || r.Elapsed > bound+3*time.Second {
					t.Errorf("gave up after %v; want the bound, %v", r.Elapsed, bound)
				}
				if !strings.Contains(r.Error, "gave up after 2s") {
					t.Errorf("error %q does not name the bound", r.Error)
				}
			})
		})
	}
}

// With a service on the real address, each provider reads it with the
// default endpoint, and HTTP_PROXY (pointing at a port of the peer where
// nothing listens) does not get in the way.
func TestDefaultAddress(t *testing.T) {
	requireRoot(t)
	proxy := "http://" + peerIP + ":3128"

	for _, p := range networkProviders {
		t.Run(p, func(t *testing.T) {
			client, peer := pair(t)
			peer.ip(t, "addr", "add", metadataIP+"/32", "dev", "veth0")
			peer.serve(t, p)

			r := fetchIn(t, client, p, 2*time.Second, "HTTP_PROXY="+proxy, "http_proxy="+proxy)
			t.Logf("default address: %s: %v", p, r.Elapsed)
			if r.Error != "" {
				t.Fatalf("Fetch: %s", r.Error)
			}
			want := metadata.Values{
				Provider: p,
				Mirrors:  sampleMirrors,
				Config:   []byte(sampleConfig),
			}
			got := r.Values
			got.Source = nil
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("values (-want +got):\n%s", diff)
			}
		})
	}
}
