package config

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"github.com/mirrord/mirrord/internal/metadata"
	"github.com/mirrord/mirrord/internal/spec"
)

// passwordKeys are the keys of a mirror table that say where its password
// or token comes from; a mirror with credentials has exactly one.
var passwordKeys = []string{spec.KeyPasswordFile, spec.KeyPasswordEnv,
	spec.KeyPasswordMetadata}

// maxSecretFile bounds what mirrord reads of a password file: a token is a
// few hundred bytes, and anything much larger is the wrong file.
const maxSecretFile = 64 << 10

// envName is a variable name a shell can set.
var envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// secretName is an entry name in the mirrord-credentials metadata key.
var secretName = regexp.MustCompile(`^[A-Za-z0-9_.-]+$`)

// parseAuth reads the credentials keys of a mirror table: username plus
// one of password_file (an absolute node path, read under the root),
// password_env (a variable of mirrord's environment) or password_metadata
// (an entry of the mirrord-credentials metadata key). It only checks their
// form; resolveCredentials reads the password once the layers are merged,
// so that a mirror a higher layer replaced is never read.
func parseAuth(t map[string]any) (*spec.Auth, error) {
	var set []string
	for _, k := range passwordKeys {
		if _, ok := t[k]; ok {
			set = append(set, k)
		}
	}
	rawUser, hasUser := t["username"]
	switch {
	case !hasUser && len(set) == 0:
		return nil, nil
	case !hasUser:
		return nil, fmt.Errorf("%s without username; give username too", set[0])
	case len(set) == 0:
		return nil, fmt.Errorf("username without a password; add one of %s",
			strings.Join(passwordKeys, ", "))
	case len(set) > 1:
		return nil, fmt.Errorf("%s and %s both set; give one source for the password",
			set[0], set[1])
	}

	user, ok := rawUser.(string)
	if !ok {
		return nil, fmt.Errorf("username: %v is a %s; want a string", rawUser, tomlType(rawUser))
	}
	if err := spec.CheckUsername(user); err != nil {
		return nil, fmt.Errorf("username: %w", err)
	}

	key := set[0]
	name, ok := t[key].(string)
	if !ok {
		return nil, fmt.Errorf("%s: %v is a %s; want a string", key, t[key], tomlType(t[key]))
	}
	switch key {
	case spec.KeyPasswordFile:
		if !filepath.IsAbs(name) || filepath.Clean(name) != name {
			return nil, fmt.Errorf("%s: %q: want an absolute, clean path such as "+
				"/etc/mirrord/secrets/NAME", key, name)
		}
	case spec.KeyPasswordEnv:
		if !envName.MatchString(name) {
			return nil, fmt.Errorf("%s: %q: want a variable name such as GITLAB_TOKEN", key, name)
		}
	case spec.KeyPasswordMetadata:
		if !secretName.MatchString(name) {
			return nil, fmt.Errorf("%s: %q: want an entry name of the %s metadata key "+
				"(letters, digits, . _ -)", key, name, metadata.KeyCredentials)
		}
	}
	return &spec.Auth{Username: user, Key: key, Name: name}, nil
}

// resolveCredentials reads the password of every mirror of s that has
// credentials: password_file under root, password_env from the
// environment, password_metadata from md. Its errors name the registry's
// source, the registry, the mirror's index, the key and its value, and
// never the password.
func resolveCredentials(s spec.Spec, root string, md *metadata.Values) error {
	var entries map[string]spec.Secret
	var entriesErr error
	entriesRead := false

	for _, r := range s.Registries {
		for i := range r.Mirrors {
			a := r.Mirrors[i].Auth
			if a == nil {
				continue
			}

			var secret spec.Secret
			var err error
			switch a.Key {
			case spec.KeyPasswordFile:
				secret, err = readSecretFile(root, a.Name)
			case spec.KeyPasswordEnv:
				secret, err = readSecretEnv(a.Name)
			case spec.KeyPasswordMetadata:
				if !entriesRead {
					entries, entriesErr = credentialEntries(md)
					entriesRead = true
				}
				secret, err = metadataSecret(entries, entriesErr, a.Name)
			}
			if err != nil {
				return &maskedError{fmt.Errorf("%s: registries.%q: mirrors[%d]: %s: %q: %w",
					r.Source, r.Host, i, a.Key, a.Name, err)}
			}

			// The spec's mirrors are its own copies: config built them.
			filled := *a
			filled.Password = secret
			r.Mirrors[i].Auth = &filled
		}
	}
	return nil
}

func readSecretFile(root, nodePath string) (spec.Secret, error) {
	f, err := os.Open(filepath.Join(root, nodePath))
	if err != nil {
		return spec.Secret{}, fmt.Errorf("cannot read: %w; want a readable file holding the "+
			"token or password", pathCause(err))
	}
	defer f.Close()

	data, err := io.ReadAll(io.LimitReader(f, maxSecretFile+1))
	if err != nil {
		return spec.Secret{}, fmt.Errorf("cannot read: %w", pathCause(err))
	}
	if len(data) > maxSecretFile {
		return spec.Secret{}, fmt.Errorf("is larger than %d KiB; want the token or password "+
			"alone", maxSecretFile>>10)
	}
	return spec.ParseSecret(string(data))
}

// pathCause drops the path from a *fs.PathError, which would name the file
// under the root; the caller names it as the node sees it.
func pathCause(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return fmt.Errorf("%s: %w", pe.Op, pe.Err)
	}
	return err
}

func readSecretEnv(name string) (spec.Secret, error) {
	v, ok := os.LookupEnv(name)
	if !ok {
		return spec.Secret{}, fmt.Errorf("not set in mirrord's environment; set it in " +
			"/etc/default/mirrord (then restart the units)")
	}
	return spec.ParseSecret(v)
}

func metadataSecret(entries map[string]spec.Secret, err error, name string) (spec.Secret,
	error) {
	if err != nil {
		return spec.Secret{}, err
	}
	s, ok := entries[name]
	if !ok {
		names := make([]string, 0, len(entries))
		for n := range entries {
			names = append(names, n)
		}
		slices.Sort(names)
		have := "none"
		if len(names) > 0 {
			have = strings.Join(names, ", ")
		}
		return spec.Secret{}, fmt.Errorf("no entry %s in the %s metadata key (entries: %s)",
			name, metadata.KeyCredentials, have)
	}
	return s, nil
}

// credentialEntries parses the mirrord-credentials metadata key: lines of
// NAME=SECRET, blank lines and lines starting with '#' skipped. Errors give
// the line number and never the line.
func credentialEntries(md *metadata.Values) (map[string]spec.Secret, error) {
	if md == nil || md.Credentials.IsZero() {
		return nil, fmt.Errorf("the instance metadata has no %s key", metadata.KeyCredentials)
	}
	src := md.Source[metadata.KeyCredentials]
	if src == "" {
		src = strings.TrimSpace(md.Provider + " " + metadata.KeyCredentials)
	}

	out := map[string]spec.Secret{}
	for n, line := range strings.Split(md.Credentials.Reveal(), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, value, ok := strings.Cut(line, "=")
		name = strings.TrimSpace(name)
		if !ok || !secretName.MatchString(name) {
			return nil, fmt.Errorf("metadata %s: line %d is not NAME=SECRET (line not shown)",
				src, n+1)
		}
		s, err := spec.ParseSecret(value)
		if err != nil {
			return nil, fmt.Errorf("metadata %s: line %d: the value %w", src, n+1, err)
		}
		out[name] = s
	}
	return out, nil
}
