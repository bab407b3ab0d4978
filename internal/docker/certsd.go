package docker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/mirrord/mirrord/internal/containerd"
	"github.com/mirrord/mirrord/internal/spec"
)

// CertsDir is the directory where dockerd looks for a registry's TLS files
// and, from Docker 28 with the containerd image store, its hosts.toml
// (moby commit 8b4cb6f58c, daemon/hosts.go). dockerd never reads
// /etc/containerd/certs.d.
const CertsDir = "/etc/docker/certs.d"

// hostsTOMLSince is the first dockerd release that reads hosts.toml under
// CertsDir, when its image store is containerd.
var hostsTOMLSince = Version{Major: 28}

// containerdStoreDefaultSince is the first release whose fresh installs use
// the containerd image store without daemon.json saying so. Hosts upgraded
// to it keep the store they had.
var containerdStoreDefaultSince = Version{Major: 29}

// ImageStore is where dockerd keeps images: its classic graph drivers
// (overlay2, vfs, ...) or containerd's snapshotters.
type ImageStore string

// The image stores. StoreUnknown means nothing said which.
const (
	StoreUnknown    ImageStore = ""
	StoreClassic    ImageStore = "graphdriver"
	StoreContainerd ImageStore = "containerd"
)

// snapshotterDriverType is the DriverStatus value dockerd's GET /info
// reports, under "driver-type", when its image store is containerd.
const snapshotterDriverType = "io.containerd.snapshotter.v1"

// featureSnapshotter is the daemon.json features key that switches the
// containerd image store on or off.
const featureSnapshotter = "containerd-snapshotter"

// StoreFromInfo reads the image store from the body of dockerd's GET /info:
// StoreContainerd when DriverStatus holds ["driver-type",
// "io.containerd.snapshotter.v1"], StoreClassic when it does not and Driver
// names a driver, StoreUnknown when Driver is empty. It fails only on a
// body that is not the JSON object /info returns.
func StoreFromInfo(info []byte) (ImageStore, error) {
	var v struct {
		Driver       string
		DriverStatus [][]string
	}
	if err := json.Unmarshal(info, &v); err != nil {
		return StoreUnknown, fmt.Errorf("parse dockerd /info: %w", err)
	}

	for _, kv := range v.DriverStatus {
		if len(kv) == 2 && kv[0] == "driver-type" && kv[1] == snapshotterDriverType {
			return StoreContainerd, nil
		}
	}
	if v.Driver == "" {
		return StoreUnknown, nil
	}
	return StoreClassic, nil
}

// DetectImageStore decides which image store dockerd v uses, and says how
// for logs and plan. hint is what the running daemon reported
// (StoreFromInfo), or StoreUnknown when it was not asked or not running.
//
// In order: a known hint wins, since it is what the daemon does now; then
// daemon.json's "features": {"containerd-snapshotter": true|false}; then a
// known v older than 29 means classic, that release line's default. Docker
// 29 and later with neither gives StoreUnknown: fresh installs use
// containerd, upgraded hosts keep the classic store. daemonJSON may be nil
// or empty (no file); a file that is not a JSON object, or a feature value
// that is not a boolean, is an error, as it is for dockerd.
func DetectImageStore(daemonJSON []byte, v Version, hint ImageStore) (ImageStore, string, error) {
	if hint != StoreUnknown {
		return hint, fmt.Sprintf("dockerd reports the %s image store", hint), nil
	}

	on, set, err := snapshotterFeature(daemonJSON)
	if err != nil {
		return StoreUnknown, "", err
	}
	switch {
	case set && on:
		return StoreContainerd, fmt.Sprintf("daemon.json sets features.%s", featureSnapshotter), nil
	case set:
		return StoreClassic, fmt.Sprintf("daemon.json turns features.%s off",
			featureSnapshotter), nil
	case v.Known() && !v.AtLeast(containerdStoreDefaultSince):
		return StoreClassic, fmt.Sprintf("dockerd %s defaults to the classic image store", v), nil
	}
	return StoreUnknown, fmt.Sprintf("dockerd %s: daemon.json does not say; fresh installs "+
		"of Docker 29 and later use containerd, upgraded ones keep the classic store", v), nil
}

// snapshotterFeature reads features.containerd-snapshotter from daemon.json.
func snapshotterFeature(daemonJSON []byte) (on, set bool, err error) {
	if len(strings.TrimSpace(string(daemonJSON))) == 0 {
		return false, false, nil
	}
	if _, err := parseDocument(daemonJSON); err != nil {
		return false, false, err
	}

	var doc struct {
		Features map[string]any `json:"features"`
	}
	if err := json.Unmarshal(daemonJSON, &doc); err != nil {
		return false, false, fmt.Errorf("parse daemon.json: features: %w", err)
	}
	val, ok := doc.Features[featureSnapshotter]
	if !ok {
		return false, false, nil
	}
	b, isBool := val.(bool)
	if !isBool {
		return false, false, fmt.Errorf("parse daemon.json: features.%s is %v; want true "+
			"or false", featureSnapshotter, val)
	}
	return b, true, nil
}

// ReadsHostsTOML reports whether dockerd v with image store st takes its
// mirrors from CertsDir/<host>/hosts.toml, and why, for plan. It does for
// the containerd store from Docker 28 on; it does not for the classic store,
// nor for Docker 25 to 27 with the containerd store, which read only
// daemon.json mirrors and certificate files (FACTS.md §3.3).
//
// When the store or the version is unknown it answers true: writing the
// files is harmless to a dockerd that does not read them (it takes only
// *.crt, *.cert and *.key files from CertsDir), and needed by one that does.
func ReadsHostsTOML(v Version, st ImageStore) (bool, string) {
	switch {
	case st == StoreClassic:
		return false, "the classic image store takes mirrors from daemon.json only"
	case v.Known() && !v.AtLeast(hostsTOMLSince):
		return false, fmt.Sprintf("dockerd %s reads no hosts.toml (Docker 28 and later do, "+
			"with the containerd image store)", v)
	case st == StoreContainerd && v.Known():
		return true, fmt.Sprintf("dockerd %s with the containerd image store reads "+
			"%s/<host>/hosts.toml", v, CertsDir)
	}
	return true, fmt.Sprintf("dockerd %s, image store %s: hosts.toml written in case it is "+
		"read; it is harmless otherwise", v, storeName(st))
}

func storeName(st ImageStore) string {
	if st == StoreUnknown {
		return "unknown"
	}
	return string(st)
}

// HostsFile is one hosts.toml that dockerd should read.
type HostsFile struct {
	// Path is the node path, CertsDir/<host>/hosts.toml ("_default" for
	// the wildcard registry).
	Path string

	// Registry is the spec's registry host the file serves.
	Registry string

	// Data is the file, as containerd.RenderHosts writes it.
	Data []byte

	// Private is true when Data carries a mirror's credentials: the file
	// must be written 0600, like containerd's (containerd.HasCredentials).
	Private bool
}

// CertsD returns the hosts.toml files dockerd with the containerd image
// store should read for s, one per registry in spec order, and warnings for
// the registries it leaves out. It only reads under root: the directory of
// each file, which it lists.
//
// The files are containerd.RenderHosts's, byte for byte: dockerd reads
// them with containerd's own parser (ConfigureHosts with
// HostDirFromRoot(CertsDir)), so every rule of containerd's hosts.toml
// holds, _default for the wildcard included. The /v2 rule is containerd's
// too: a host URL whose path does not end in /v2 gets /v2 appended, and
// RenderHosts writes path mirrors as <path>/v2 with override_path = true.
// Only daemon.json's registry-mirrors go through dockerd's own merge, which
// appends /v2 to a mirror path; and once a registry's hosts.toml yields two
// hosts or more (a mirror and the upstream), dockerd ignores daemon.json's
// mirrors and insecure-registries for that registry (mergeLegacyConfig), so
// plain-HTTP mirrors rely on their http:// URL in hosts.toml, which
// RenderHosts keeps.
//
// A registry whose directory holds Docker-style certificate files (*.crt,
// *.cert, *.key) and no hosts.toml is left out with a warning: containerd
// reads those files only while the directory has no hosts.toml, so writing
// one would silently drop the operator's TLS settings for that registry.
//
// dockerd reads the files on every pull: writing them needs no reload.
func CertsD(root string, s spec.Spec) ([]HostsFile, []string, error) {
	var files []HostsFile
	var warnings []string
	for _, r := range s.Registries {
		dir := path.Join(CertsDir, containerd.HostDir(r.Host))
		certs, hasHosts, err := listHostDir(filepath.Join(rootDir(root), dir))
		if err != nil {
			return nil, nil, fmt.Errorf("list %s: %w", dir, err)
		}
		if len(certs) > 0 && !hasHosts {
			warnings = append(warnings, fmt.Sprintf("registry %s: %s holds certificate "+
				"files (%s) that dockerd would stop reading next to a hosts.toml; none "+
				"written there, so dockerd pulls %s without these mirrors (for docker.io, "+
				"daemon.json's registry-mirrors still apply)",
				r.Host, dir, strings.Join(certs, ", "), r.Host))
			continue
		}

		files = append(files, HostsFile{
			Path:     path.Join(dir, "hosts.toml"),
			Registry: r.Host,
			Data:     containerd.RenderHosts(r),
			Private:  containerd.HasCredentials(r),
		})
	}
	return files, warnings, nil
}

// listHostDir returns the Docker-style certificate files in dir, sorted, and
// whether it holds a hosts.toml. A missing directory holds neither.
func listHostDir(dir string) (certs []string, hasHosts bool, err error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}

	for _, e := range entries {
		name := e.Name()
		switch {
		case name == "hosts.toml":
			hasHosts = true
		case slices.Contains([]string{".crt", ".cert", ".key"}, filepath.Ext(name)):
			certs = append(certs, name)
		}
	}
	return certs, hasHosts, nil
}

// Socket is dockerd's default API socket on the node.
const Socket = "/run/docker.sock"

// storeQueryTimeout bounds AskImageStore: the answer only spares writing
// files that would be harmless, so it must never slow apply down much.
const storeQueryTimeout = 300 * time.Millisecond

// AskImageStore asks the dockerd whose API socket is under root which
// image store it uses (GET /info, StoreFromInfo). Any failure (no socket,
// no answer within 300 ms, an odd body) gives StoreUnknown: the caller
// falls back to what the files say.
func AskImageStore(ctx context.Context, root string) ImageStore {
	ctx, cancel := context.WithTimeout(ctx, storeQueryTimeout)
	defer cancel()

	sock := filepath.Join(rootDir(root), Socket)
	if _, err := os.Stat(sock); err != nil {
		return StoreUnknown
	}
	client := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
	}}
	defer client.CloseIdleConnections()

	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://docker/info", nil)
	if err != nil {
		return StoreUnknown
	}
	resp, err := client.Do(req)
	if err != nil {
		return StoreUnknown
	}
	defer resp.Body.Close()

	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil || resp.StatusCode != http.StatusOK {
		return StoreUnknown
	}
	st, err := StoreFromInfo(body)
	if err != nil {
		return StoreUnknown
	}
	return st
}
