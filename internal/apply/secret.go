package apply

import (
	"bytes"
	"fmt"
	"regexp"
	"strings"

	"github.com/aymanbagabas/go-udiff"

	"github.com/mirrord/mirrord/internal/config"
	"github.com/mirrord/mirrord/internal/containerd"
	"github.com/mirrord/mirrord/internal/spec"
)

// privateMode is the mode of every file that carries credentials, whatever
// mode the file it replaces had.
const privateMode = 0o600

// wantHosts records the hosts.toml of r at nodePath for runtime rt: 0644
// like the rest (or the mode of the file it replaces), except when it
// carries credentials, when it is 0600 in every case.
func (p *Plan) wantHosts(rt config.Runtime, nodePath string, r spec.Registry) error {
	data := containerd.RenderHosts(r)
	if !containerd.HasCredentials(r) {
		return p.want(rt, nodePath, data, 0o644)
	}
	return p.wantPrivate(rt, nodePath, data)
}

// wantPrivate records that nodePath should hold data with mode 0600. Unlike
// want, a file with the right bytes but a wider mode is a change too: it
// is rewritten 0600.
func (p *Plan) wantPrivate(rt config.Runtime, nodePath string, data []byte) error {
	old, mode, exists, err := readFile(p.node(nodePath))
	if err != nil {
		return fmt.Errorf("read %s: %w", nodePath, err)
	}
	p.claim(nodePath)

	if exists && bytes.Equal(old, data) && mode == privateMode {
		return nil
	}
	p.Changes = append(p.Changes, Change{Path: nodePath, Runtime: rt, Old: old, New: data,
		Mode: privateMode, Private: true})
	return nil
}

// secretLine matches a TOML line that carries a credential, whoever wrote
// it: a header of a hosts.toml (Authorization), or the auth keys of
// containerd's legacy registry.configs in a config.toml that a diff shows
// as context. The first group is the key and '=', the rest the value.
var secretLine = regexp.MustCompile(`(?mi)^(\s*["']?(?:authorization|proxy-authorization|` +
	`password|auth|identitytoken|identity_token|registrytoken|registry_token)["']?\s*=\s*).*$`)

// minMaskedLen is the shortest password masked wherever it appears in a
// diff; a shorter one would mangle the text around it, and mirrord never
// writes a password as such anyway, only in the base64 of its header.
const minMaskedLen = 6

// maskSecrets returns text with the value of every line that carries a
// credential, and every credential of s, replaced by spec.Redacted.
func maskSecrets(text string, s spec.Spec) string {
	text = secretLine.ReplaceAllString(text, "${1}\""+spec.Redacted+"\"")

	var pairs []string
	for _, r := range s.Registries {
		for _, m := range r.Mirrors {
			if m.Auth == nil || m.Auth.Password.IsZero() {
				continue
			}
			pairs = append(pairs, m.Auth.Header().Reveal(), spec.Redacted)
			if pw := m.Auth.Password.Reveal(); len(pw) >= minMaskedLen {
				pairs = append(pairs, pw, spec.Redacted)
			}
		}
	}
	if len(pairs) == 0 {
		return text
	}
	return strings.NewReplacer(pairs...).Replace(text)
}

// diffFile is the unified diff of one change with credentials masked; a
// change of credentials alone, which masking hides, gets a line saying so.
func diffFile(c Change, s spec.Spec) string {
	from, to := "a"+c.Path, "b"+c.Path
	if c.Old == nil {
		from = "/dev/null"
	}
	if c.New == nil {
		to = "/dev/null"
	}
	oldText, newText := maskSecrets(string(c.Old), s), maskSecrets(string(c.New), s)

	d := udiff.Unified(from, to, oldText, newText)
	switch {
	case d != "":
		return d
	case !bytes.Equal(c.Old, c.New):
		return fmt.Sprintf("# %s: credentials changed (not shown)\n", c.Path)
	case c.Private:
		return fmt.Sprintf("# %s: mode becomes 0600 (it carries credentials)\n", c.Path)
	}
	return ""
}
