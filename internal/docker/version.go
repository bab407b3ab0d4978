package docker

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// binDirs are where DetectVersion looks for dockerd under the root.
var binDirs = []string{"usr/bin", "usr/sbin", "usr/local/bin", "bin"}

// dpkgPackages are the Debian packages that ship dockerd.
var dpkgPackages = []string{"docker.io", "docker-ce"}

// versionTimeout bounds `dockerd --version`.
const versionTimeout = 2 * time.Second

// versionRE finds major.minor in "Docker version 20.10.24+dfsg1, build …".
var versionRE = regexp.MustCompile(`Docker version (\d+)\.(\d+)`)

// DetectVersion finds the dockerd release under root. It runs the first
// dockerd found in usr/bin, usr/sbin, usr/local/bin or bin with --version
// (for at most 2 s); failing that it reads the docker.io or docker-ce entry
// of var/lib/dpkg/status. how says which answered, for logs and warnings:
// "/usr/bin/dockerd --version", "dpkg docker.io 20.10.24+dfsg1-1", or
// "unknown" with the zero Version.
func DetectVersion(root string) (v Version, how string) {
	root = rootDir(root)
	for _, dir := range binDirs {
		bin := filepath.Join(root, dir, "dockerd")
		if fi, err := os.Stat(bin); err != nil || !fi.Mode().IsRegular() || fi.Mode()&0o111 == 0 {
			continue
		}
		if v, ok := runVersion(bin); ok {
			return v, bin + " --version"
		}
		break
	}

	data, err := os.ReadFile(filepath.Join(root, "var/lib/dpkg/status"))
	if err == nil {
		if v, pkg, full, ok := dpkgVersion(data); ok {
			return v, fmt.Sprintf("dpkg %s %s", pkg, full)
		}
	}
	return Version{}, "unknown"
}

// runVersion runs `bin --version` and parses its output.
func runVersion(bin string) (Version, bool) {
	ctx, cancel := context.WithTimeout(context.Background(), versionTimeout)
	defer cancel()

	cmd := exec.CommandContext(ctx, bin, "--version")
	cmd.WaitDelay = 100 * time.Millisecond // a child holding stdout must not hang us
	out, err := cmd.Output()
	if err != nil {
		return Version{}, false
	}
	m := versionRE.FindSubmatch(out)
	if m == nil {
		return Version{}, false
	}
	return parseMajorMinor(string(m[1]) + "." + string(m[2]))
}

// dpkgVersion finds an installed dockerd package in a dpkg status file and
// returns its release, its name and its full version string.
func dpkgVersion(status []byte) (v Version, pkg, full string, ok bool) {
	for _, para := range bytes.Split(status, []byte("\n\n")) {
		fields := map[string]string{}
		sc := bufio.NewScanner(bytes.NewReader(para))
		sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
		for sc.Scan() {
			if k, val, found := strings.Cut(sc.Text(), ":"); found && !strings.HasPrefix(k, " ") {
				fields[k] = strings.TrimSpace(val)
			}
		}

		name := fields["Package"]
		installed := strings.HasSuffix(fields["Status"], " installed")
		if !slices.Contains(dpkgPackages, name) || !installed {
			continue
		}
		// "5:24.0.7-1~debian.12~bookworm": drop the epoch.
		full = fields["Version"]
		_, upstream, found := strings.Cut(full, ":")
		if !found {
			upstream = full
		}
		if v, ok := parseMajorMinor(upstream); ok {
			return v, name, full, true
		}
	}
	return Version{}, "", "", false
}

// parseMajorMinor reads the leading "major.minor" of s; "18.09.1~3" gives
// 18.9.
func parseMajorMinor(s string) (Version, bool) {
	major, rest, ok := strings.Cut(s, ".")
	if !ok {
		return Version{}, false
	}
	end := 0
	for end < len(rest) && '0' <= rest[end] && rest[end] <= '9' {
		end++
	}
	maj, err1 := strconv.Atoi(major)
	minor, err2 := strconv.Atoi(rest[:end])
	if err1 != nil || err2 != nil || maj <= 0 {
		return Version{}, false
	}
	return Version{Major: maj, Minor: minor}, true
}
