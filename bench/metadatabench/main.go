// Command metadatabench measures mirrord's metadata step (package
// internal/metadata) for bench/metadata.sh.
//
// Usage:
//
//	metadatabench                       a no-op Fetch (provider none): the baseline
//	metadatabench fetch -provider P -endpoint URL
//	                                    one Fetch against a service; fails if it gives nothing
//	metadatabench serve -provider P     serves P's emulator on loopback, both keys set;
//	                                    prints its URL, then serves until killed
//	metadatabench inproc [-n RUNS]      times Fetch in this process against each
//	                                    provider's emulator, alternating with a no-op Fetch
//	metadatabench giveup -provider P [-timeout D]
//	                                    one Fetch at the link-local address; prints how
//	                                    long it took to give up, and why
//
// Every Fetch builds its own HTTP transport, so each run connects anew, as
// the first Fetch at boot does.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/mirrord/mirrord/internal/metadata"
	"github.com/mirrord/mirrord/internal/metadata/emulator"
)

// The values every emulator holds.
const (
	sampleMirrors = "docker.io=https://mirror.gcr.io;quay.io=https://quay-mirror.example.net"
	sampleConfig  = "[registries.\"docker.io\"]\nmirrors = [\"https://mirror.example.net\"]\n"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "metadatabench: %v\n", err)
		os.Exit(1)
	}
}

// run dispatches on the subcommand in args.
func run(args []string, out io.Writer) error {
	if len(args) == 0 {
		_, err := metadata.Fetch(context.Background(), metadata.Options{Provider: "none"})
		if !errors.Is(err, metadata.ErrNoMetadata) {
			return fmt.Errorf("no-op fetch: %v", err)
		}
		return nil
	}

	fs := flag.NewFlagSet(args[0], flag.ContinueOnError)
	provider := fs.String("provider", metadata.GCE, "the provider")
	endpoint := fs.String("endpoint", "", "the service's base URL (fetch)")
	timeout := fs.Duration("timeout", metadata.DefaultTimeout, "the bound on Fetch")
	runs := fs.Int("n", 200, "timed runs of each (inproc)")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}

	switch args[0] {
	case "fetch":
		return fetchOnce(*provider, *endpoint, *timeout)
	case "serve":
		return serve(*provider, out)
	case "inproc":
		return inproc(*runs, out)
	case "giveup":
		return giveUp(*provider, *timeout, out)
	}
	return fmt.Errorf("unknown subcommand %q; want fetch, serve, inproc or giveup", args[0])
}

// fetchOnce reads both keys from endpoint and fails unless both came.
func fetchOnce(provider, endpoint string, timeout time.Duration) error {
	v, err := metadata.Fetch(context.Background(), metadata.Options{
		Provider: provider, Endpoint: endpoint, Timeout: timeout,
	})
	if err != nil {
		return err
	}
	if v.Mirrors != sampleMirrors || string(v.Config) != sampleConfig {
		return fmt.Errorf("%s: unexpected values %+v", provider, v)
	}
	return nil
}

// emulate returns provider's emulator holding both keys, and a function
// that releases its held requests.
func emulate(provider string) (http.Handler, func(), error) {
	switch provider {
	case metadata.GCE, metadata.Yandex:
		g := emulator.NewGCE()
		if provider == metadata.Yandex {
			g = emulator.NewYandex()
		}
		g.SetInstance(metadata.KeyMirrors, sampleMirrors)
		g.SetInstance(metadata.KeyConfig, sampleConfig)
		return g, g.Close, nil
	case metadata.AWS:
		e := emulator.NewEC2()
		e.SetTag(metadata.KeyMirrors, sampleMirrors)
		e.SetTag(metadata.KeyConfig, sampleConfig)
		return e, func() {}, nil
	case metadata.Azure:
		a := emulator.NewAzure()
		a.SetTag(metadata.KeyMirrors, sampleMirrors)
		a.SetTag(metadata.KeyConfig, sampleConfig)
		return a, func() {}, nil
	case metadata.OpenStack:
		o := emulator.NewOpenStack()
		o.SetMeta(metadata.KeyMirrors, sampleMirrors)
		o.SetMeta(metadata.KeyConfig, sampleConfig)
		return o, func() {}, nil
	}
	return nil, nil, fmt.Errorf("no emulator for provider %q", provider)
}

// listen serves h on a loopback port and returns its URL.
func listen(h http.Handler) (string, *http.Server, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(l) }()
	return "http://" + l.Addr().String(), srv, nil
}

// serve serves provider's emulator until the process is killed.
func serve(provider string, out io.Writer) error {
	h, _, err := emulate(provider)
	if err != nil {
		return err
	}
	url, _, err := listen(h)
	if err != nil {
		return err
	}
	fmt.Fprintln(out, url)
	select {}
}

// inproc times Fetch against each provider's emulator in this process,
// alternating with a no-op Fetch, and prints the medians and 90th
// percentiles.
func inproc(runs int, out io.Writer) error {
	root, err := os.MkdirTemp("", "metadatabench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(root)
	if err := writeInstanceData(root); err != nil {
		return err
	}

	type target struct{ provider, endpoint string }
	var targets []target
	for _, p := range []string{
		metadata.GCE, metadata.Yandex, metadata.AWS, metadata.Azure, metadata.OpenStack,
	} {
		h, release, err := emulate(p)
		if err != nil {
			return err
		}
		url, srv, err := listen(h)
		if err != nil {
			return err
		}
		defer srv.Close()
		defer release()
		targets = append(targets, target{p, url})
	}
	targets = append(targets, target{metadata.CloudInit, ""})

	fmt.Fprintf(out, "runs: %d of each, alternating with a no-op Fetch (provider none)\n", runs)
	fmt.Fprintf(out, "%-10s  %9s  %9s  %9s  %9s  %s\n",
		"provider", "median", "p90", "no-op med", "cost", "requests")
	for _, t := range targets {
		o := metadata.Options{Provider: t.provider, Endpoint: t.endpoint, Root: root}
		noop := metadata.Options{Provider: "none", Root: root}
		var tf, tn []time.Duration
		for i := range runs + 5 {
			df, err := timeFetch(o)
			if err != nil {
				return fmt.Errorf("%s: %w", t.provider, err)
			}
			dn, _ := timeFetch(noop)
			if i >= 5 { // warm-up
				tf, tn = append(tf, df), append(tn, dn)
			}
		}
		mf, pf, mn := percentile(tf, 50), percentile(tf, 90), percentile(tn, 50)
		fmt.Fprintf(out, "%-10s  %9s  %9s  %9s  %9s  %s\n", t.provider, ms(mf), ms(pf), ms(mn),
			ms(mf-mn), requestsOf(t.provider))
	}
	return nil
}

// requestsOf says what one Fetch of provider asks, with both spec keys set
// on the instance: one GET per key, mirrord-credentials included.
func requestsOf(provider string) string {
	switch provider {
	case metadata.GCE, metadata.Yandex:
		return "3 GET"
	case metadata.AWS:
		return "PUT token + 3 GET"
	case metadata.Azure, metadata.OpenStack:
		return "1 GET"
	}
	return "a file"
}

// timeFetch runs one Fetch and returns its wall time.
func timeFetch(o metadata.Options) (time.Duration, error) {
	start := time.Now()
	_, err := metadata.Fetch(context.Background(), o)
	d := time.Since(start)
	if o.Provider == "none" {
		return d, nil
	}
	return d, err
}

// writeInstanceData writes a cloud-init instance-data.json holding both
// keys as a NoCloud meta-data would, of a realistic size.
func writeInstanceData(root string) error {
	path := filepath.Join(root, "run", "cloud-init", "instance-data.json")
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	doc := fmt.Sprintf(`{"v1": {"cloud_name": "nocloud", "platform": "nocloud"},
"ds": {"meta_data": {"instance-id": "iid-bench", "mirrord-mirrors": %q, "mirrord-config": %q}},
"merged_cfg": {"padding": %q}}`, sampleMirrors, sampleConfig, strings.Repeat("x", 8<<10))
	return os.WriteFile(path, []byte(doc), 0o644)
}

// giveUp runs one Fetch with the default endpoint and prints how it ended.
func giveUp(provider string, timeout time.Duration, out io.Writer) error {
	root, err := os.MkdirTemp("", "metadatabench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(root)

	start := time.Now()
	_, err = metadata.Fetch(context.Background(), metadata.Options{
		Provider: provider, Timeout: timeout, Root: root,
	})
	d := time.Since(start)
	if err == nil {
		return fmt.Errorf("%s: Fetch found a service; nothing to give up on", provider)
	}
	fmt.Fprintf(out, "%-10s  gave up after %9s  ErrNoMetadata=%v  %v\n",
		provider, ms(d), errors.Is(err, metadata.ErrNoMetadata), err)
	return nil
}

// percentile returns the p-th percentile of ds by nearest rank.
func percentile(ds []time.Duration, p int) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	rank := (p*len(s) + 99) / 100
	return s[max(rank, 1)-1]
}

// ms formats d in milliseconds.
func ms(d time.Duration) string {
	return fmt.Sprintf("%.3f ms", float64(d)/float64(time.Millisecond))
}
