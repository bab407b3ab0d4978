package systemd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/mirrord/mirrord/internal/docker"
)

// dockerSocket is dockerd's default API socket on the node.
const dockerSocket = docker.Socket

// dockerInfo is the part of dockerd's GET /info answer the proof reads.
type dockerInfo struct {
	ServerVersion  string
	RegistryConfig struct {
		Mirrors []string
	}
}

// checkDockerd proves that dockerd runs with the registry-mirrors of
// daemon.json, asking its API under root until it does or timeout passes:
// dockerd handles SIGHUP after the reload job is done, and a file it
// rejects leaves the old mirrors with nothing but a log line (FACTS.md
// §3.1).
func checkDockerd(ctx context.Context, root string, timeout time.Duration,
	log *slog.Logger) error {
	want, err := daemonJSONMirrors(root)
	if err != nil {
		return err
	}

	sock := filepath.Join(root, dockerSocket)
	client := unixClient(sock)
	defer client.CloseIdleConnections()

	var info dockerInfo
	err = poll(ctx, timeout, func(ctx context.Context) (bool, error) {
		if info, err = getDockerInfo(ctx, client); err != nil {
			return true, fmt.Errorf("dockerd API at %s: %w", sock, err)
		}
		if !sameMirrors(want, info.RegistryConfig.Mirrors) {
			return true, fmt.Errorf("dockerd did not take daemon.json: it reports mirrors %s, "+
				"daemon.json has %s (journalctl -u docker.service says why)",
				listOf(info.RegistryConfig.Mirrors), listOf(want))
		}
		return false, nil
	})
	if err != nil {
		return err
	}
	log.Info("dockerd runs with the mirrors of daemon.json", "mirrors", len(want),
		"version", info.ServerVersion)
	return nil
}

// daemonJSONMirrors reads registry-mirrors from daemon.json under root; no
// file means no mirrors.
func daemonJSONMirrors(root string) ([]string, error) {
	path := filepath.Join(root, docker.DaemonJSON)
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", docker.DaemonJSON, err)
	}
	s, err := docker.ReadSettings(data)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", docker.DaemonJSON, err)
	}
	return s.Mirrors, nil
}

func getDockerInfo(ctx context.Context, client *http.Client) (dockerInfo, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://docker/info", nil)
	if err != nil {
		return dockerInfo{}, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return dockerInfo{}, err
	}
	defer resp.Body.Close()

	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return dockerInfo{}, fmt.Errorf("GET /info: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return dockerInfo{}, fmt.Errorf("GET /info: HTTP %d: %s", resp.StatusCode,
			excerpt(body))
	}
	var info dockerInfo
	if err := json.Unmarshal(body, &info); err != nil {
		return dockerInfo{}, fmt.Errorf("GET /info: %w", err)
	}
	return info, nil
}

// sameMirrors compares mirror lists in order, as dockerd normalises them: it
// ends each URL with a slash.
func sameMirrors(a, b []string) bool {
	norm := func(s string) string { return strings.TrimRight(s, "/") }
	return slices.EqualFunc(a, b, func(x, y string) bool { return norm(x) == norm(y) })
}

func listOf(items []string) string {
	return "[" + strings.Join(items, " ") + "]"
}

// excerpt is the start of an error body, on one line.
func excerpt(body []byte) string {
	s := strings.Join(strings.Fields(string(body)), " ")
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}

// unixClient is an HTTP/1.1 client whose every request goes to the unix
// socket at sock.
func unixClient(sock string) *http.Client {
	return &http.Client{Transport: &http.Transport{DialContext: unixDialer(sock)}}
}

func unixDialer(sock string) func(ctx context.Context, _, _ string) (net.Conn, error) {
	return func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}
}
