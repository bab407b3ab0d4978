package systemd

import (
	"bytes"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// serveDockerd serves a fake dockerd API on <root>/run/docker.sock whose
// GET /info reports the mirrors mirrors returns at each call.
func serveDockerd(t *testing.T, root string, mirrors func() []string) {
	t.Helper()
	sock := filepath.Join(root, dockerSocket)
	if err := os.MkdirAll(filepath.Dir(sock), 0o755); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter,
		r *http.Request) {
		if r.Method != http.MethodGet || r.URL.Path != "/info" {
			http.Error(w, `{"message":"page not found"}`, http.StatusNotFound)
			return
		}
		var info dockerInfo
		info.ServerVersion = "20.10.24+dfsg1"
		info.RegistryConfig.Mirrors = mirrors()
		_ = json.NewEncoder(w).Encode(info)
	}))
	ts.Listener = l
	ts.Start()
	t.Cleanup(ts.Close)
}

func TestCheckDockerd(t *testing.T) {
	tests := []struct {
		name       string
		daemonJSON string // "" means no file
		reports    []string
		wantErr    string
	}{
		{
			name:       "same_mirrors",
			daemonJSON: `{"registry-mirrors": ["https://mirror.gcr.io", "http://10.0.0.5:5000"]}`,
			reports:    []string{"https://mirror.gcr.io/", "http://10.0.0.5:5000/"},
		},
		{
			name:       "empty_list",
			daemonJSON: `{"registry-mirrors": []}`,
		},
		{name: "no_file"},
		{
			name:       "old_mirrors_kept",
			daemonJSON: `{"registry-mirrors": ["https://new.example"]}`,
			reports:    []string{"https://old.example/"},
			wantErr: "dockerd did not take daemon.json: it reports mirrors " +
				"[https://old.example/], daemon.json has [https://new.example] " +
				"(journalctl -u docker.service says why)",
		},
		{
			name:       "order_matters",
			daemonJSON: `{"registry-mirrors": ["https://a.example", "https://b.example"]}`,
			reports:    []string{"https://b.example/", "https://a.example/"},
			wantErr:    "dockerd did not take daemon.json",
		},
		{
			name:       "broken_file",
			daemonJSON: `{"registry-mirrors": [`,
			wantErr:    "read /etc/docker/daemon.json",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			if tt.daemonJSON != "" {
				writeFile(t, filepath.Join(root, "etc/docker/daemon.json"), tt.daemonJSON)
			}
			serveDockerd(t, root, func() []string { return tt.reports })
			var logs bytes.Buffer

			err := checkDockerd(t.Context(), root, 300*time.Millisecond, textLogger(&logs))
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if !strings.Contains(logs.String(), "version=20.10.24+dfsg1") {
					t.Errorf("log %q lacks dockerd's version", logs.String())
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error %v, want one with %q", err, tt.wantErr)
			}
		})
	}
}

// dockerd handles SIGHUP after the reload job is done: the proof waits.
func TestCheckDockerdReloadLate(t *testing.T) {
	root := t.TempDir()
	writeFile(t, filepath.Join(root, "etc/docker/daemon.json"),
		`{"registry-mirrors": ["https://mirror.gcr.io"]}`)
	var calls atomic.Int32
	serveDockerd(t, root, func() []string {
		if calls.Add(1) < 4 {
			return nil
		}
		return []string{"https://mirror.gcr.io/"}
	})

	if err := checkDockerd(t.Context(), root, 5*time.Second, discard()); err != nil {
		t.Fatal(err)
	}
}

func TestCheckDockerdNoSocket(t *testing.T) {
	root := t.TempDir()
	err := checkDockerd(t.Context(), root, 200*time.Millisecond, discard())
	want := "dockerd API at " + filepath.Join(root, dockerSocket)
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("error %v, want one with %q", err, want)
	}
}
