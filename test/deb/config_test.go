package debtest

import (
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/mirrord/mirrord/internal/config"
)

// exampleNode is the sample node the conffiles are tried on.
const exampleNode = "../../examples/node"

// helpVar matches a variable in "mirrord help".
var helpVar = regexp.MustCompile(`\bMIRRORD_[A-Z0-9_]+\b`)

// envVars returns every variable mirrord reads: the fields of config.Env,
// and those the commands read themselves (the watch's, for one), as
// "mirrord help" of the packaged binary lists them.
func envVars(t *testing.T, p pkg) []string {
	t.Helper()

	vars := helpVar.FindAllString(runMirrord(t, p, nil, "help"), -1)
	typ := reflect.TypeFor[config.Env]()
	for i := range typ.NumField() {
		if tag := typ.Field(i).Tag.Get("envconfig"); tag != "" {
			vars = append(vars, "MIRRORD_"+tag)
		}
	}
	slices.Sort(vars)
	return slices.Compact(vars)
}

func TestConffilesChangeNothing(t *testing.T) {
	requireDebs(t)
	p := hostPkg(t)

	// The sample node with the packaged files in place of its own spec.
	root := t.TempDir()
	if err := os.CopyFS(root, os.DirFS(exampleNode)); err != nil {
		t.Fatal(err)
	}
	install(t, p, root, "etc/mirrord/mirrord.toml")
	install(t, p, root, "etc/default/mirrord")
	before := tree(t, root)

	env := defaultsEnv(t, readTree(t, p, "etc/default/mirrord"), false)
	if len(env) != 0 {
		t.Errorf("/etc/default/mirrord as shipped sets %v, want nothing", env)
	}
	out := runMirrord(t, p, env, "apply", "--root", root)
	if !strings.Contains(out, "no file changes") {
		t.Errorf("apply with the packaged conffiles: want no file changes:\n%s", out)
	}
	if diff := diffTrees(before, tree(t, root)); diff != "" {
		t.Errorf("apply with the packaged conffiles changed the node:\n%s", diff)
	}
}

func TestConffileExamplesValid(t *testing.T) {
	requireDebs(t)
	p := hostPkg(t)

	root := t.TempDir()
	if err := os.CopyFS(root, os.DirFS(exampleNode)); err != nil {
		t.Fatal(err)
	}

	// mirrord.toml with its examples taken out of their comments, and the
	// token file its credentials example names.
	toml := uncommentTOML(readTree(t, p, "etc/mirrord/mirrord.toml"))
	secret := filepath.Join(root, "etc/mirrord/secrets/gitlab")
	if err := os.MkdirAll(filepath.Dir(secret), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(secret, []byte("example-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "etc/mirrord/mirrord.toml"), []byte(toml),
		0o644); err != nil {
		t.Fatal(err)
	}
	out := runMirrord(t, p, nil, "plan", "--root", root)
	if strings.Contains(out, "example-token") {
		t.Errorf("plan shows the token:\n%s", out)
	}
	for _, want := range []string{"docker.io", "quay.io", "_default",
		"https://gitlab.example.net/v2/platform/dependency_proxy/containers"} {
		if !strings.Contains(out, want) {
			t.Errorf("plan of the uncommented mirrord.toml does not mention %s:\n%s\n%s",
				want, toml, out)
		}
	}

	// /etc/default/mirrord with every variable set as its example says,
	// the config file kept under the root.
	env := defaultsEnv(t, readTree(t, p, "etc/default/mirrord"), true)
	var names []string
	for i, kv := range env {
		name, value, _ := strings.Cut(kv, "=")
		names = append(names, name)
		if name == "MIRRORD_CONFIG" {
			env[i] = name + "=" + filepath.Join(root, value)
		}
	}
	slices.Sort(names)
	want := slices.DeleteFunc(envVars(t, p), func(v string) bool { return v == "MIRRORD_ROOT" })
	if !slices.Equal(want, names) {
		t.Errorf("/etc/default/mirrord documents %v, want every variable but MIRRORD_ROOT: %v",
			names, want)
	}
	out = runMirrord(t, p, env, "plan", "--root", root)
	if !strings.Contains(out, "hub-mirror.example.net") {
		t.Errorf("plan with the example variables does not use MIRRORD_MIRRORS:\n%s", out)
	}
}

// defaultLine matches an assignment of /etc/default/mirrord, commented out
// or not, as systemd's EnvironmentFile= reads it.
var defaultLine = regexp.MustCompile(`^(#?)(MIRRORD_[A-Z0-9_]+)=(.*)$`)

// defaultsEnv returns the assignments of an /etc/default/mirrord file as
// NAME=value; with commented, also those commented out. Lines that are not
// assignments must be comments or blank.
func defaultsEnv(t *testing.T, data string, commented bool) []string {
	t.Helper()

	var env []string
	for line := range strings.Lines(data) {
		line = strings.TrimRight(line, "\n")
		m := defaultLine.FindStringSubmatch(line)
		if m == nil {
			if line != "" && !strings.HasPrefix(line, "#") {
				t.Errorf("/etc/default/mirrord: %q is neither a comment nor an assignment", line)
			}
			continue
		}
		if m[1] == "#" && !commented {
			continue
		}
		value := m[3]
		if v, err := strconv.Unquote(value); err == nil {
			value = v
		}
		env = append(env, m[2]+"="+value)
	}
	return env
}

// uncommentTOML takes the examples of a commented TOML file out of their
// comments: a line of "#" and then a key, a table, an array item or a
// bracket. Prose comments ("# " and then text, or a lone "#") stay.
func uncommentTOML(data string) string {
	var b strings.Builder
	for line := range strings.Lines(data) {
		rest, ok := strings.CutPrefix(line, "#")
		if ok && (strings.HasPrefix(rest, "  ") || (rest != "" && !strings.HasPrefix(rest, " ") &&
			rest != "\n")) {
			line = rest
		}
		b.WriteString(line)
	}
	return b.String()
}

// runMirrord runs the packaged binary with only env and PATH, and returns
// its output; it fails the test if mirrord fails.
func runMirrord(t *testing.T, p pkg, env []string, args ...string) string {
	t.Helper()

	cmd := exec.Command(filepath.Join(p.tree, "usr/bin/mirrord"), args...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("mirrord %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// install copies a file of the unpacked deb to the same path under root.
func install(t *testing.T, p pkg, root, path string) {
	t.Helper()

	dst := filepath.Join(root, path)
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, []byte(readTree(t, p, path)), 0o644); err != nil {
		t.Fatal(err)
	}
}

// tree maps every path under root to its mode and content.
func tree(t *testing.T, root string) map[string]string {
	t.Helper()

	out := map[string]string{}
	err := filepath.Walk(root, func(path string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		out[rel] = fi.Mode().String()
		if fi.Mode().IsRegular() {
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			out[rel] += " " + string(b)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// diffTrees names the paths that differ between two trees.
func diffTrees(a, b map[string]string) string {
	var diffs []string
	for p, v := range a {
		if w, ok := b[p]; !ok {
			diffs = append(diffs, "removed "+p)
		} else if v != w {
			diffs = append(diffs, "changed "+p)
		}
	}
	for p := range b {
		if _, ok := a[p]; !ok {
			diffs = append(diffs, "created "+p)
		}
	}
	slices.Sort(diffs)
	return strings.Join(diffs, "\n")
}
