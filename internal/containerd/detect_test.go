package containerd

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fakeRoot builds a root directory holding the given files, each with its
// mode.
func fakeRoot(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for name, content := range files {
		path := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		mode := os.FileMode(0o644)
		if strings.HasPrefix(content, "#!") {
			mode = 0o755
		}
		if err := os.WriteFile(path, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

const dpkgStatus = `Package: runc
Status: install ok installed
Version: 1.1.5+ds1-1

Package: containerd.io
Status: deinstall ok config-files
Version: 1.7.27-1

Package: containerd
Status: install ok installed
Priority: optional
Version: 1.6.20~ds1-1+deb12u3
Description: daemon to control runC
 containerd is a daemon.
`

func TestDetectMajor(t *testing.T) {
	tests := []struct {
		name      string
		files     map[string]string
		wantMajor int
		wantHow   string
	}{{
		name: "binary_v2",
		files: map[string]string{"usr/local/bin/containerd": "#!/bin/sh\n" +
			"echo 'containerd github.com/containerd/containerd/v2 v2.2.9 0123abc'\n"},
		wantMajor: 2,
		wantHow:   "usr/local/bin/containerd --version reports v2.2.9",
	}, {
		name: "binary_debian",
		files: map[string]string{"usr/bin/containerd": "#!/bin/sh\n" +
			"echo 'containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+deb12u3'\n"},
		wantMajor: 1,
		wantHow:   "--version reports 1.6.20~ds1",
	}, {
		name: "binary_fails_dpkg_answers",
		files: map[string]string{
			"usr/bin/containerd":  "#!/bin/sh\nexit 3\n",
			"var/lib/dpkg/status": dpkgStatus,
		},
		wantMajor: 1,
		wantHow:   "lists containerd 1.6.20~ds1-1+deb12u3",
	}, {
		name: "dpkg_containerd_io_with_epoch",
		files: map[string]string{"var/lib/dpkg/status": "Package: containerd.io\n" +
			"Status: install ok installed\nVersion: 1:2.1.4-1~debian.12~bookworm\n"},
		wantMajor: 2,
		wantHow:   "lists containerd.io 1:2.1.4-1~debian.12~bookworm",
	}, {
		name:      "nothing",
		files:     map[string]string{"etc/hostname": "node\n"},
		wantMajor: 0,
		wantHow:   "unknown; assumed config version 2",
	}, {
		name:      "binary_without_version",
		files:     map[string]string{"usr/bin/containerd": "#!/bin/sh\necho hello\n"},
		wantMajor: 0,
		wantHow:   "no version in \"hello\"); assumed config version 2",
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			major, how := DetectMajor(fakeRoot(t, tt.files))
			if major != tt.wantMajor || !strings.Contains(how, tt.wantHow) {
				t.Errorf("DetectMajor = %d, %q; want %d, containing %q",
					major, how, tt.wantMajor, tt.wantHow)
			}
		})
	}
}

func TestMajorOf(t *testing.T) {
	for in, want := range map[string]int{
		"1.6.20~ds1": 1, "v2.2.9": 2, "2.2.9+unknown": 2, "1:1.7.24-1": 1,
		"github.com/containerd/containerd/v2": 0, "v2": 0, "abc": 0, "0.1.0": 0,
	} {
		if got, _ := majorOf(in); got != want {
			t.Errorf("majorOf(%q) = %d; want %d", in, got, want)
		}
	}
}
