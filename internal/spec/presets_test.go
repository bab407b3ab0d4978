package spec

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

func TestExpandPreset(t *testing.T) {
	tests := []struct {
		raw, host, want, wantErr string
	}{
		{raw: "google", host: "docker.io", want: "https://mirror.gcr.io"},
		{raw: "ecr-public", host: "docker.io", want: "https://public.ecr.aws/v2/docker"},
		{raw: "gitlab:gitlab.example.net/platform/infra", host: "docker.io",
			want: "https://gitlab.example.net/v2/platform/infra/dependency_proxy/containers"},
		{raw: "gitlab:GitLab.Example.NET:8443/platform", host: "docker.io",
			want: "https://gitlab.example.net:8443/v2/platform/dependency_proxy/containers"},
		{raw: "harbor:harbor.example.net/quay-proxy", host: "quay.io",
			want: "https://harbor.example.net/v2/quay-proxy"},
		{raw: "artifactory:art.example.net/docker-remote", host: "*",
			want: "https://art.example.net/v2/docker-remote"},
		{raw: "google", host: "quay.io", wantErr: "preset google mirrors docker.io only, not quay.io"},
		{raw: "google:x", host: "docker.io", wantErr: "preset google takes no argument"},
		{raw: "gitlab", host: "docker.io", wantErr: "preset gitlab needs HOST/GROUP"},
		{raw: "gitlab:gitlab.example.net/", host: "docker.io", wantErr: "preset gitlab needs HOST/GROUP"},
		{raw: "harbor:a b/p", host: "docker.io", wantErr: `preset harbor: "a b" is not a host`},
		{raw: "harbor:h.example.net/Proj", host: "docker.io", wantErr: `preset harbor: path "Proj" is not a repository path`},
		{raw: "harbor:h.example.net/v2", host: "docker.io", wantErr: `preset harbor: path "v2" is not a repository path`},
		{raw: "gcr", host: "docker.io", wantErr: "neither a URL nor a preset"},
	}
	for _, tt := range tests {
		t.Run(strings.NewReplacer("/", "_", ":", "_", " ", "_").Replace(tt.raw), func(t *testing.T) {
			got, err := ExpandPreset(tt.raw, tt.host)
			if tt.wantErr != "" {
				if err == nil || !strings.HasPrefix(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want prefix %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("got %q, %v; want %q", got, err, tt.want)
			}
			if _, err := ValidateMirrorURL(got); err != nil {
				t.Errorf("expansion %q is not a valid mirror URL: %v", got, err)
			}
		})
	}
}

func TestParseCanary(t *testing.T) {
	digest := "sha256:" + strings.Repeat("ab", 32)
	for _, ok := range [][2]string{
		{"library/busybox:latest", "docker.io"}, {"pause:3.10", "registry.k8s.io"},
		{"library/busybox@" + digest, "docker.io"}, {"quay.io/prometheus/busybox:latest", "*"},
		{"127.0.0.1:5000/library/x:v1", "*"},
	} {
		if _, err := ParseCanary(ok[0], ok[1]); err != nil {
			t.Errorf("ParseCanary(%q, %q): %v", ok[0], ok[1], err)
		}
	}
	for _, bad := range [][2]string{
		{"library/busybox", "docker.io"}, {"Library/busybox:latest", "docker.io"},
		{"busybox:lat est", "docker.io"}, {"busybox@sha256:xyz", "docker.io"},
		{"library/busybox:latest", "*"}, {"host:5000/x", "docker.io"},
	} {
		if _, err := ParseCanary(bad[0], bad[1]); err == nil {
			t.Errorf("ParseCanary(%q, %q) succeeded", bad[0], bad[1])
		}
	}

	reg, repo, ref := SplitCanary("127.0.0.1:5000/library/x:v1", true)
	if reg != "127.0.0.1:5000" || repo != "library/x" || ref != "v1" {
		t.Errorf("SplitCanary = %q %q %q", reg, repo, ref)
	}
	if _, repo, ref := SplitCanary("x/y@"+digest, false); repo != "x/y" || ref != digest {
		t.Errorf("SplitCanary digest = %q %q", repo, ref)
	}
}

// A Secret never prints, whatever prints the struct it is in.
func TestSecretRedacted(t *testing.T) {
	a := &Auth{Username: "u", Password: NewSecret("hunter2-value"), Key: KeyPasswordEnv, Name: "T"}
	m := Mirror{URL: "https://m.example.net", Auth: a}
	var logs bytes.Buffer
	slog.New(slog.NewTextHandler(&logs, nil)).Info("x", "secret", a.Password, "auth", *a)
	js, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}

	for what, text := range map[string]string{
		"%v": fmt.Sprintf("%v", *a), "%+v": fmt.Sprintf("%+v", *a), "%#v": fmt.Sprintf("%#v", *a),
		"%s": fmt.Sprintf("%s", a.Password), "%q": fmt.Sprintf("%q", a.Password),
		"%x": fmt.Sprintf("%x", a.Password), "json": string(js), "slog": logs.String(),
		"header": fmt.Sprint(a.Header()),
	} {
		if strings.Contains(text, "hunter2") || strings.Contains(text, "aHVudGVy") {
			t.Errorf("%s shows the secret: %s", what, text)
		}
	}
	if a.Password.Reveal() != "hunter2-value" {
		t.Error("Reveal lost the value")
	}
}

func TestIsPathSegment(t *testing.T) {
	for _, ok := range []string{"a", "library", "a.b", "a_b", "a__b", "a-b", "a---b", "x9"} {
		if !isPathSegment(ok) {
			t.Errorf("isPathSegment(%q) = false", ok)
		}
	}
	for _, bad := range []string{"", "A", "-a", "a-", "a..b", "a___b", "a._b", "a b", "a/b", "_a"} {
		if isPathSegment(bad) {
			t.Errorf("isPathSegment(%q) = true", bad)
		}
	}
}
