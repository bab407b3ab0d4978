package systemd

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2"

	"github.com/mirrord/mirrord/internal/containerd"
)

// containerdSocket is containerd's default gRPC socket on the node.
const containerdSocket = "/run/containerd/containerd.sock"

// The CRI methods the proof calls: Version of the current API, then of the
// one containerd 1.5 and older serve.
const (
	criVersionV1       = "/runtime.v1.RuntimeService/Version"
	criVersionV1alpha2 = "/runtime.v1alpha2.RuntimeService/Version"
)

// gRPC status codes the proof tells apart.
const (
	grpcOK            = 0
	grpcUnimplemented = 12
)

// errNoCRI is the silent failure of FACTS.md §2.3: containerd runs and
// answers, but without the CRI plugin kubelet has no runtime.
var errNoCRI = errors.New("containerd is up but its CRI plugin did not load " +
	"(check `ctr plugins ls`; journalctl -u containerd.service says why)")

// criReply is what a CRI Version call returned.
type criReply struct {
	code    int
	message string
	// runtime and version are RuntimeName and RuntimeVersion of a
	// successful answer.
	runtime, version string
}

// checkContainerd proves that containerd serves the CRI on its socket under
// root, asking until it does or timeout passes: after a restart the socket
// may not be there yet. When config.toml disables the CRI plugin, an answer
// of any kind is enough.
func checkContainerd(ctx context.Context, root string, timeout time.Duration,
	log *slog.Logger) error {
	addr, criOff, err := containerdAddress(root)
	if err != nil {
		return err
	}

	sock := filepath.Join(root, addr)
	var r criReply
	err = poll(ctx, timeout, func(ctx context.Context) (bool, error) {
		r, err = criVersion(ctx, sock)
		switch {
		case err != nil:
			return true, fmt.Errorf("containerd at %s: %w", sock, err)
		case r.code == grpcOK:
			return false, nil
		case r.code == grpcUnimplemented && criOff:
			return false, nil
		case r.code == grpcUnimplemented:
			return false, errNoCRI
		}
		return true, fmt.Errorf("containerd at %s: CRI Version: gRPC status %d: %s", sock,
			r.code, r.message)
	})
	if err != nil {
		return err
	}

	if criOff {
		log.Info("containerd answers; config.toml disables its CRI plugin", "socket", sock)
		return nil
	}
	log.Info("containerd's CRI answers", "runtime", r.runtime, "version", r.version)
	return nil
}

// containerdAddress reads containerd's gRPC socket path from config.toml
// under root, and whether the file disables the CRI plugin.
func containerdAddress(root string) (addr string, criOff bool, err error) {
	data, err := os.ReadFile(filepath.Join(root, containerd.ConfigFile))
	if errors.Is(err, fs.ErrNotExist) {
		return containerdSocket, false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("read %s: %w", containerd.ConfigFile, err)
	}

	var cfg struct {
		GRPC struct {
			Address string `toml:"address"`
		} `toml:"grpc"`
		DisabledPlugins []string       `toml:"disabled_plugins"`
		Plugins         map[string]any `toml:"plugins"`
	}
	if err := toml.Unmarshal(data, &cfg); err != nil {
		return "", false, fmt.Errorf("read %s: %w", containerd.ConfigFile, err)
	}

	addr = cfg.GRPC.Address
	if addr == "" {
		addr = pluginAddress(cfg.Plugins)
	}
	if addr == "" {
		addr = containerdSocket
	}
	for _, p := range cfg.DisabledPlugins {
		if p == "cri" || strings.HasSuffix(p, ".cri") || strings.Contains(p, ".cri.") {
			criOff = true
		}
	}
	return strings.TrimPrefix(addr, "unix://"), criOff, nil
}

// pluginAddress finds the gRPC address where config version 4 (containerd
// 2.3) puts it: in a plugin table instead of [grpc]. As of 2026-08 the
// table's exact name is unconfirmed here, so any "grpc" plugin with an
// address string counts.
func pluginAddress(plugins map[string]any) string {
	for name, v := range plugins {
		table, ok := v.(map[string]any)
		if !ok || !strings.Contains(name, "grpc") {
			continue
		}
		if a, ok := table["address"].(string); ok && a != "" {
			return a
		}
	}
	return ""
}

// criVersion asks the CRI for its version over the socket at sock: the v1
// API, and when containerd does not know it, the v1alpha2 API of containerd
// 1.5 and older.
func criVersion(ctx context.Context, sock string) (criReply, error) {
	r, err := grpcCall(ctx, sock, criVersionV1)
	if err != nil || r.code != grpcUnimplemented {
		return r, err
	}
	if old, err := grpcCall(ctx, sock, criVersionV1alpha2); err == nil && old.code == grpcOK {
		return old, nil
	}
	return r, nil
}

// grpcCall makes a unary gRPC call with an empty request message, framed by
// hand over HTTP/2 without TLS (h2c), which is what containerd serves on its
// socket: a 5-byte prefix (not compressed, length 0), then the status in
// the trailers, or in the headers for an answer without a body.
func grpcCall(ctx context.Context, sock, method string) (criReply, error) {
	var protos http.Protocols
	protos.SetUnencryptedHTTP2(true)
	tr := &http.Transport{Protocols: &protos, DialContext: unixDialer(sock)}
	defer tr.CloseIdleConnections()

	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://containerd"+method,
		bytes.NewReader(make([]byte, 5)))
	if err != nil {
		return criReply{}, err
	}
	req.Header.Set("Content-Type", "application/grpc")
	req.Header.Set("Te", "trailers")
	resp, err := tr.RoundTrip(req)
	if err != nil {
		return criReply{}, err
	}
	defer resp.Body.Close()

	// The trailers arrive with the end of the body.
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return criReply{}, fmt.Errorf("read answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return criReply{}, fmt.Errorf("HTTP %d: %s", resp.StatusCode, excerpt(body))
	}
	status := grpcHeader(resp, "Grpc-Status")
	if status == "" {
		return criReply{}, errors.New("answer without grpc-status")
	}
	code, err := strconv.Atoi(status)
	if err != nil {
		return criReply{}, fmt.Errorf("grpc-status %q: not a number", status)
	}

	r := criReply{code: code}
	r.message, _ = url.PathUnescape(grpcHeader(resp, "Grpc-Message"))
	if code == grpcOK {
		fields := protoStrings(grpcMessage(body))
		// VersionResponse: runtime_name = 2, runtime_version = 3.
		r.runtime, r.version = fields[2], fields[3]
	}
	return r, nil
}

// grpcHeader reads a gRPC field from the trailers, or from the headers of
// a trailers-only answer.
func grpcHeader(resp *http.Response, key string) string {
	if v := resp.Trailer.Get(key); v != "" {
		return v
	}
	return resp.Header.Get(key)
}

// grpcMessage returns the first message of a gRPC body, nil when the body
// holds no whole uncompressed one.
func grpcMessage(body []byte) []byte {
	if len(body) < 5 || body[0] != 0 {
		return nil
	}
	n := binary.BigEndian.Uint32(body[1:5])
	if uint64(len(body)-5) < uint64(n) {
		return nil
	}
	return body[5 : 5+n]
}

// protoStrings decodes the length-delimited fields of a protobuf message as
// strings, by field number; it skips other fields and stops at anything
// malformed.
func protoStrings(msg []byte) map[int]string {
	out := map[int]string{}
	for len(msg) > 0 {
		key, n := binary.Uvarint(msg)
		if n <= 0 {
			return out
		}
		msg = msg[n:]

		var skip uint64
		switch key & 7 {
		case 0: // varint
			if _, n = binary.Uvarint(msg); n <= 0 {
				return out
			}
			skip = uint64(n)
		case 1: // 64-bit
			skip = 8
		case 2: // length-delimited
			l, n := binary.Uvarint(msg)
			if n <= 0 || uint64(len(msg)-n) < l {
				return out
			}
			out[int(key>>3)] = string(msg[n : n+int(l)])
			skip = uint64(n) + l
		case 5: // 32-bit
			skip = 4
		default:
			return out
		}
		if uint64(len(msg)) < skip {
			return out
		}
		msg = msg[skip:]
	}
	return out
}

// The CRI sockets of the other runtimes mirrord acts on: CRI-O's, and the
// embedded containerd's of k3s and RKE2 (both under /run/k3s).
const (
	crioSocket    = "/run/crio/crio.sock"
	rancherSocket = "/run/k3s/containerd/containerd.sock"
)

// checkCRI proves that the runtime name serves the CRI on sock under root,
// asking until it does or timeout passes. For CRI-O after a reload this
// shows the daemon survived it; that it took the registries shows only in
// its log, which a reload of a bad file does not fail (like dockerd's).
func checkCRI(ctx context.Context, root, name, sock string, timeout time.Duration,
	log *slog.Logger) error {
	path := filepath.Join(root, sock)
	var r criReply
	err := poll(ctx, timeout, func(ctx context.Context) (bool, error) {
		var err error
		r, err = criVersion(ctx, path)
		switch {
		case err != nil:
			return true, fmt.Errorf("%s at %s: %w", name, path, err)
		case r.code != grpcOK:
			return true, fmt.Errorf("%s at %s: CRI Version: gRPC status %d: %s", name, path,
				r.code, r.message)
		}
		return false, nil
	})
	if err != nil {
		return err
	}

	log.Info(name+"'s CRI answers", "runtime", r.runtime, "version", r.version)
	return nil
}
