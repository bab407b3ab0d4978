package systemd

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestNewNoSystemd(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, root string)
	}{
		{name: "no_socket", setup: func(*testing.T, string) {}},
		{
			// A socket file nobody listens on, as a dead dbus-daemon leaves.
			name: "stale_socket",
			setup: func(t *testing.T, root string) {
				for _, s := range []string{busSocket, privateSocket} {
					path := filepath.Join(root, s)
					if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
						t.Fatal(err)
					}
					l, err := net.Listen("unix", path)
					if err != nil {
						t.Fatal(err)
					}
					l.(*net.UnixListener).SetUnlinkOnClose(false)
					l.Close()
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			tt.setup(t, root)

			m, err := New(t.Context(), Options{Root: root})
			if err == nil {
				m.Close()
				t.Fatal("New succeeded with no systemd under the root")
			}
			if !errors.Is(err, ErrNoSystemd) {
				t.Fatalf("got %v, want ErrNoSystemd", err)
			}
			want := "no systemd reachable at " + filepath.Join(root, busSocket)
			if !strings.HasPrefix(err.Error(), want) {
				t.Errorf("error %q does not start with %q", err, want)
			}
		})
	}
}
