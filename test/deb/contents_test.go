package debtest

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"debug/buildinfo"
	"debug/elf"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// wantFiles is every entry of the deb with its mode as dpkg-deb -c prints
// it; every entry is owned by root.
var wantFiles = map[string]string{
	"./etc/":                     "drwxr-xr-x",
	"./etc/default/":             "drwxr-xr-x",
	"./etc/default/mirrord":      "-rw-r--r--",
	"./etc/mirrord/":             "drwxr-xr-x",
	"./etc/mirrord/conf.d/":      "drwxr-xr-x",
	"./etc/mirrord/mirrord.toml": "-rw-r--r--",
	"./usr/":                     "drwxr-xr-x",
	"./usr/bin/":                 "drwxr-xr-x",
	"./usr/bin/mirrord":          "-rwxr-xr-x",
	"./usr/lib/":                 "drwxr-xr-x",
	"./usr/lib/systemd/":         "drwxr-xr-x",
	"./usr/lib/systemd/system/":  "drwxr-xr-x",
	"./usr/lib/systemd/system/mirrord-watch.service": "-rw-r--r--",
	"./usr/lib/systemd/system/mirrord.service":       "-rw-r--r--",
	"./usr/share/":                          "drwxr-xr-x",
	"./usr/share/doc/":                      "drwxr-xr-x",
	"./usr/share/doc/mirrord/":              "drwxr-xr-x",
	"./usr/share/doc/mirrord/changelog.gz":  "-rw-r--r--",
	"./usr/share/doc/mirrord/copyright":     "-rw-r--r--",
	"./usr/share/lintian/":                  "drwxr-xr-x",
	"./usr/share/lintian/overrides/":        "drwxr-xr-x",
	"./usr/share/lintian/overrides/mirrord": "-rw-r--r--",
	"./usr/share/man/":                      "drwxr-xr-x",
	"./usr/share/man/man8/":                 "drwxr-xr-x",
	"./usr/share/man/man8/mirrord.8.gz":     "-rw-r--r--",
}

// shipped maps files of the deb to the file of the tree they must equal.
var shipped = map[string]string{
	"etc/default/mirrord":                          "packaging/deb/default",
	"etc/mirrord/mirrord.toml":                     "packaging/deb/mirrord.toml",
	"usr/lib/systemd/system/mirrord.service":       "packaging/systemd/mirrord.service",
	"usr/lib/systemd/system/mirrord-watch.service": "packaging/systemd/mirrord-watch.service",
	"usr/share/doc/mirrord/copyright":              "packaging/deb/copyright",
	"usr/share/lintian/overrides/mirrord":          "packaging/deb/lintian-overrides",
	"DEBIAN/postinst":                              "packaging/deb/postinst",
	"DEBIAN/prerm":                                 "packaging/deb/prerm",
	"DEBIAN/postrm":                                "packaging/deb/postrm",
}

func TestFiles(t *testing.T) {
	requireDebs(t)

	for _, p := range pkgs {
		t.Run(p.arch, func(t *testing.T) {
			out, err := exec.Command("dpkg-deb", "-c", p.deb).Output()
			if err != nil {
				t.Fatalf("dpkg-deb -c %s: %v", p.deb, err)
			}
			got := map[string]string{}
			for line := range strings.Lines(string(out)) {
				// perm owner/group size date time path
				f := strings.Fields(line)
				if len(f) != 6 {
					t.Fatalf("dpkg-deb -c: unexpected line %q", line)
				}
				if f[1] != "root/root" {
					t.Errorf("%s owned by %s, want root/root", f[5], f[1])
				}
				got[f[5]] = f[0]
			}
			if diff := cmp.Diff(wantFiles, got); diff != "" {
				t.Errorf("files of %s (-want +got):\n%s", p.deb, diff)
			}

			for inDeb, src := range shipped {
				want, err := os.ReadFile(filepath.Join(repoRoot, src))
				if err != nil {
					t.Fatal(err)
				}
				if got := readTree(t, p, inDeb); got != string(want) {
					t.Errorf("%s in the deb differs from %s", inDeb, src)
				}
			}
		})
	}
}

func TestControl(t *testing.T) {
	requireDebs(t)

	for _, p := range pkgs {
		t.Run(p.arch, func(t *testing.T) {
			control := fields(readTree(t, p, "DEBIAN/control"))
			version := control["Version"]
			if !regexp.MustCompile(`^[0-9][A-Za-z0-9.+~]*$`).MatchString(version) {
				t.Errorf("Version %q: want a native Debian version", version)
			}
			want := map[string]string{
				"Package":      "mirrord",
				"Version":      version,
				"Architecture": p.arch,
				"Section":      "admin",
				"Priority":     "optional",
				"Depends":      "init-system-helpers (>= 1.54)",
			}
			got := map[string]string{}
			for k := range want {
				got[k] = control[k]
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("control fields (-want +got):\n%s", diff)
			}
			if !strings.HasPrefix(p.deb, filepath.Dir(p.deb)+"/mirrord_"+version+"_") {
				t.Errorf("deb %s is not named after version %s", p.deb, version)
			}

			conffiles := strings.Fields(readTree(t, p, "DEBIAN/conffiles"))
			slices.Sort(conffiles)
			wantConf := []string{"/etc/default/mirrord", "/etc/mirrord/mirrord.toml"}
			if diff := cmp.Diff(wantConf, conffiles); diff != "" {
				t.Errorf("conffiles (-want +got):\n%s", diff)
			}

			for _, s := range []string{"postinst", "prerm", "postrm"} {
				fi, err := os.Stat(filepath.Join(p.tree, "DEBIAN", s))
				if err != nil {
					t.Errorf("maintainer script %s: %v", s, err)
				} else if fi.Mode().Perm() != 0o755 {
					t.Errorf("maintainer script %s: mode %v, want 0755", s, fi.Mode().Perm())
				}
			}

			// The changelog's top entry is the package's version.
			log := gunzip(t, filepath.Join(p.tree, "usr/share/doc/mirrord/changelog.gz"))
			first, _, _ := strings.Cut(log, "\n")
			if !strings.HasPrefix(first, "mirrord ("+version+") ") {
				t.Errorf("changelog.gz starts %q, want the entry of %s", first, version)
			}
		})
	}
}

func TestStaticBinary(t *testing.T) {
	requireDebs(t)
	copyrightMods := copyrightModules(t)

	for _, p := range pkgs {
		t.Run(p.arch, func(t *testing.T) {
			bin := filepath.Join(p.tree, "usr/bin/mirrord")
			f, err := elf.Open(bin)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()

			wantMachine := map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}
			if f.Machine != wantMachine[p.arch] {
				t.Errorf("ELF machine %v, want %v", f.Machine, wantMachine[p.arch])
			}
			for _, prog := range f.Progs {
				if prog.Type == elf.PT_INTERP || prog.Type == elf.PT_DYNAMIC {
					t.Errorf("program header %v: the binary is dynamically linked", prog.Type)
				}
			}

			info, err := buildinfo.ReadFile(bin)
			if err != nil {
				t.Fatal(err)
			}
			settings := map[string]string{}
			for _, s := range info.Settings {
				settings[s.Key] = s.Value
			}
			for k, v := range map[string]string{"CGO_ENABLED": "0", "-trimpath": "true",
				"GOARCH": p.arch, "GOOS": "linux"} {
				if settings[k] != v {
					t.Errorf("build setting %s = %q, want %q", k, settings[k], v)
				}
			}
			// -trimpath keeps -ldflags out of the build info, so look for
			// the stamped version in the binary itself.
			version := fields(readTree(t, p, "DEBIAN/control"))["Version"]
			if data, err := os.ReadFile(bin); err != nil {
				t.Fatal(err)
			} else if !bytes.Contains(data, []byte(version)) {
				t.Errorf("the binary does not hold its version %s", version)
			}

			// Every module compiled in is named in the copyright file, and
			// the file names no module that is not.
			var deps []string
			for _, d := range info.Deps {
				deps = append(deps, d.Path)
			}
			slices.Sort(deps)
			if diff := cmp.Diff(copyrightMods, deps); diff != "" {
				t.Errorf("modules in packaging/deb/copyright (-) and in the binary (+):\n%s",
					diff)
			}
		})
	}
}

func TestVersionCommand(t *testing.T) {
	requireDebs(t)
	p := hostPkg(t)

	out, err := exec.Command(filepath.Join(p.tree, "usr/bin/mirrord"), "version").Output()
	if err != nil {
		t.Fatalf("mirrord version: %v", err)
	}
	version := fields(readTree(t, p, "DEBIAN/control"))["Version"]
	first, _, _ := strings.Cut(string(out), "\n")
	if first != "mirrord "+version {
		t.Errorf("mirrord version prints %q, want \"mirrord %s\":\n%s", first, version, out)
	}
	if strings.Contains(string(out), "unknown") {
		t.Errorf("mirrord version leaves a field unknown:\n%s", out)
	}
}

// copyrightModules returns the Go modules the copyright file lists in its
// Files: fields (patterns "MODULE/*"), sorted; go/src/* is the standard
// library and * mirrord's own code.
func copyrightModules(t *testing.T) []string {
	t.Helper()

	data, err := os.ReadFile(filepath.Join(repoRoot, "packaging/deb/copyright"))
	if err != nil {
		t.Fatal(err)
	}
	var mods []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		pattern, ok := strings.CutPrefix(sc.Text(), "Files: ")
		if !ok || pattern == "*" || pattern == "go/src/*" {
			continue
		}
		mod, ok := strings.CutSuffix(pattern, "/*")
		if !ok {
			t.Errorf("packaging/deb/copyright: Files: %s: want MODULE/*", pattern)
		}
		mods = append(mods, mod)
	}
	slices.Sort(mods)
	return mods
}

// fields parses a control file's fields; continuation lines are dropped.
func fields(control string) map[string]string {
	out := map[string]string{}
	for line := range strings.Lines(control) {
		k, v, ok := strings.Cut(strings.TrimRight(line, "\n"), ": ")
		if ok && !strings.HasPrefix(k, " ") {
			out[k] = v
		}
	}
	return out
}

// readTree returns a file of the unpacked deb.
func readTree(t *testing.T, p pkg, path string) string {
	t.Helper()

	b, err := os.ReadFile(filepath.Join(p.tree, path))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// gunzip returns the content of a gzipped file.
func gunzip(t *testing.T, path string) string {
	t.Helper()

	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()

	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	b, err := io.ReadAll(zr)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return string(b)
}

func TestReproducible(t *testing.T) {
	requireDebs(t)

	// A second build of the same tree gives the same bytes: every time
	// stamp is the commit's.
	dir := t.TempDir()
	cmd := exec.Command("bash", buildScript)
	cmd.Env = append(os.Environ(), "DIST="+dir, "ARCHES="+strings.Join(arches, " "))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("scripts/build-deb.sh: %v\n%s", err, out)
	}
	for _, p := range pkgs {
		first, err := os.ReadFile(p.deb)
		if err != nil {
			t.Fatal(err)
		}
		second, err := os.ReadFile(filepath.Join(dir, filepath.Base(p.deb)))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(first, second) {
			t.Errorf("%s: a second build differs", filepath.Base(p.deb))
		}
	}
}
