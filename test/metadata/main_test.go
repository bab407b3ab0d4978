package metadatatest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/mirrord/mirrord/internal/metadata"
	"github.com/mirrord/mirrord/internal/metadata/emulator"
)

// enabled is true when the environment asks for the end-to-end tests.
var enabled = os.Getenv("MIRRORD_E2E") == "1"

// childEnv selects what the test binary does when run as a child: "fetch",
// "dial" or "serve". The child's parameters come in childProvider,
// childTimeout and childAddr.
const (
	childEnv      = "MIRRORD_METADATA_CHILD"
	childProvider = "MIRRORD_METADATA_CHILD_PROVIDER"
	childTimeout  = "MIRRORD_METADATA_CHILD_TIMEOUT"
	childAddr     = "MIRRORD_METADATA_CHILD_ADDR"
)

// The values the serving child holds.
const (
	sampleMirrors = "docker.io=https://mirror.example.net"
	sampleConfig  = "[registries.\"quay.io\"]\nmirrors = [\"https://quay.example.net\"]\n"
)

func TestMain(m *testing.M) {
	if mode := os.Getenv(childEnv); mode != "" {
		os.Exit(child(mode))
	}
	os.Exit(m.Run())
}

// result is what a "fetch" or "dial" child prints, as JSON.
type result struct {
	Elapsed    time.Duration
	Error      string
	NoMetadata bool // the error wraps metadata.ErrNoMetadata
	Warned     bool // Fetch logged at Warn
	Values     metadata.Values
}

// child runs as the test binary's child and returns its exit code.
func child(mode string) int {
	var err error
	switch mode {
	case "fetch":
		err = childFetch()
	case "dial":
		err = childDial()
	case "serve":
		err = childServe()
	default:
		err = fmt.Errorf("unknown child mode %q", mode)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "child %s: %v\n", mode, err)
		return 1
	}
	return 0
}

// childFetch runs metadata.Fetch with the default endpoint and prints its
// result.
func childFetch() error {
	bound, err := time.ParseDuration(os.Getenv(childTimeout))
	if err != nil {
		return err
	}
	root, err := os.MkdirTemp("", "mirrord-metadata-root-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(root)

	var logs bytes.Buffer
	o := metadata.Options{
		Provider: os.Getenv(childProvider),
		Timeout:  bound,
		Root:     root,
		Log:      slog.New(slog.NewTextHandler(&logs, nil)),
	}
	start := time.Now()
	v, err := metadata.Fetch(context.Background(), o)
	r := result{
		Elapsed: time.Since(start),
		Warned:  strings.Contains(logs.String(), "level=WARN"),
		Values:  v,
	}
	if err != nil {
		r.Error = err.Error()
		r.NoMetadata = errors.Is(err, metadata.ErrNoMetadata)
	}
	return json.NewEncoder(os.Stdout).Encode(r)
}

// childDial connects to childAddr with the bound as timeout, with no
// client code in the way, and prints the result.
func childDial() error {
	bound, err := time.ParseDuration(os.Getenv(childTimeout))
	if err != nil {
		return err
	}
	start := time.Now()
	conn, err := net.DialTimeout("tcp", os.Getenv(childAddr), bound)
	r := result{Elapsed: time.Since(start)}
	if err != nil {
		r.Error = err.Error()
	} else {
		conn.Close()
	}
	return json.NewEncoder(os.Stdout).Encode(r)
}

// childServe serves the emulator of childProvider on childAddr, holding
// both keys, says "ready" on stdout once it listens, and serves until it
// is killed.
func childServe() error {
	var h http.Handler
	switch p := os.Getenv(childProvider); p {
	case metadata.GCE, metadata.Yandex:
		g := emulator.NewGCE()
		if p == metadata.Yandex {
			g = emulator.NewYandex()
		}
		g.SetInstance(metadata.KeyMirrors, sampleMirrors)
		g.SetInstance(metadata.KeyConfig, sampleConfig)
		h = g
	case metadata.AWS:
		e := emulator.NewEC2()
		e.SetTag(metadata.KeyMirrors, sampleMirrors)
		e.SetTag(metadata.KeyConfig, sampleConfig)
		h = e
	case metadata.Azure:
		a := emulator.NewAzure()
		a.SetTag(metadata.KeyMirrors, sampleMirrors)
		a.SetTag(metadata.KeyConfig, sampleConfig)
		h = a
	case metadata.OpenStack:
		o := emulator.NewOpenStack()
		o.SetMeta(metadata.KeyMirrors, sampleMirrors)
		o.SetMeta(metadata.KeyConfig, sampleConfig)
		h = o
	default:
		return fmt.Errorf("no emulator for provider %q", p)
	}

	l, err := net.Listen("tcp", os.Getenv(childAddr))
	if err != nil {
		return err
	}
	fmt.Println("ready")
	return http.Serve(l, h)
}
