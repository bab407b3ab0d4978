package docker

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// The dockerd flags that set what mirrord writes into daemon.json.
const (
	FlagMirror   = "--registry-mirror"
	FlagInsecure = "--insecure-registry"
)

// unitDirs are systemd's system unit directories under the root, highest
// priority first (systemd.unit(5)).
var unitDirs = []string{
	"etc/systemd/system",
	"run/systemd/system",
	"usr/local/lib/systemd/system",
	"usr/lib/systemd/system",
	"lib/systemd/system",
}

// FlagUse is one dockerd flag found in docker.service.
type FlagUse struct {
	// Flag is FlagMirror or FlagInsecure.
	Flag string

	// Path is the unit file or drop-in whose ExecStart line is in effect.
	Path string

	// Var and VarFrom are set when the flag comes from an environment
	// variable that ExecStart expands ($DOCKER_OPTS): its name, and the
	// file that sets it (an EnvironmentFile=, or the unit file or drop-in
	// with the Environment= line).
	Var, VarFrom string
}

// UnitFlagError reports dockerd flags in docker.service that clash with the
// daemon.json keys mirrord writes: dockerd refuses to start when a setting
// is given both as a flag and in daemon.json, and a reload ignores the file.
type UnitFlagError struct {
	Uses []FlagUse
}

// Has reports whether flag (FlagMirror or FlagInsecure) is among the uses.
func (e *UnitFlagError) Has(flag string) bool {
	return slices.ContainsFunc(e.Uses, func(u FlagUse) bool { return u.Flag == flag })
}

// Error names each flag and where it is set, and what to do.
func (e *UnitFlagError) Error() string {
	var where []string
	for _, u := range e.Uses {
		if u.Var == "" {
			where = append(where, fmt.Sprintf("%s in ExecStart of %s", u.Flag, u.Path))
			continue
		}
		where = append(where, fmt.Sprintf("%s in $%s, set in %s and used by ExecStart of %s",
			u.Flag, u.Var, u.VarFrom, u.Path))
	}
	return "docker.service sets " + strings.Join(where, ", ") + "; dockerd refuses to start " +
		"when a setting is given both as a flag and in daemon.json: move the values into " +
		DaemonJSON + " or drop them, remove the flags and run systemctl daemon-reload"
}

// CheckUnitFlags reads docker.service under root as systemd would (the unit
// file of the highest-priority directory, then its docker.service.d/*.conf
// drop-ins from every directory in name order; an empty ExecStart= resets
// the list) and returns a *UnitFlagError when the ExecStart in effect sets
// --registry-mirror or --insecure-registry, directly or through a variable
// from Environment= or EnvironmentFile=. No unit file, or a masked one,
// gives nil. Errors other than *UnitFlagError are read errors.
func CheckUnitFlags(root string) error {
	root = rootDir(root)
	files, err := unitFiles(root)
	if err != nil || len(files) == 0 {
		return err
	}

	var u unitState
	for _, f := range files {
		data, err := os.ReadFile(f.resolved)
		if err != nil {
			return fmt.Errorf("check docker.service: %w", err)
		}
		u.read(f.path, data)
	}

	uses, err := u.flagUses(root)
	if err != nil || len(uses) == 0 {
		return err
	}
	return &UnitFlagError{Uses: uses}
}

// rootDir returns root, or "/" for "".
func rootDir(root string) string {
	if root == "" {
		return "/"
	}
	return root
}

// unitFile is one file of docker.service: its path under the root, and the
// path to read after following symbolic links within the root.
type unitFile struct {
	path, resolved string
}

// unitFiles lists docker.service and its drop-ins in the order systemd
// applies them. A masked unit (linked to /dev/null) gives none.
func unitFiles(root string) ([]unitFile, error) {
	var files []unitFile
	for _, dir := range unitDirs {
		p := filepath.Join(root, dir, "docker.service")
		resolved, err := resolveIn(root, p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("check docker.service: %w", err)
		}
		if resolved == os.DevNull {
			return nil, nil
		}
		files = append(files, unitFile{p, resolved})
		break
	}
	if len(files) == 0 {
		return nil, nil
	}

	dropins := map[string]unitFile{} // by file name; a higher directory masks a lower
	for _, dir := range unitDirs {
		matches, _ := filepath.Glob(filepath.Join(root, dir, "docker.service.d", "*.conf"))
		for _, p := range matches {
			if _, seen := dropins[filepath.Base(p)]; seen {
				continue
			}
			resolved, err := resolveIn(root, p)
			if err != nil {
				return nil, fmt.Errorf("check docker.service: %w", err)
			}
			dropins[filepath.Base(p)] = unitFile{p, resolved}
		}
	}
	names := make([]string, 0, len(dropins))
	for name := range dropins {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		if f := dropins[name]; f.resolved != os.DevNull {
			files = append(files, f)
		}
	}
	return files, nil
}

// resolveIn follows symbolic links at p, reading absolute targets as paths
// under root. It returns os.DevNull for a link to /dev/null.
func resolveIn(root, p string) (string, error) {
	for range 16 {
		fi, err := os.Lstat(p)
		if err != nil {
			return "", err
		}
		if fi.Mode()&fs.ModeSymlink == 0 {
			return p, nil
		}
		target, err := os.Readlink(p)
		if err != nil {
			return "", err
		}
		switch {
		case target == os.DevNull:
			return os.DevNull, nil
		case filepath.IsAbs(target):
			p = filepath.Join(root, target)
		default:
			p = filepath.Join(filepath.Dir(p), target)
		}
	}
	return "", fmt.Errorf("%s: too many levels of symbolic links", p)
}

// execLine is one ExecStart= command and the file that set it.
type execLine struct {
	path, command string
}

// envSetting is one Environment= or EnvironmentFile= line, in order.
type envSetting struct {
	path  string // the unit file that holds the line
	value string
	file  bool // EnvironmentFile=
}

// unitState is what the [Service] sections read so far say.
type unitState struct {
	exec []execLine
	env  []envSetting
}

// read applies one unit file or drop-in.
func (u *unitState) read(path string, data []byte) {
	section := ""
	for _, line := range logicalLines(data) {
		switch {
		case line == "" || line[0] == '#' || line[0] == ';':
			continue
		case line[0] == '[':
			section = strings.Trim(line, "[] \t")
			continue
		case section != "Service":
			continue
		}

		key, value, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		key, value = strings.TrimSpace(key), strings.TrimSpace(value)
		switch key {
		case "ExecStart":
			if value == "" {
				u.exec = nil
				continue
			}
			u.exec = append(u.exec, execLine{path, value})
		case "Environment", "EnvironmentFile":
			if value == "" {
				u.env = slices.DeleteFunc(u.env, func(e envSetting) bool {
					return e.file == (key == "EnvironmentFile")
				})
				continue
			}
			u.env = append(u.env, envSetting{path, value, key == "EnvironmentFile"})
		}
	}
}

// logicalLines splits a unit file into trimmed lines, joining lines that end
// in a backslash.
func logicalLines(data []byte) []string {
	var lines []string
	var cur strings.Builder
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.HasSuffix(line, `\`) {
			cur.WriteString(strings.TrimSuffix(line, `\`) + " ")
			continue
		}
		cur.WriteString(line)
		lines = append(lines, cur.String())
		cur.Reset()
	}
	if cur.Len() > 0 {
		lines = append(lines, cur.String())
	}
	return lines
}

// flagUses finds the flags in the ExecStart lines in effect, and in the
// variables they expand.
func (u *unitState) flagUses(root string) ([]FlagUse, error) {
	var uses []FlagUse
	for _, ex := range u.exec {
		words := strings.Fields(ex.command)
		for _, f := range flagsIn(words) {
			uses = append(uses, FlagUse{Flag: f, Path: ex.path})
		}

		for _, name := range varsIn(ex.command) {
			value, from, err := u.lookup(root, name)
			if err != nil {
				return nil, err
			}
			for _, f := range flagsIn(strings.Fields(value)) {
				uses = append(uses, FlagUse{Flag: f, Path: ex.path, Var: name, VarFrom: from})
			}
		}
	}
	return uses, nil
}

// flagsIn returns which of the two flags appear among words, in the order
// FlagMirror, FlagInsecure.
func flagsIn(words []string) []string {
	var found []string
	for _, f := range []string{FlagMirror, FlagInsecure} {
		if slices.ContainsFunc(words, func(w string) bool {
			w = strings.Trim(w, `"'`)
			return w == f || strings.HasPrefix(w, f+"=")
		}) {
			found = append(found, f)
		}
	}
	return found
}

// varsIn returns the names of the $NAME and ${NAME} references in command.
func varsIn(command string) []string {
	var names []string
	for i := 0; i < len(command); i++ {
		if command[i] != '$' || i+1 == len(command) {
			continue
		}
		rest := command[i+1:]
		braced := rest[0] == '{'
		if braced {
			rest = rest[1:]
		}
		n := 0
		for n < len(rest) && isVarByte(rest[n], n == 0) {
			n++
		}
		if n > 0 && (!braced || n < len(rest) && rest[n] == '}') {
			names = append(names, rest[:n])
		}
	}
	return names
}

func isVarByte(c byte, first bool) bool {
	letter := c == '_' || 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z'
	return letter || !first && '0' <= c && c <= '9'
}

// lookup returns the value of variable name as the service would see it:
// EnvironmentFile= overrides Environment=, and a later line an earlier one.
// from is the file that sets it.
func (u *unitState) lookup(root, name string) (value, from string, err error) {
	for _, e := range u.env {
		if e.file {
			continue
		}
		for _, assign := range splitQuoted(e.value) {
			if k, v, ok := strings.Cut(assign, "="); ok && k == name {
				value, from = v, e.path
			}
		}
	}

	for _, e := range u.env {
		if !e.file {
			continue
		}
		p := strings.TrimPrefix(e.value, "-")
		data, err := os.ReadFile(filepath.Join(root, p))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return "", "", fmt.Errorf("check docker.service: %w", err)
		}
		if v, ok := envFileValue(data, name); ok {
			value, from = v, filepath.Join(root, p)
		}
	}
	return value, from, nil
}

// envFileValue returns the last assignment of name in an EnvironmentFile=.
func envFileValue(data []byte, name string) (string, bool) {
	var value string
	found := false
	for _, line := range logicalLines(data) {
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		k, v, ok := strings.Cut(strings.TrimPrefix(line, "export "), "=")
		if ok && strings.TrimSpace(k) == name {
			value, found = unquote(strings.TrimSpace(v)), true
		}
	}
	return value, found
}

// splitQuoted splits an Environment= value into its assignments, each of
// which may be wrapped in double or single quotes.
func splitQuoted(s string) []string {
	var out []string
	var cur strings.Builder
	var quote byte
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quote != 0 && c == quote:
			quote = 0
		case quote == 0 && (c == '"' || c == '\''):
			quote = c
		case quote == 0 && (c == ' ' || c == '\t'):
			if cur.Len() > 0 {
				out = append(out, cur.String())
				cur.Reset()
			}
		default:
			cur.WriteByte(c)
		}
	}
	if cur.Len() > 0 {
		out = append(out, cur.String())
	}
	return out
}

// unquote strips one pair of matching surrounding quotes.
func unquote(s string) string {
	if len(s) >= 2 && (s[0] == '"' || s[0] == '\'') && s[len(s)-1] == s[0] {
		return s[1 : len(s)-1]
	}
	return s
}
