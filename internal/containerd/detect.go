package containerd

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// binDirs are where DetectMajor looks for the containerd binary, relative
// to the root, in order.
var binDirs = []string{"usr/bin", "usr/local/bin", "usr/sbin", "bin"}

// versionTimeout bounds `containerd --version`.
const versionTimeout = 2 * time.Second

// dpkgPackages are the Debian packages that install containerd.
var dpkgPackages = []string{"containerd", "containerd.io"}

// DetectMajor returns the major version of the containerd installed under
// root (1 or 2, or whatever a later release reports) and how it was found,
// for the log. It runs the first containerd binary it finds under root with
// --version (bounded by 2 s), and when that fails reads dpkg's status file
// for the containerd or containerd.io package. When neither answers it
// returns 0 with how saying that config version 2 was assumed, the version
// both majors read. It reads and runs nothing else.
func DetectMajor(root string) (major int, how string) {
	var failed []string
	for _, dir := range binDirs {
		bin := filepath.Join(root, dir, "containerd")
		if fi, err := os.Stat(bin); err != nil || !fi.Mode().IsRegular() {
			continue
		}
		v, err := runVersion(bin)
		if err == nil {
			if m, ok := majorOf(v); ok {
				return m, fmt.Sprintf("%s --version reports %s", bin, v)
			}
			err = fmt.Errorf("no version in its output")
		}
		failed = append(failed, fmt.Sprintf("%s --version: %v", bin, err))
		break
	}

	status := filepath.Join(root, "var/lib/dpkg/status")
	if pkg, v, ok := dpkgVersion(status); ok {
		if m, ok := majorOf(v); ok {
			return m, fmt.Sprintf("%s lists %s %s", status, pkg, v)
		}
	}

	if len(failed) > 0 {
		return 0, fmt.Sprintf("unknown (%s); assumed config version 2",
			strings.Join(failed, "; "))
	}
	return 0, "unknown; assumed config version 2"
}

// runVersion runs bin --version and returns the version word of its output,
// as in "containerd github.com/containerd/containerd/v2 2.2.9 <commit>".
func runVersion(bin string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), versionTimeout)
	defer cancel()

	cmd := exec.CommandContext(ctx, bin, "--version")
	cmd.WaitDelay = versionTimeout / 4 // a child left holding stdout cannot stall us
	out, err := cmd.Output()
	if ctx.Err() != nil {
		return "", fmt.Errorf("no answer within %s", versionTimeout)
	}
	if err != nil {
		return "", err
	}
	fields := strings.Fields(string(out))
	for _, f := range fields[min(1, len(fields)):] {
		if _, ok := majorOf(f); ok {
			return f, nil
		}
	}
	return "", fmt.Errorf("no version in %q", bytes.TrimSpace(out))
}

// majorOf reads the major number of a version such as "v2.2.9",
// "1.6.20~ds1" or the Debian "1:1.7.24-1": digits, then a dot.
func majorOf(v string) (int, bool) {
	if _, after, ok := strings.Cut(v, ":"); ok {
		v = after
	}
	v = strings.TrimPrefix(v, "v")
	digits, rest, ok := strings.Cut(v, ".")
	if !ok || rest == "" || rest[0] < '0' || rest[0] > '9' {
		return 0, false
	}
	n, err := strconv.Atoi(digits)
	if err != nil || n < 1 {
		return 0, false
	}
	return n, true
}

// dpkgVersion returns the installed version of the first package of
// dpkgPackages that the dpkg status file lists as installed.
func dpkgVersion(status string) (pkg, version string, ok bool) {
	data, err := os.ReadFile(status)
	if err != nil {
		return "", "", false
	}

	found := map[string]string{}
	for _, stanza := range bytes.Split(data, []byte("\n\n")) {
		var name, state, ver string
		sc := bufio.NewScanner(bytes.NewReader(stanza))
		sc.Buffer(nil, len(stanza)+1)
		for sc.Scan() {
			k, v, _ := strings.Cut(sc.Text(), ":")
			switch k {
			case "Package":
				name = strings.TrimSpace(v)
			case "Status":
				state = strings.TrimSpace(v)
			case "Version":
				ver = strings.TrimSpace(v)
			}
		}
		if strings.HasSuffix(state, " installed") && ver != "" {
			found[name] = ver
		}
	}
	for _, p := range dpkgPackages {
		if v, ok := found[p]; ok {
			return p, v, true
		}
	}
	return "", "", false
}
