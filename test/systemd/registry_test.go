package systemdtest

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// The test image every mirror serves, as Docker Hub's library/NAME:TAG.
const (
	imageName = "mirrord-hello"
	imageTag  = "1"
	imageRef  = "docker.io/library/" + imageName + ":" + imageTag
)

// mirror is a docker-registry serving the test image on loopback inside a
// machine's network namespace, started by the test process on the host.
type mirror struct {
	url    string // as the machine reaches it, with /v2/PREFIX for a prefix
	repo   string // where the test image is: [PREFIX/]library/NAME
	o      mirrorOptions
	access string // the access log: docker-registry writes it to stdout
	cmd    *exec.Cmd
}

// mirrorOptions say how a mirror serves the test image.
type mirrorOptions struct {
	port int

	// prefix, if set, is a repository prefix the image sits under, as a
	// GitLab Dependency Proxy or a Harbor project serves Docker Hub's
	// images: the mirror's URL is then http://127.0.0.1:PORT/v2/PREFIX.
	prefix string

	// user and password, if set, are the only credentials the registry
	// accepts, with HTTP Basic authentication on every request.
	user, password string
}

// registryConfigYAML is docker-registry's configuration: storage in a
// directory, one address, access log on, no background jobs; %s is an
// optional auth section.
const registryConfigYAML = `version: 0.1
log:
  level: info
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: %s
http:
  addr: 127.0.0.1:%d
  secret: mirrord-systemd-test
maintenance:
  uploadpurging:
    enabled: false
%s`

// registryAuthYAML is the auth section for htpasswd credentials; %s is the
// htpasswd file.
const registryAuthYAML = `auth:
  htpasswd:
    realm: mirrord-test
    path: %s
`

// startMirror starts docker-registry on 127.0.0.1:PORT in the machine's
// network namespace as the options say, waits until it listens and pushes
// the test image to it. The registry is stopped when the test ends.
func (m *machine) startMirror(o mirrorOptions) *mirror {
	t := m.t
	t.Helper()
	for _, tool := range []string{"docker-registry", "skopeo", "nsenter"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found: %v; run scripts/install-test-deps.sh as root", tool, err)
		}
	}

	dir := t.TempDir()
	r := &mirror{url: fmt.Sprintf("http://127.0.0.1:%d", o.port),
		repo: "library/" + imageName, o: o, access: filepath.Join(dir, "access.log")}
	if o.prefix != "" {
		r.url += "/v2/" + o.prefix
		r.repo = o.prefix + "/" + r.repo
	}

	auth := ""
	if o.user != "" {
		hash, err := bcrypt.GenerateFromPassword([]byte(o.password), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		htpasswd := filepath.Join(dir, "htpasswd")
		line := o.user + ":" + string(hash) + "\n"
		if err := os.WriteFile(htpasswd, []byte(line), 0o600); err != nil {
			t.Fatal(err)
		}
		auth = fmt.Sprintf(registryAuthYAML, htpasswd)
	}
	cfg := filepath.Join(dir, "config.yml")
	data := fmt.Sprintf(registryConfigYAML, filepath.Join(dir, "storage"), o.port, auth)
	if err := os.WriteFile(cfg, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}

	stdout, err := os.Create(r.access)
	if err != nil {
		t.Fatal(err)
	}
	defer stdout.Close()
	stderr, err := os.Create(filepath.Join(dir, "registry.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer stderr.Close()

	r.cmd = exec.Command("nsenter", m.netns(), "docker-registry", "serve", cfg)
	// docker-registry reads every REGISTRY_* variable as configuration.
	r.cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	r.cmd.Stdout, r.cmd.Stderr = stdout, stderr
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Pdeathsig: syscall.SIGTERM}
	if err := r.cmd.Start(); err != nil {
		t.Fatalf("start docker-registry: %v", err)
	}
	t.Cleanup(func() {
		r.cmd.Process.Signal(syscall.SIGTERM)
		r.cmd.Wait()
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "registry.log"))
			t.Logf("docker-registry on %s:\n%s", r.url, b)
		}
	})

	m.eventually(10*time.Second, "docker-registry to listen on "+r.url, func() (bool, string) {
		return listening(r.cmd.Process.Pid, o.port), "not listening"
	})
	r.push(m)
	return r
}

// netns is the nsenter flag that enters the machine's network namespace.
func (m *machine) netns() string {
	return fmt.Sprintf("--net=/proc/%d/ns/net", m.leader)
}

// push copies the test image, built as an OCI layout, into the registry.
func (r *mirror) push(m *machine) {
	t := m.t
	t.Helper()

	layout := filepath.Join(t.TempDir(), "image")
	if err := writeImage(layout); err != nil {
		t.Fatalf("write test image: %v", err)
	}
	args := []string{m.netns(), "skopeo", "copy", "--quiet", "--dest-tls-verify=false"}
	if r.o.user != "" {
		args = append(args, "--dest-creds", r.o.user+":"+r.o.password)
	}
	dest := fmt.Sprintf("docker://127.0.0.1:%d/%s:%s", r.o.port, r.repo, imageTag)
	args = append(args, "oci:"+layout+":"+imageTag, dest)
	if out, err := exec.Command("nsenter", args...).CombinedOutput(); err != nil {
		t.Fatalf("skopeo copy to %s: %v\n%s", dest, err, out)
	}
}

// accessLine matches the combined log format of docker-registry:
// host ident user [time] "method path proto" status size "referer" "agent".
var accessLine = regexp.MustCompile(
	`^\S+ \S+ \S+ \[[^\]]*\] "(\S+) (\S+) [^"]*" (\d{3}) \S+ "[^"]*" "([^"]*)"`)

// manifestHits returns the requests for the test image's manifest that
// were answered 200 to a client whose user agent starts with agent. A
// registry with credentials answers 401 to every request without them.
func (r *mirror) manifestHits(t *testing.T, agent string) []string {
	t.Helper()

	f, err := os.Open(r.access)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()

	path := fmt.Sprintf("/v2/%s/manifests/%s", r.repo, imageTag)
	var hits []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		m := accessLine.FindStringSubmatch(sc.Text())
		if m == nil || m[3] != "200" || !strings.HasPrefix(m[4], agent) {
			continue
		}
		if p, _, _ := strings.Cut(m[2], "?"); p == path {
			hits = append(hits, m[1]+" "+m[2]+" "+m[4])
		}
	}
	return hits
}

// accessLog returns the registry's access log, for failure messages.
func (r *mirror) accessLog(t *testing.T) string {
	t.Helper()

	b, err := os.ReadFile(r.access)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// listening reports whether a socket of pid's network namespace listens on
// 127.0.0.1:port, from its /proc/net/tcp.
func listening(pid, port int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/tcp", pid))
	if err != nil {
		return false
	}
	want := fmt.Sprintf("0100007F:%04X", port)
	for line := range strings.Lines(string(b)) {
		f := strings.Fields(line)
		// sl local_address rem_address st ...; 0A is LISTEN.
		if len(f) > 3 && f[1] == want && f[3] == "0A" {
			return true
		}
	}
	return false
}

// pullCRI pulls the test image through containerd's CRI in the machine,
// with the crictl of scripts/install-test-deps.sh on the host talking to
// the machine's containerd socket: the pull runs in containerd, in the
// machine's network namespace, and reads its hosts.toml. It passes no
// credentials: a mirror's come from hosts.toml.
func (m *machine) pullCRI() {
	m.t.Helper()

	args := []string{"--runtime-endpoint",
		"unix://" + m.hostPath("/run/containerd/containerd.sock"), "--timeout", "30s", "pull",
		imageRef}
	out, err := exec.Command(crictlPath(m.t), args...).CombinedOutput()
	if err != nil {
		m.t.Fatalf("crictl pull %s: %v\n%s", imageRef, err, out)
	}
	m.t.Logf("crictl pull %s: %s", imageRef, strings.TrimSpace(string(out)))
}

// crictlPath is the crictl scripts/install-test-deps.sh builds.
func crictlPath(t *testing.T) string {
	t.Helper()

	dir := os.Getenv("MIRRORD_TOOLS_DIR")
	if dir == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			t.Fatal(err)
		}
		dir = filepath.Join(home, ".cache/mirrord-tools")
	}
	p := filepath.Join(dir, "crictl-v1.34.0/bin/crictl")
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("crictl: %v; run scripts/install-test-deps.sh as root", err)
	}
	return p
}

// imageEpoch is the time stamped into the test image, so that it always
// has the same digests.
var imageEpoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// writeImage writes an OCI image layout into dir holding the test image
// for this machine's architecture: one layer with one small file. The
// tests only pull it.
func writeImage(dir string) error {
	var layerTar bytes.Buffer
	tw := tar.NewWriter(&layerTar)
	body := []byte("pulled through a mirror\n")
	hdr := &tar.Header{Name: "hello.txt", Mode: 0o644, Size: int64(len(body)),
		ModTime: imageEpoch}
	if err := tw.WriteHeader(hdr); err != nil {
		return err
	}
	if _, err := tw.Write(body); err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	var layer bytes.Buffer
	zw := gzip.NewWriter(&layer)
	zw.ModTime = imageEpoch
	if _, err := zw.Write(layerTar.Bytes()); err != nil {
		return err
	}
	if err := zw.Close(); err != nil {
		return err
	}

	config, err := json.Marshal(map[string]any{
		"created": imageEpoch, "architecture": runtime.GOARCH, "os": "linux",
		"config": map[string]any{},
		"rootfs": map[string]any{"type": "layers",
			"diff_ids": []string{sha256Digest(layerTar.Bytes())}},
	})
	if err != nil {
		return err
	}
	manifest, err := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.manifest.v1+json",
		"config":        descriptor("application/vnd.oci.image.config.v1+json", config, nil),
		"layers": []any{descriptor("application/vnd.oci.image.layer.v1.tar+gzip",
			layer.Bytes(), nil)},
	})
	if err != nil {
		return err
	}
	index, err := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"manifests": []any{descriptor("application/vnd.oci.image.manifest.v1+json", manifest,
			map[string]string{"org.opencontainers.image.ref.name": imageTag})},
	})
	if err != nil {
		return err
	}

	blobs := filepath.Join(dir, "blobs", "sha256")
	if err := os.MkdirAll(blobs, 0o755); err != nil {
		return err
	}
	for _, b := range [][]byte{layer.Bytes(), config, manifest} {
		name := strings.TrimPrefix(sha256Digest(b), "sha256:")
		if err := os.WriteFile(filepath.Join(blobs, name), b, 0o644); err != nil {
			return err
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "index.json"), index, 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "oci-layout"),
		[]byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644)
}

// descriptor is the OCI content descriptor of data.
func descriptor(mediaType string, data []byte, annotations map[string]string) map[string]any {
	d := map[string]any{"mediaType": mediaType, "digest": sha256Digest(data),
		"size": len(data)}
	if annotations != nil {
		d["annotations"] = annotations
	}
	return d
}

// sha256Digest is data's digest as OCI writes it.
func sha256Digest(data []byte) string {
	sum := sha256.Sum256(data)
	return "sha256:" + hex.EncodeToString(sum[:])
}
