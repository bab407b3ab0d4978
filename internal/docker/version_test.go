package docker

import (
	"path/filepath"
	"strings"
	"testing"
)

// dpkgStatus is a cut of a Debian 12 dpkg status file: an unrelated
// package, a removed docker-ce, and the installed docker.io.
const dpkgStatus = `Package: containerd
Status: install ok installed
Version: 1.6.20~ds1-1+deb12u1
Description: daemon to control runC
 Multi-line description: Version: 99.1

Package: docker-ce
Status: deinstall ok config-files
Version: 5:24.0.7-1~debian.12~bookworm

Package: docker.io
Status: install ok installed
Priority: optional
Version: 20.10.24+dfsg1-1+deb12u1
`

func TestDetectVersion(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]string
		want  Version
		how   string // with ROOT for the root
	}{
		{name: "nothing", how: "unknown"},
		{
			name: "binary",
			files: map[string]string{"usr/sbin/dockerd": "#!/bin/sh\n" +
				"echo 'Docker version 20.10.24+dfsg1, build 297e128'\n"},
			want: Version{20, 10},
			how:  "ROOT/usr/sbin/dockerd --version",
		},
		{
			name: "binary_beats_dpkg",
			files: map[string]string{
				"usr/bin/dockerd":     "#!/bin/sh\necho 'Docker version 28.3.2, build 578ccf6'\n",
				"var/lib/dpkg/status": dpkgStatus,
			},
			want: Version{28, 3},
			how:  "ROOT/usr/bin/dockerd --version",
		},
		{
			name: "failing_binary_falls_back_to_dpkg",
			files: map[string]string{
				"usr/bin/dockerd":     "#!/bin/sh\nexit 1\n",
				"var/lib/dpkg/status": dpkgStatus,
			},
			want: Version{20, 10},
			how:  "dpkg docker.io 20.10.24+dfsg1-1+deb12u1",
		},
		{
			name: "docker_ce_epoch",
			files: map[string]string{"var/lib/dpkg/status": "Package: docker-ce\n" +
				"Status: install ok installed\nVersion: 5:25.0.3-1~ubuntu.22.04~jammy\n"},
			want: Version{25, 0},
			how:  "dpkg docker-ce 5:25.0.3-1~ubuntu.22.04~jammy",
		},
		{
			name: "only_removed_package",
			files: map[string]string{
				"var/lib/dpkg/status": dpkgStatus[:strings.Index(dpkgStatus, "Package: docker.io")],
			},
			how: "unknown",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			for p, body := range tt.files {
				writeFile(t, filepath.Join(root, p), body)
			}

			v, how := DetectVersion(root)
			wantHow := strings.Replace(tt.how, "ROOT", root, 1)
			if v != tt.want || how != wantHow {
				t.Errorf("DetectVersion = %v, %q; want %v, %q", v, how, tt.want, wantHow)
			}
		})
	}
}

func TestDetectVersionTimeout(t *testing.T) {
	root := t.TempDir()
	writeFile(t, filepath.Join(root, "usr/bin/dockerd"), "#!/bin/sh\nexec sleep 30\n")

	v, how := DetectVersion(root)
	if v.Known() || how != "unknown" {
		t.Errorf("DetectVersion = %v, %q; want unknown", v, how)
	}
}

func TestParseMajorMinor(t *testing.T) {
	tests := []struct {
		in   string
		want Version
		ok   bool
	}{
		{"20.10.24+dfsg1-1", Version{20, 10}, true},
		{"18.09.1~3-0~debian", Version{18, 9}, true},
		{"25.0", Version{25, 0}, true},
		{"25", Version{}, false},
		{"x.1", Version{}, false},
		{"", Version{}, false}, // subtest #00
		{"0.9", Version{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, ok := parseMajorMinor(tt.in)
			if got != tt.want || ok != tt.ok {
				t.Errorf("parseMajorMinor(%q) = %v, %v; want %v, %v", tt.in, got, ok, tt.want, tt.ok)
			}
		})
	}
}
