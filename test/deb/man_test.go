package debtest

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/mirrord/mirrord/internal/metadata"
	"github.com/mirrord/mirrord/internal/spec"
)

func TestManPage(t *testing.T) {
	requireDebs(t)
	p := hostPkg(t)

	page := filepath.Join(p.tree, "usr/share/man/man8/mirrord.8.gz")

	// groff's warnings go to stderr; the page itself is not needed here.
	cmd := exec.Command("man", "--warnings", "-E", "UTF-8", "-l", page)
	cmd.Env = append(os.Environ(), "MANWIDTH=80")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("man --warnings -l %s: %v\n%s", page, err, stderr.String())
	}
	if stderr.Len() > 0 {
		t.Errorf("man --warnings -l %s:\n%s", page, stderr.String())
	}
	text := render(t, page)

	help := runMirrord(t, p, nil, "help")
	commands := helpCommands(t, help)
	flags := regexp.MustCompile(`--[a-z][a-z-]+`).FindAllString(help, -1)
	vars := envVars(t, p)
	for _, v := range vars {
		if !strings.Contains(help, v) {
			t.Errorf("mirrord help does not mention %s", v)
		}
	}

	for _, want := range slices.Concat(flags, vars, tomlKeys(), presetNames()) {
		if !strings.Contains(text, want) {
			t.Errorf("the man page does not mention %q", want)
		}
	}

	// Each command has an entry of its own: ".TP" then ".B COMMAND".
	source := gunzip(t, page)
	for _, c := range commands {
		if !strings.Contains(source, ".TP\n.B "+c+"\n") {
			t.Errorf("the man page has no entry for the command %s", c)
		}
	}
}

// tomlKeys are the keys of the config file and of instance metadata. The
// parser keeps its list of keys unexported, so a new key must be added here
// by hand.
func tomlKeys() []string {
	return []string{"runtimes", "registries.", "mirrors", "upstream", "canary", "url",
		"capabilities", "ca_file", "skip_verify", "trusted", "username",
		spec.KeyPasswordFile, spec.KeyPasswordEnv, spec.KeyPasswordMetadata,
		metadata.KeyConfig, metadata.KeyMirrors, metadata.KeyCredentials}
}

// presetNames are the names of the mirror presets.
func presetNames() []string {
	var names []string
	for _, p := range spec.Presets {
		names = append(names, p.Name)
	}
	return names
}

// render returns a man page as plain text, wide enough that no word of
// interest is hyphenated.
func render(t *testing.T, page string) string {
	t.Helper()

	cmd := exec.Command("man", "-E", "UTF-8", "-l", page)
	cmd.Env = append(os.Environ(), "MANWIDTH=250", "MAN_KEEP_FORMATTING=0", "MANPAGER=cat",
		"PAGER=cat")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("man -l %s: %v", page, err)
	}
	// man may still use the Unicode hyphen and overstrike.
	text := regexp.MustCompile(".\b").ReplaceAllString(string(out), "")
	return strings.ReplaceAll(text, "‐", "-")
}

// helpCommands returns the commands of "mirrord help", from its Commands:
// block.
func helpCommands(t *testing.T, help string) []string {
	t.Helper()

	_, block, ok := strings.Cut(help, "\nCommands:\n")
	if !ok {
		t.Fatalf("mirrord help has no Commands: block:\n%s", help)
	}
	block, _, _ = strings.Cut(block, "\n\n")

	var commands []string
	for line := range strings.Lines(block) {
		if f := strings.Fields(line); len(f) > 0 {
			commands = append(commands, f[0])
		}
	}
	if len(commands) < 5 {
		t.Fatalf("mirrord help lists too few commands: %v", commands)
	}
	return commands
}
