package main

import (
	"context"
	"encoding/base64"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mirrord/mirrord/internal/logging"
)

// The credentials of the leak tests: each must never show outside the 0600
// hosts.toml that carries them.
const (
	leakUser   = "robot-leak-user"
	leakToken  = "glpat-LEAK-0123456789abcdef"
	leakToken2 = "glpat-ROTATED-fedcba9876543210"
)

// leakSpec is a spec with one mirror that has credentials from a file and
// one from the environment.
const leakSpec = `[registries."docker.io"]
mirrors = [
  { url = "gitlab:gitlab.example.net/platform", username = "` + leakUser + `",
    password_file = "/etc/mirrord/secrets/gitlab" },
  "https://mirror.gcr.io",
]

[registries."quay.io"]
mirrors = [{ url = "https://quay-cache.example.net", username = "` + leakUser + `",
  password_env = "MIRRORD_TEST_QUAY_TOKEN" }]
`

// secretForms are the forms a credential could leak in: as given, and as
// the header value and its base64 alone.
func secretForms(user string, tokens ...string) []string {
	forms := []string{user}
	for _, tok := range tokens {
		b64 := base64.StdEncoding.EncodeToString([]byte(user + ":" + tok))
		forms = append(forms, tok, b64, "Basic "+b64)
	}
	return forms
}

// leakNode is the sample node with leakSpec and its secrets in place.
func leakNode(t *testing.T) string {
	t.Helper()
	root := node(t)
	write := func(rel, content string, mode os.FileMode) {
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
	}
	write("etc/mirrord/mirrord.toml", leakSpec, 0o644)
	write("etc/mirrord/secrets/gitlab", leakToken+"\n", 0o600)
	t.Setenv("MIRRORD_TEST_QUAY_TOKEN", leakToken)
	return root
}

// requireNoLeak fails the test when any form of a secret is in one of the
// outputs, in a file under root whose mode is not 0600, or in any file of
// mirrord's state directory. The operator's own files under /etc/mirrord,
// which name the user, are not mirrord's to search.
func requireNoLeak(t *testing.T, root string, forms []string, outputs map[string]string) {
	t.Helper()
	for what, text := range outputs {
		for _, f := range forms {
			if strings.Contains(text, f) {
				t.Errorf("%s shows the secret %q:\n%s", what, f, text)
			}
		}
	}

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
		if (info.Mode().Perm() == 0o600 && !inState) || strings.HasPrefix(rel, "etc/mirrord/") {
			return nil
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		for _, f := range forms {
			if strings.Contains(string(data), f) {
				t.Errorf("%s (mode %v) holds the secret %q", rel, info.Mode().Perm(), f)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestSecretNeverShown runs every command that reads the spec on a node
// whose mirrors have credentials and searches what they print, what they
// log and what they leave on the node for the credentials.
func TestSecretNeverShown(t *testing.T) {
	clearEnv(t)
	root := leakNode(t)
	outputs := map[string]string{}
	runCmd := func(args ...string) string {
		t.Helper()
		code, out, errOut := mirrord(t, append(args, "--root", root, "--log-level", "debug")...)
		name := strings.Join(args, " ")
		outputs[name+" stdout"], outputs[name+" stderr"] = out, errOut
		if code != 0 {
			t.Fatalf("%s: exit %d: %s", name, code, errOut)
		}
		return out
	}

	plan := runCmd("plan")
	if !strings.Contains(plan, `Authorization = "(secret)"`) {
		t.Errorf("plan does not show the masked header:\n%s", plan)
	}
	runCmd("apply", "--no-reload")
	hosts := filepath.Join(root, "etc/containerd/certs.d/docker.io/hosts.toml")
	if got := mode(t, hosts); got != 0o600 {
		t.Errorf("%s has mode %v, want 0600", hosts, got)
	}
	if data := read(t, hosts); !strings.Contains(data, secretForms(leakUser, leakToken)[3]) {
		t.Errorf("%s lacks the Authorization header:\n%s", hosts, data)
	}
	runCmd("status")
	runCmd("status", "--json")
	runCmd("apply", "--no-reload")

	// A widened mode is repaired, and the plan says so without a diff.
	if err := os.Chmod(hosts, 0o644); err != nil {
		t.Fatal(err)
	}
	if out := runCmd("plan"); !strings.Contains(out, "mode becomes 0600") {
		t.Errorf("plan of a widened hosts.toml:\n%s", out)
	}
	runCmd("apply", "--no-reload")
	if got := mode(t, hosts); got != 0o600 {
		t.Errorf("after a chmod 644 and apply, %s has mode %v, want 0600", hosts, got)
	}

	// A new token: the plan names the change without showing either.
	if err := os.WriteFile(filepath.Join(root, "etc/mirrord/secrets/gitlab"),
		[]byte(leakToken2), 0o600); err != nil {
		t.Fatal(err)
	}
	if out := runCmd("plan"); !strings.Contains(out, "credentials changed (not shown)") {
		t.Errorf("plan of a new token:\n%s", out)
	}
	runCmd("apply", "--no-reload")
	runCmd("revert")

	requireNoLeak(t, root, secretForms(leakUser, leakToken, leakToken2), outputs)
	if _, err := os.Stat(hosts); err == nil {
		t.Errorf("revert left %s", hosts)
	}
}

func mode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

// TestWatchFollowsPasswordFile changes the token file under a running
// watch: hosts.toml gets the new header at once and no action is asked for.
func TestWatchFollowsPasswordFile(t *testing.T) {
	clearEnv(t)
	root := leakNode(t)
	var logs syncBuffer
	log := logging.New(&logs, slog.LevelDebug, false)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- watchCmd(ctx, options{root: root, noReload: true}, nil, log)
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("watch: %v", err)
		}
		requireNoLeak(t, root, secretForms(leakUser, leakToken, leakToken2),
			map[string]string{"watch log": logs.String()})
		if t.Failed() {
			t.Logf("log:\n%s", logs.String())
		}
	}()

	hosts := filepath.Join(root, "etc/containerd/certs.d/docker.io/hosts.toml")
	oldHeader, newHeader := secretForms(leakUser, leakToken)[3], secretForms(leakUser, leakToken2)[3]
	eventually(t, "first pass wrote the header", func() bool {
		return strings.Contains(read(t, hosts), oldHeader)
	})
	restarts := strings.Count(logs.String(), "restart containerd")

	began := time.Now()
	secret := filepath.Join(root, "etc/mirrord/secrets/gitlab")
	if err := os.WriteFile(secret, []byte(leakToken2+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	eventually(t, "hosts.toml has the new token", func() bool {
		return strings.Contains(read(t, hosts), newHeader)
	})
	t.Logf("re-rendered %v after the token file changed", time.Since(began))

	if got := strings.Count(logs.String(), "restart containerd"); got != restarts {
		t.Errorf("a new token asked for a containerd restart:\n%s", logs.String())
	}
	if got := mode(t, hosts); got != 0o600 {
		t.Errorf("%s has mode %v, want 0600", hosts, got)
	}

	// A widened mode is drift, repaired at once.
	if err := os.Chmod(hosts, 0o644); err != nil {
		t.Fatal(err)
	}
	eventually(t, "hosts.toml back to 0600", func() bool { return mode(t, hosts) == 0o600 })
}
