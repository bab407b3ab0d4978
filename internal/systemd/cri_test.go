package systemd

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// serveH2C serves h on a new unix socket at sock with HTTP/2 without TLS,
// as containerd serves gRPC, until the test ends.
func serveH2C(t *testing.T, sock string, h http.HandlerFunc) {
	t.Helper()
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	var protos http.Protocols
	protos.SetUnencryptedHTTP2(true)
	srv := &http.Server{Handler: h, Protocols: &protos}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
}

// versionResponse encodes a CRI VersionResponse.
func versionResponse(name, version string) []byte {
	var msg []byte
	for i, s := range []string{"0.1.0", name, version, "v1"} {
		msg = append(msg, byte((i+1)<<3|2), byte(len(s)))
		msg = append(msg, s...)
	}
	frame := make([]byte, 5, 5+len(msg))
	binary.BigEndian.PutUint32(frame[1:], uint32(len(msg)))
	return append(frame, msg...)
}

// criServer answers the v1 Version call with code; code 0 sends a
// VersionResponse with the status in the trailers, any other code is a
// trailers-only answer, as grpc-go sends for an unknown service.
func criServer(t *testing.T, codes map[string]string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor != 2 || r.Header.Get("Content-Type") != "application/grpc" ||
			r.Header.Get("Te") != "trailers" {
			t.Errorf("request %s %s %v: want HTTP/2 with gRPC headers", r.Proto, r.URL, r.Header)
		}
		if body, _ := io.ReadAll(r.Body); !bytes.Equal(body, make([]byte, 5)) {
			t.Errorf("request body %x, want an empty framed message", body)
		}

		code, ok := codes[r.URL.Path]
		if !ok {
			code = "12"
		}
		w.Header().Set("Content-Type", "application/grpc")
		if code != "0" {
			w.Header().Set("Grpc-Status", code)
			w.Header().Set("Grpc-Message", "unknown service "+
				strings.Trim(filepath.Dir(r.URL.Path), "/"))
			w.WriteHeader(http.StatusOK)
			return
		}
		w.Header().Set("Trailer", "Grpc-Status")
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(versionResponse("containerd", "v2.2.9"))
		w.Header().Set("Grpc-Status", "0")
	}
}

// criRoot makes a root whose config.toml puts containerd's socket at
// /c.sock (short: unix socket paths are limited to 108 bytes).
func criRoot(t *testing.T, extra string) (root, sock string) {
	t.Helper()
	root = t.TempDir()
	writeFile(t, filepath.Join(root, "etc/containerd/config.toml"),
		"version = 2\n"+extra+"\n[grpc]\n  address = \"/c.sock\"\n")
	return root, filepath.Join(root, "c.sock")
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestCheckContainerd(t *testing.T) {
	tests := []struct {
		name    string
		config  string
		codes   map[string]string
		wantErr string
		wantLog string
	}{
		{
			name:    "cri_up",
			codes:   map[string]string{criVersionV1: "0"},
			wantLog: "runtime=containerd version=v2.2.9",
		},
		{
			name:    "cri_not_loaded",
			codes:   map[string]string{},
			wantErr: "containerd is up but its CRI plugin did not load (check `ctr plugins ls`",
		},
		{
			name:    "cri_disabled",
			config:  `disabled_plugins = ["io.containerd.grpc.v1.cri"]`,
			codes:   map[string]string{},
			wantLog: "config.toml disables its CRI plugin",
		},
		{
			name:    "v1alpha2_only",
			codes:   map[string]string{criVersionV1alpha2: "0"},
			wantLog: "containerd's CRI answers",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root, sock := criRoot(t, tt.config)
			serveH2C(t, sock, criServer(t, tt.codes))
			var logs bytes.Buffer

			err := checkContainerd(t.Context(), root, 5*time.Second, textLogger(&logs))
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
			} else if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error %v, want one with %q", err, tt.wantErr)
			}
			if !strings.Contains(logs.String(), tt.wantLog) {
				t.Errorf("log %q lacks %q", logs.String(), tt.wantLog)
			}
		})
	}
}

func TestCheckContainerdNotLoadedIsFinal(t *testing.T) {
	root, sock := criRoot(t, "")
	serveH2C(t, sock, criServer(t, map[string]string{}))

	start := time.Now()
	err := checkContainerd(t.Context(), root, 10*time.Second, discard())
	if !errors.Is(err, errNoCRI) {
		t.Fatalf("got %v, want errNoCRI", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("took %s: a missing CRI plugin is final, no need to poll", d)
	}
}

func TestCheckContainerdSocketLate(t *testing.T) {
	root, sock := criRoot(t, "")
	time.AfterFunc(300*time.Millisecond, func() {
		serveH2C(t, sock, criServer(t, map[string]string{criVersionV1: "0"}))
	})

	if err := checkContainerd(t.Context(), root, 5*time.Second, discard()); err != nil {
		t.Fatal(err)
	}
}

func TestCheckContainerdRefused(t *testing.T) {
	root, sock := criRoot(t, "")
	// A socket file nobody listens on: what a crashed containerd leaves.
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()

	err = checkContainerd(t.Context(), root, 300*time.Millisecond, discard())
	if err == nil || !strings.Contains(err.Error(), "containerd at "+sock) ||
		!strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("got %v, want connection refused naming the socket", err)
	}
}

func TestCheckContainerdUnavailableThenUp(t *testing.T) {
	root, sock := criRoot(t, "")
	var calls atomic.Int32
	ok := criServer(t, map[string]string{criVersionV1: "0"})
	serveH2C(t, sock, func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) < 3 {
			_, _ = io.ReadAll(r.Body)
			w.Header().Set("Grpc-Status", "14")
			w.WriteHeader(http.StatusOK)
			return
		}
		ok(w, r)
	})

	if err := checkContainerd(t.Context(), root, 5*time.Second, discard()); err != nil {
		t.Fatal(err)
	}
	if n := calls.Load(); n != 3 {
		t.Errorf("%d calls, want 3", n)
	}
}

func TestContainerdAddress(t *testing.T) {
	tests := []struct {
		name       string
		config     string // "" means no file
		wantAddr   string
		wantCRIOff bool
		wantErr    string
	}{
		{name: "no_file", wantAddr: containerdSocket},
		{name: "default", config: "version = 2\n", wantAddr: containerdSocket},
		{
			name:     "grpc_address",
			config:   "version = 3\n[grpc]\n  address = \"/run/k3s/containerd.sock\"\n",
			wantAddr: "/run/k3s/containerd.sock",
		},
		{
			name: "version4_plugin",
			config: "version = 4\n[plugins.\"io.containerd.server.v1.grpc\"]\n" +
				"  address = \"/run/c4.sock\"\n",
			wantAddr: "/run/c4.sock",
		},
		{
			name:       "cri_disabled_short",
			config:     "disabled_plugins = [\"cri\"]\n",
			wantAddr:   containerdSocket,
			wantCRIOff: true,
		},
		{
			name:     "other_plugin_disabled",
			config:   "version = 2\ndisabled_plugins = [\"io.containerd.internal.v1.restart\"]\n",
			wantAddr: containerdSocket,
		},
		{name: "broken", config: "version = \n", wantErr: "read /etc/containerd/config.toml"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			if tt.config != "" {
				writeFile(t, filepath.Join(root, "etc/containerd/config.toml"), tt.config)
			}

			addr, off, err := containerdAddress(root)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want one with %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if addr != tt.wantAddr || off != tt.wantCRIOff {
				t.Errorf("got (%q, %v), want (%q, %v)", addr, off, tt.wantAddr, tt.wantCRIOff)
			}
		})
	}
}

func TestProtoStrings(t *testing.T) {
	msg := grpcMessage(versionResponse("containerd", "1.6.20~ds1"))
	// A varint field and a 32-bit field in between must be skipped.
	msg = append([]byte{5 << 3, 0x96, 0x01, 6<<3 | 5, 1, 2, 3, 4}, msg...)

	got := protoStrings(msg)
	want := map[int]string{1: "0.1.0", 2: "containerd", 3: "1.6.20~ds1", 4: "v1"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("protoStrings (-want +got):\n%s", diff)
	}
	if got := protoStrings([]byte{2<<3 | 2, 50, 'x'}); len(got) != 0 {
		t.Errorf("truncated message gave %v, want nothing", got)
	}
}

func textLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{
		Level: slog.LevelDebug,
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		},
	}))
}

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }
