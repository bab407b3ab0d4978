package e2e

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// regOpts are the ways a test registry differs from startRegistry's.
type regOpts struct {
	// prefix is docker-registry's http.prefix: the API is served under
	// it (/hub/v2/...), as by a registry behind a path.
	prefix string
	// repoPrefix is put before library/<image> when the image is pushed,
	// as a Harbor proxy project or GitLab's dependency proxy names it.
	repoPrefix string
	// ca, when set, signs the certificate the registry serves TLS with.
	ca *testCA
	// user and pass turn on htpasswd authentication.
	user, pass string
}

// registryOptsConfig is registryConfig with the optional parts of regOpts.
const registryOptsConfig = `version: 0.1
log:
  level: info
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: %s
http:
  addr: %s
  secret: mirrord-e2e
%s%s`

// startRegistryOpts starts docker-registry on 127.0.0.1:port inside ns as
// o says, waits until it listens, and pushes the test image to it as
// <repoPrefix>library/<imageName>:<imageTag>. A registry with a prefix,
// which skopeo cannot address, is pushed to through a second instance on
// the same storage without one, stopped afterwards.
func startRegistryOpts(t *testing.T, ns *netns, port int, o regOpts) *registry {
	t.Helper()
	lookTools(t, "docker-registry", "skopeo")

	dir := t.TempDir()
	storage := filepath.Join(dir, "storage")
	var prefix, tls, auth string
	if o.prefix != "" {
		prefix = "  prefix: " + o.prefix + "\n"
	}
	if o.ca != nil {
		cert, key := o.ca.issue(t, dir)
		tls = fmt.Sprintf("  tls:\n    certificate: %s\n    key: %s\n", cert, key)
	}
	if o.user != "" {
		hash, err := bcrypt.GenerateFromPassword([]byte(o.pass), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		htpasswd := filepath.Join(dir, "htpasswd")
		mustWrite(t, htpasswd, []byte(o.user+":"+string(hash)+"\n"))
		auth = fmt.Sprintf("auth:\n  htpasswd:\n    realm: mirrord-e2e\n    path: %s\n", htpasswd)
	}

	pushPort := port
	if o.prefix != "" {
		pushPort = port + 1000
		pusher := serveRegistry(t, ns, dir, "push", fmt.Sprintf(registryOptsConfig, storage,
			fmt.Sprintf("127.0.0.1:%d", pushPort), tls, auth), pushPort)
		pushImage(t, ns, pushPort, o)
		pusher.d.stop(t)
	}

	r := serveRegistry(t, ns, dir, "serve", fmt.Sprintf(registryOptsConfig, storage,
		fmt.Sprintf("127.0.0.1:%d", port), prefix+tls, auth), port)
	if o.prefix == "" {
		pushImage(t, ns, pushPort, o)
	}
	return r
}

// serveRegistry starts docker-registry with config inside ns and waits
// until it listens on port.
func serveRegistry(t *testing.T, ns *netns, dir, name, config string, port int) *registry {
	t.Helper()

	cfg := filepath.Join(dir, name+".yml")
	mustWrite(t, cfg, []byte(config))
	r := &registry{addr: fmt.Sprintf("127.0.0.1:%d", port),
		access: filepath.Join(dir, name+"-access.log"), ns: ns}
	r.d = &daemon{name: "docker-registry " + r.addr + " (" + name + ")",
		log: filepath.Join(dir, name+".log"), stdout: r.access}
	startDaemon(t, r.d, ns.argv("docker-registry", "serve", cfg))
	r.d.waitFor(t, r.d.name, 10*time.Second, func() error {
		return ns.listening(r.d.pid(), port)
	})
	r.d.requireProgram(t, "docker-registry")
	return r
}

// pushImage copies the test image to the registry on port as o names it.
func pushImage(t *testing.T, ns *netns, port int, o regOpts) {
	t.Helper()

	dest := fmt.Sprintf("docker://127.0.0.1:%d/%slibrary/%s:%s", port, o.repoPrefix,
		imageName, imageTag)
	args := []string{"skopeo", "copy", "--quiet", "--dest-tls-verify=false"}
	if o.user != "" {
		args = append(args, "--dest-creds", o.user+":"+o.pass)
	}
	ns.run(t, append(args, "oci:"+imageDir+":"+imageTag, dest)...)
}

// testCA is a certificate authority made for one test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "mirrord e2e CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key,
		pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue writes a certificate for 127.0.0.1 and its key into dir.
func (ca *testCA) issue(t *testing.T, dir string) (certFile, keyFile string) {
	t.Helper()

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	mustWrite(t, certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	mustWrite(t, keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}))
	return certFile, keyFile
}

// mirrordIn runs the mirrord under test with args and env inside ns (or
// outside any namespace when ns is nil) and returns its output and exit
// status, whatever it is.
func mirrordIn(t *testing.T, ns *netns, env []string, args ...string) (stdout, stderr string,
	code int) {
	t.Helper()

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	argv := append([]string{mirrordBin}, args...)
	if ns != nil {
		argv = ns.argv(argv...)
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = cleanEnv(env...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	code = cmd.ProcessState.ExitCode()
	t.Logf("mirrord %s (exit %d):\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code,
		out.String(), errOut.String())
	if err != nil && code < 0 {
		t.Fatalf("mirrord %s: %v", strings.Join(args, " "), err)
	}
	return out.String(), errOut.String(), code
}

// The credentials of the authenticated mirror: none may show outside its
// 0600 hosts.toml.
const (
	e2eUser  = "e2e-robot"
	e2eToken = "e2e-S3CRET-token-4f9c2d"
)

// checkReport is the part of check --json these tests read.
type checkReport struct {
	OK         bool `json:"ok"`
	Registries []struct {
		Host    string `json:"host"`
		OK      bool   `json:"ok"`
		Working int    `json:"working"`
		Mirrors []struct {
			URL     string `json:"url"`
			Status  string `json:"status"`
			Step    string `json:"step"`
			Error   string `json:"error"`
			Auth    string `json:"auth"`
			Digest  string `json:"digest"`
			Latency int64  `json:"latency_ns"`
		} `json:"mirrors"`
	} `json:"registries"`
}

// TestMirrorsThatWork starts, in a network namespace, a plain registry, one
// with htpasswd authentication over TLS with the test's CA, one served
// under a path (http.prefix), one holding the image under a repository
// prefix, and a port where nothing listens. mirrord check reports each
// right; containerd 1.6 pulls through the authenticated mirror and both
// path mirrors with mirrord's hosts.toml, as their access logs show; and no
// command, log or file mirrord wrote shows the credentials.
func TestMirrorsThatWork(t *testing.T) {
	requireE2E(t)
	t.Parallel()

	bin := lookTool(t, "containerd")
	if line, major := toolVersion(t, bin); major != "1" {
		t.Fatalf("containerd in PATH is %q, want 1.x; %s", line, installHint)
	}
	cc := containerdCase{bin: bin, ctr: lookTool(t, "ctr"), crictl: crictl(t)}

	ns := newNetns(t)
	ca := newTestCA(t)
	plain := startRegistryOpts(t, ns, 5300, regOpts{})
	auth := startRegistryOpts(t, ns, 5301, regOpts{ca: ca, user: e2eUser, pass: e2eToken})
	atPath := startRegistryOpts(t, ns, 5302, regOpts{prefix: "/hub/"})
	atPrefix := startRegistryOpts(t, ns, 5303, regOpts{repoPrefix: "cache/"})
	down := "127.0.0.1:5304"

	root := t.TempDir()
	mustWrite(t, filepath.Join(root, "etc/containerd/config.toml"), cc.config(t))
	mustWrite(t, filepath.Join(root, "etc/containerd/certs/e2e-ca.pem"), ca.pem)
	secret := filepath.Join(root, "etc/mirrord/secrets/auth")
	mustWrite(t, secret, []byte(e2eToken+"\n"))
	if err := os.Chmod(secret, 0o600); err != nil {
		t.Fatal(err)
	}

	canary := "library/" + imageName + ":" + imageTag
	authMirror := fmt.Sprintf(`{ url = "https://%s", ca_file = "/etc/containerd/certs/e2e-ca.pem", `+
		`username = %q, password_file = "/etc/mirrord/secrets/auth" }`, auth.addr, e2eUser)
	specFile := filepath.Join(root, "etc/mirrord/mirrord.toml")
	writeSpec := func(mirrors ...string) {
		t.Helper()
		mustWrite(t, specFile, []byte(fmt.Sprintf(`
[registries."docker.io"]
canary = %q
mirrors = [
  %s,
]

[registries."quay.io"]
mirrors = ["http://%s"]

[registries."ghcr.io"]
canary = %q
mirrors = [{ url = "http://localhost:%s", trusted = false }]
`, canary, strings.Join(mirrors, ",\n  "), down, canary, plain.addr[len("127.0.0.1:"):])))
	}
	env := []string{"MIRRORD_RUNTIMES=containerd", "MIRRORD_METADATA=none"}
	outputs := map[string]string{}
	record := func(name, out, errOut string) {
		outputs[name+" stdout"], outputs[name+" stderr"] = out, errOut
	}

	// check: every mirror at once, the down one first.
	untrusted := `{ url = "http://localhost:` + plain.addr[len("127.0.0.1:"):] +
		`", trusted = false }`
	writeSpec(`"http://`+down+`"`, authMirror, `"http://`+atPath.addr+`/hub"`,
		`"http://`+atPrefix.addr+`/v2/cache"`, `"http://`+plain.addr+`"`, untrusted)
	out, errOut, code := mirrordIn(t, ns, env, "check", "--root", root, "--timeout", "3s")
	record("check", out, errOut)
	if code != 1 || !strings.Contains(errOut, "no working mirror for ghcr.io, quay.io") {
		t.Errorf("check: exit %d, stderr %q; want 1 naming ghcr.io and quay.io", code, errOut)
	}
	// An untrusted mirror is asked by the digest a trusted mirror named;
	// alone, with the upstream out of reach, it cannot be tested at all.
	for _, want := range []string{"pull-only mirrors: tags resolved by mirror https://" +
		auth.addr, "UNKNOWN", "resolve: cannot test: the mirror may not resolve tags, and " +
		"no mirror of the registry may resolve tags, and the upstream https://ghcr.io " +
		"cannot resolve them either"} {
		if !strings.Contains(out, want) {
			t.Errorf("check output lacks %q", want)
		}
	}
	js, errJS, _ := mirrordIn(t, ns, env, "check", "--root", root, "--json")
	record("check --json", js, errJS)
	var rep checkReport
	if err := json.Unmarshal([]byte(js), &rep); err != nil {
		t.Fatalf("check --json: %v", err)
	}
	requireCheck(t, rep, map[string]string{
		"http://" + down:                                     "fail connect",
		"https://" + auth.addr:                               "ok basic",
		"http://" + atPath.addr + "/hub":                     "ok none",
		"http://" + atPrefix.addr + "/v2/cache":              "ok none",
		"http://" + plain.addr:                               "ok none",
		"http://localhost:" + plain.addr[len("127.0.0.1:"):]: "ok none",
	})
	auth.requireRequest(t, "HEAD", manifestPath("ns=docker.io"), "mirrord-probe")

	// containerd 1.6 pulls through each mirror in turn, the dead one first.
	var ctrd *containerdProc
	for i, m := range []struct {
		entry string
		reg   *registry
		path  string
	}{
		{authMirror, auth, manifestPath("ns=docker.io")},
		{`"http://` + atPath.addr + `/hub"`, atPath, "/hub" + manifestPath("ns=docker.io")},
		{`"http://` + atPrefix.addr + `/v2/cache"`, atPrefix,
			"/v2/cache/library/" + imageName + "/manifests/" + imageTag + "?ns=docker.io"},
	} {
		writeSpec(`"http://`+down+`"`, m.entry)
		out, errOut = mirrord(t, env, "apply", "--root", root, "--no-reload")
		record(fmt.Sprintf("apply %d", i), out, errOut)
		logHosts(t, root)
		if ctrd == nil {
			ctrd = startContainerd(t, ns, cc, root)
		} else {
			ctrd.crictl(t, "rmi", imageRef)
		}
		ctrd.crictl(t, "pull", imageRef)
		m.reg.requireRequest(t, "HEAD", m.path, "containerd/")
	}

	// containerd's own debug log is not mirrord's to keep clean, but an
	// operator should know whether it shows the header.
	if b, err := os.ReadFile(ctrd.d.log); err == nil {
		shows := false
		for _, f := range e2eForms()[:2] {
			shows = shows || bytes.Contains(b, []byte(f))
		}
		t.Logf("containerd 1.6's debug log shows the credentials: %v", shows)
	}

	// Every other command, the watch among them, with the credentials in
	// the spec; then the search.
	writeSpec(`"http://`+down+`"`, authMirror, `"http://`+plain.addr+`"`)
	for _, args := range [][]string{{"plan"}, {"apply", "--no-reload"}, {"status"},
		{"status", "--json"}} {
		out, errOut = mirrord(t, env, append(args, "--root", root)...)
		record(strings.Join(args, " "), out, errOut)
	}
	record("watch", "", runWatchBriefly(t, ns, env, root))
	out, errOut = mirrord(t, env, "revert", "--root", root)
	record("revert", out, errOut)

	requireNoSecret(t, root, e2eForms(), outputs)
}

// requireCheck fails unless each mirror's status and step (or auth, when
// it works) is as want says, "ok basic" or "fail connect".
func requireCheck(t *testing.T, rep checkReport, want map[string]string) {
	t.Helper()

	got := map[string]string{}
	for _, r := range rep.Registries {
		if r.Host != "docker.io" {
			continue
		}
		for _, m := range r.Mirrors {
			detail := m.Auth
			if m.Status != "ok" {
				detail = m.Step
			} else if m.Digest == "" || m.Latency <= 0 {
				t.Errorf("%s works but reports digest %q, latency %d", m.URL, m.Digest, m.Latency)
			}
			got[m.URL] = m.Status + " " + detail
		}
	}
	for url, w := range want {
		if got[url] != w {
			t.Errorf("check: %s is %q, want %q", url, got[url], w)
		}
	}
}

// logHosts logs the docker.io hosts.toml with its header value masked.
func logHosts(t *testing.T, root string) {
	t.Helper()

	b, err := os.ReadFile(filepath.Join(root, hostsTOML))
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, l := range strings.Split(string(b), "\n") {
		if k, _, ok := strings.Cut(l, "="); ok && strings.TrimSpace(k) == "Authorization" {
			l = k + `= "(masked by the test)"`
		}
		lines = append(lines, l)
	}
	t.Logf("%s:\n%s", hostsTOML, strings.Join(lines, "\n"))
}

// runWatchBriefly runs mirrord watch inside ns until its first passes are
// done and its probes ran, stops it with SIGTERM and returns its log.
func runWatchBriefly(t *testing.T, ns *netns, env []string, root string) string {
	t.Helper()

	dir := t.TempDir()
	d := &daemon{name: "mirrord watch", log: filepath.Join(dir, "watch.log")}
	argv := append([]string{"env"}, env...)
	argv = append(argv, "MIRRORD_PROBE_INTERVAL=1s", "MIRRORD_PROBE_TIMEOUT=1s",
		mirrordBin, "watch", "--root", root, "--no-reload", "--log-level", "debug")
	startDaemon(t, d, ns.argv(argv...))
	d.waitFor(t, "the watch's first probes", 20*time.Second, func() error {
		b, _ := os.ReadFile(d.log)
		if !bytes.Contains(b, []byte("mirrors probed")) {
			return fmt.Errorf("no probes logged yet")
		}
		return nil
	})
	d.stop(t)
	b, err := os.ReadFile(d.log)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// e2eForms are the forms the credentials could leak in.
func e2eForms() []string {
	b64 := base64.StdEncoding.EncodeToString([]byte(e2eUser + ":" + e2eToken))
	return []string{e2eToken, b64, e2eUser}
}

// requireNoSecret fails when a form of the secret is in an output, in a
// file under root that mirrord may have written with a mode other than
// 0600, or anywhere in mirrord's state directory. The operator's own
// files under /etc/mirrord are not searched.
func requireNoSecret(t *testing.T, root string, forms []string, outputs map[string]string) {
	t.Helper()

	for what, text := range outputs {
		for _, f := range forms {
			if strings.Contains(text, f) {
				t.Errorf("%s shows the secret %q", what, f)
			}
		}
	}
	searched := 0
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		inState := strings.HasPrefix(rel, "var/lib/mirrord/")
		if strings.HasPrefix(rel, "etc/mirrord/") || (info.Mode().Perm() == 0o600 && !inState) {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		searched++
		for _, f := range forms {
			if bytes.Contains(b, []byte(f)) {
				t.Errorf("%s (mode %v) holds the secret %q", rel, info.Mode().Perm(), f)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("searched %d outputs and %d files for the credentials", len(outputs), searched)
}
