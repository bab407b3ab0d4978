package podmantest

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// netnsSeq makes network namespace names unique within the test process.
var netnsSeq atomic.Int64

// netns is a network namespace made for one test, with only loopback up.
type netns struct {
	name, path string
}

// newNetns makes a network namespace with loopback up and deletes it when
// the test ends, after the daemons started in it have stopped.
func newNetns(t *testing.T) *netns {
	t.Helper()

	name := fmt.Sprintf("mirrord-podman-%d-%d", os.Getpid(), netnsSeq.Add(1))
	if b, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, b)
	}
	t.Cleanup(func() {
		if b, err := exec.Command("ip", "netns", "delete", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns delete %s: %v: %s", name, err, b)
		}
	})

	b, err := exec.Command("ip", "-n", name, "link", "set", "lo", "up").CombinedOutput()
	if err != nil {
		t.Fatalf("ip -n %s link set lo up: %v: %s", name, err, b)
	}
	return &netns{name: name, path: "/run/netns/" + name}
}

// argv returns the command line that runs args inside the namespace;
// nsenter without --fork execs the program, so its PID is the program's.
func (n *netns) argv(args ...string) []string {
	return append([]string{"nsenter", "--net=" + n.path, "--"}, args...)
}

// run runs args inside the namespace with the clean environment plus env,
// and returns the combined output, failing the test when it fails or runs
// longer than two minutes.
func (n *netns) run(t *testing.T, env []string, args ...string) string {
	t.Helper()

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	argv := n.argv(args...)
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = append(cleanEnv(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("in netns %s: %q: %v\n%s", n.name, args, err, out)
	}
	return string(out)
}

// cleanEnv is the environment less what would change the tools under test:
// mirrord's variables, docker-registry's REGISTRY_* overrides (podman's
// REGISTRY_AUTH_FILE among them) and containers/image's CONTAINERS_* paths.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "MIRRORD_") || strings.HasPrefix(kv, "REGISTRY_") ||
			strings.HasPrefix(kv, "CONTAINERS_") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

// registryConfig is docker-registry's configuration: storage in a
// directory, one address, access log on, no background jobs.
const registryConfig = `version: 0.1
log:
  level: info
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: %s
http:
  addr: %s
  secret: mirrord-podman
maintenance:
  uploadpurging:
    enabled: false
`

// registry is a docker-registry serving on loopback inside a namespace.
type registry struct {
	addr   string
	access string // its stdout: the access log
	log    string // its stderr
	cmd    *exec.Cmd
	exited chan struct{}
	ns     *netns
}

// startRegistry starts docker-registry on 127.0.0.1:port inside ns and
// waits until it listens; a cleanup stops it by PID.
func startRegistry(t *testing.T, ns *netns, port int) *registry {
	t.Helper()

	dir := t.TempDir()
	r := &registry{
		addr:   fmt.Sprintf("127.0.0.1:%d", port),
		access: filepath.Join(dir, "access.log"),
		log:    filepath.Join(dir, "registry.log"),
		ns:     ns,
		exited: make(chan struct{}),
	}
	cfg := filepath.Join(dir, "config.yml")
	data := fmt.Sprintf(registryConfig, filepath.Join(dir, "storage"), r.addr)
	if err := os.WriteFile(cfg, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}

	stdout, err := os.Create(r.access)
	if err != nil {
		t.Fatal(err)
	}
	defer stdout.Close()
	stderr, err := os.Create(r.log)
	if err != nil {
		t.Fatal(err)
	}
	defer stderr.Close()

	argv := ns.argv("docker-registry", "serve", cfg)
	r.cmd = exec.Command(argv[0], argv[1:]...)
	r.cmd.Env = cleanEnv()
	r.cmd.Stdout, r.cmd.Stderr = stdout, stderr
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := r.cmd.Start(); err != nil {
		t.Fatalf("start docker-registry %s: %v", r.addr, err)
	}
	go func() {
		_ = r.cmd.Wait()
		close(r.exited)
	}()
	t.Cleanup(func() { r.stop(t) })

	r.waitListening(t, port)
	return r
}

// waitListening polls /proc/<pid>/net/tcp, the namespace's table once
// nsenter has entered it, until 127.0.0.1:port listens.
func (r *registry) waitListening(t *testing.T, port int) {
	t.Helper()

	want := fmt.Sprintf("0100007F:%04X", port)
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case <-r.exited:
			t.Fatalf("docker-registry %s exited:\n%s", r.addr, readOr(r.log))
		default:
		}

		if inNetns(r.cmd.Process.Pid, r.ns) {
			b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/net/tcp", r.cmd.Process.Pid))
			for _, line := range strings.Split(string(b), "\n")[1:] {
				f := strings.Fields(line)
				if len(f) > 3 && f[1] == want && f[3] == "0A" {
					return
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("docker-registry %s: not listening after 10s:\n%s", r.addr, readOr(r.log))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// inNetns reports whether process pid is in namespace ns.
func inNetns(pid int, ns *netns) bool {
	a, err1 := os.Stat(fmt.Sprintf("/proc/%d/ns/net", pid))
	b, err2 := os.Stat(ns.path)
	return err1 == nil && err2 == nil && os.SameFile(a, b)
}

// stop sends SIGTERM to the registry's PID, then SIGKILL to its process
// group after 10 s, and prints its logs if the test failed.
func (r *registry) stop(t *testing.T) {
	t.Helper()

	if err := r.cmd.Process.Signal(syscall.SIGTERM); err != nil &&
		!errors.Is(err, os.ErrProcessDone) {
		t.Errorf("stop docker-registry %s: %v", r.addr, err)
	}
	select {
	case <-r.exited:
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-r.cmd.Process.Pid, syscall.SIGKILL)
		<-r.exited
	}
	if t.Failed() {
		t.Logf("docker-registry %s access log (its log: %s):\n%s", r.addr, r.log,
			readOr(r.access))
	}
}

func readOr(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	return string(b)
}

// push copies the OCI layout image into the registry as repo:tag and
// returns the manifest digest the registry holds.
func (r *registry) push(t *testing.T, layout, tag, repo string) string {
	t.Helper()

	digestFile := filepath.Join(t.TempDir(), "digest")
	r.ns.run(t, nil, "skopeo", "copy", "--quiet", "--dest-tls-verify=false",
		"--digestfile", digestFile, "oci:"+layout+":"+tag,
		fmt.Sprintf("docker://%s/%s:%s", r.addr, repo, tag))
	b, err := os.ReadFile(digestFile)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// request is one line of a registry's access log.
type request struct {
	Method, Path, Agent string
	Status              int
}

// accessLine matches docker-registry's combined log format.
var accessLine = regexp.MustCompile(
	`^\S+ \S+ \S+ \[[^\]]*\] "(\S+) (\S+) [^"]*" (\d{3}) \S+ "[^"]*" "([^"]*)"`)

// requests returns the registry's access log entries so far, in order.
func (r *registry) requests(t *testing.T) []request {
	t.Helper()

	f, err := os.Open(r.access)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()

	var out []request
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		m := accessLine.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		var status int
		fmt.Sscan(m[3], &status)
		out = append(out, request{Method: m[1], Path: m[2], Status: status, Agent: m[4]})
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("%s: %v", r.access, err)
	}
	return out
}

// manifestRequests returns the entries of reqs that ask for the manifest
// path of repo at ref (a tag or digest).
func manifestRequests(reqs []request, repo, ref string) []request {
	var out []request
	for _, q := range reqs {
		if q.Path == "/v2/"+repo+"/manifests/"+ref {
			out = append(out, q)
		}
	}
	return out
}

// imageEpoch is the time stamped into the test image, for fixed digests.
var imageEpoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// writeImageLayout writes an OCI image layout into dir holding one image
// tagged tag, whose one layer is a text file. The image is never run.
func writeImageLayout(dir, tag string) error {
	var tb bytes.Buffer
	tw := tar.NewWriter(&tb)
	body := []byte("pulled through a mirror written by mirrord\n")
	hdr := &tar.Header{Typeflag: tar.TypeReg, Name: "hello.txt", Mode: 0o644,
		Size: int64(len(body)), ModTime: imageEpoch, Format: tar.FormatPAX}
	if err := tw.WriteHeader(hdr); err != nil {
		return err
	}
	if _, err := tw.Write(body); err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}

	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	if _, err := zw.Write(tb.Bytes()); err != nil {
		return err
	}
	if err := zw.Close(); err != nil {
		return err
	}

	config, err := json.Marshal(map[string]any{
		"created": imageEpoch, "architecture": runtime.GOARCH, "os": "linux",
		"config": map[string]any{"Cmd": []string{"/hello.txt"}},
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{digest(tb.Bytes())}},
	})
	if err != nil {
		return err
	}
	manifest, err := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.manifest.v1+json",
		"config":        describe("application/vnd.oci.image.config.v1+json", config),
		"layers": []map[string]any{
			describe("application/vnd.oci.image.layer.v1.tar+gzip", gz.Bytes())},
	})
	if err != nil {
		return err
	}
	m := describe("application/vnd.oci.image.manifest.v1+json", manifest)
	m["annotations"] = map[string]string{"org.opencontainers.image.ref.name": tag}
	index, err := json.Marshal(map[string]any{"schemaVersion": 2, "manifests": []any{m}})
	if err != nil {
		return err
	}

	for _, blob := range [][]byte{gz.Bytes(), config, manifest} {
		p := filepath.Join(dir, "blobs", "sha256", strings.TrimPrefix(digest(blob), "sha256:"))
		if err := writeFile(p, blob); err != nil {
			return err
		}
	}
	if err := writeFile(filepath.Join(dir, "index.json"), index); err != nil {
		return err
	}
	return writeFile(filepath.Join(dir, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`))
}

func digest(data []byte) string {
	sum := sha256.Sum256(data)
	return "sha256:" + hex.EncodeToString(sum[:])
}

func describe(mediaType string, data []byte) map[string]any {
	return map[string]any{"mediaType": mediaType, "digest": digest(data), "size": len(data)}
}

// writeFile writes data to path, making its directory.
func writeFile(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, data, 0o644)
}
