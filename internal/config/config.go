// Package config resolves mirrord's desired state from its layered sources
// into one validated Config.
//
// Layers, lowest first: instance metadata, the config file and its
// drop-ins, the environment (MIRRORD_*), then command-line flags. A
// registry named by a higher layer takes its whole mirror list from that
// layer; registries it does not name keep theirs.
//
// Instance metadata comes to Load already read (Options.Metadata, from
// metadata.Fetch): Load itself does no network I/O. Within the metadata
// layer the TOML document of the key mirrord-config is the base and the
// compact form of mirrord-mirrors replaces the registries it names.
// MetadataOptions turns the environment into the options of that fetch.
//
// Load fails on any invalid input, naming the source, the key and the value
// and saying what would be valid; a failed Load has read files but changed
// nothing.
package config

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/kelseyhightower/envconfig"

	"github.com/mirrord/mirrord/internal/metadata"
	"github.com/mirrord/mirrord/internal/spec"
)

// DefaultFile is the config file's path on the node, under the root.
const DefaultFile = "/etc/mirrord/mirrord.toml"

// Runtime names a container runtime mirrord can manage.
type Runtime string

// The runtimes mirrord manages. CRI-O and podman read the same
// registries.conf drop-in; k3s and RKE2 each read their own registries.yaml.
const (
	Containerd Runtime = "containerd"
	Docker     Runtime = "docker"
	CRIO       Runtime = "crio"
	Podman     Runtime = "podman"
	K3s        Runtime = "k3s"
	RKE2       Runtime = "rke2"
)

// Units names the systemd units that run the runtime, the one a node
// usually runs first: k3s and RKE2 run as a server or an agent unit, and a
// node has one of them. Podman has none: it runs per command.
func (r Runtime) Units() []string {
	switch r {
	case Containerd:
		return []string{"containerd.service"}
	case Docker:
		return []string{"docker.service"}
	case CRIO:
		return []string{"crio.service"}
	case K3s:
		return []string{"k3s.service", "k3s-agent.service"}
	case RKE2:
		return []string{"rke2-server.service", "rke2-agent.service"}
	}
	return nil
}

// Unit names the runtime's units for a person: "containerd.service", "k3s.service or
// k3s-agent.service", or "no unit" for podman.
func (r Runtime) Unit() string {
	units := r.Units()
	if len(units) == 0 {
		return "no unit"
	}
	return strings.Join(units, " or ")
}

// AllRuntimes lists every runtime mirrord knows, in the order it handles them.
var AllRuntimes = []Runtime{Containerd, Docker, CRIO, Podman, K3s, RKE2}

// Options are what the command line gives Load. Empty fields fall back to
// the environment, then to defaults.
type Options struct {
	// Root is the directory every node path is under ("/" on a node).
	Root string
	// File is the config file; it is taken as given, not under Root.
	File string
	// Mirrors is the --mirrors flag in the compact form; it is the highest
	// layer.
	Mirrors string
	// Metadata holds the values read from the instance's metadata, the
	// lowest layer; nil (or values with neither key set) means none.
	Metadata *metadata.Values
}

// Config is the resolved, validated desired state.
type Config struct {
	// Root is the absolute directory every node path is under.
	Root string
	// File is the config file that was read, or would have been.
	File string
	// Spec is what the operator asked for, each registry with its source.
	Spec spec.Spec
	// Runtimes lists the runtimes to manage; nil means those found on the
	// node.
	Runtimes []Runtime
	// RuntimesFrom says which source set Runtimes.
	RuntimesFrom string
	// MetadataProvider names the provider whose values Load took, or ""
	// when it took none.
	MetadataProvider string
	// MetadataKeys lists the metadata keys Load took, mirrord-config first.
	MetadataKeys []MetadataKey
}

// MetadataKey is one metadata key Load took a layer from. It never holds
// the value, which may be long; plan and status show this instead.
type MetadataKey struct {
	// Key is metadata.KeyConfig or metadata.KeyMirrors.
	Key string `json:"key"`
	// Source says where the value came from, e.g. "gce instance attribute
	// mirrord-mirrors"; registries taken from it carry it as their
	// source's name, in the metadata layer.
	Source string `json:"source"`
	// Bytes is the length of the value.
	Bytes int `json:"bytes"`
	// Registries lists the registry hosts the value names, sorted as in a
	// Spec; higher layers may replace some of them.
	Registries []string `json:"registries"`
	// Runtimes is true when the value (a mirrord-config) sets runtimes.
	Runtimes bool `json:"runtimes,omitempty"`
}

// Env is the environment mirrord reads, all prefixed MIRRORD_.
type Env struct {
	Mirrors  string `envconfig:"MIRRORS"`  // the compact form
	Runtimes string `envconfig:"RUNTIMES"` // runtimes to manage, comma-separated
	Root     string `envconfig:"ROOT"`     // as --root
	Config   string `envconfig:"CONFIG"`   // as --config

	// Metadata is the metadata provider: "auto" (or empty), "none", or a
	// name in metadata.Providers.
	Metadata string `envconfig:"METADATA"`
	// MetadataEndpoint replaces the provider's link-local base URL.
	MetadataEndpoint string `envconfig:"METADATA_ENDPOINT"`
	// MetadataTimeout bounds the metadata step, as a Go duration; it is
	// read as text so that a bad value gets mirrord's own error.
	MetadataTimeout string `envconfig:"METADATA_TIMEOUT"`
	// MetadataInterval is how often watch polls a provider that cannot
	// long-poll, as a Go duration.
	MetadataInterval string `envconfig:"METADATA_INTERVAL"`
	// MetadataIMDSv1 allows EC2's IMDSv1 when the IMDSv2 token is refused:
	// a boolean, false by default.
	MetadataIMDSv1 string `envconfig:"METADATA_IMDSV1"`
}

// ReadEnv reads the MIRRORD_* variables.
func ReadEnv() (Env, error) {
	var e Env
	if err := envconfig.Process("mirrord", &e); err != nil {
		return Env{}, fmt.Errorf("read environment: %w", err)
	}
	return e, nil
}

// ResolveRoot returns the absolute root every node path is under:
// flagRoot (--root) when set, else MIRRORD_ROOT, else "/".
func ResolveRoot(flagRoot string, env Env) (string, error) {
	root := firstOf(flagRoot, env.Root, "/")
	abs, err := filepath.Abs(root)
	if err != nil {
		return "", fmt.Errorf("resolve root %s: %w", root, err)
	}
	return abs, nil
}

// MetadataOptions returns the options of the metadata step for the node
// under root: the provider from MIRRORD_METADATA ("auto" when unset), the
// base URL from MIRRORD_METADATA_ENDPOINT, the bound from
// MIRRORD_METADATA_TIMEOUT (a Go duration; metadata.DefaultTimeout when
// unset), the poll interval from MIRRORD_METADATA_INTERVAL and IMDSv1 from
// MIRRORD_METADATA_IMDSV1. Its errors name the variable and its value and
// say what would be valid. log receives the metadata package's logs.
func MetadataOptions(env Env, root string, log *slog.Logger) (metadata.Options, error) {
	o := metadata.Options{Root: root, Log: log}

	o.Provider = strings.ToLower(strings.TrimSpace(env.Metadata))
	if o.Provider == "" {
		o.Provider = "auto"
	}
	if !slices.Contains(metadata.Providers, o.Provider) {
		return o, fmt.Errorf("env MIRRORD_METADATA: %q: unknown provider; valid: %s",
			env.Metadata, strings.Join(metadata.Providers, ", "))
	}

	o.Endpoint = strings.TrimSpace(env.MetadataEndpoint)
	if o.Endpoint != "" {
		if err := (metadata.Options{Endpoint: o.Endpoint}).Validate(); err != nil {
			return o, fmt.Errorf("env MIRRORD_METADATA_ENDPOINT: %w", err)
		}
	}

	var err error
	if o.Timeout, err = envDuration("MIRRORD_METADATA_TIMEOUT", env.MetadataTimeout,
		"2s or 500ms"); err != nil {
		return o, err
	}
	if o.Interval, err = envDuration("MIRRORD_METADATA_INTERVAL", env.MetadataInterval,
		"60s or 5m"); err != nil {
		return o, err
	}

	if v := strings.TrimSpace(env.MetadataIMDSv1); v != "" {
		allow, err := strconv.ParseBool(v)
		if err != nil {
			return o, fmt.Errorf("env MIRRORD_METADATA_IMDSV1: %q: want true or false",
				env.MetadataIMDSv1)
		}
		o.AllowIMDSv1 = allow
	}
	return o, nil
}

// envDuration parses the variable name's value v as a positive Go
// duration; empty gives 0, the default. examples names valid values.
func envDuration(name, v, examples string) (time.Duration, error) {
	t := strings.TrimSpace(v)
	if t == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(t)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("env %s: %q: want a positive Go duration such as %s", name, v,
			examples)
	}
	return d, nil
}

// Load resolves the Config from opts, the environment and the config file.
// On error the returned Config still carries Root and File when they could
// be resolved, so that status and revert can work on a node whose spec is
// broken. An error never shows the user information of a URL, from any
// layer: a mirror URL with credentials is refused, and its refusal is
// logged.
func Load(opts Options) (Config, error) {
	c, err := load(opts)
	if err != nil {
		err = &maskedError{err} // masking twice changes nothing
	}
	return c, err
}

// load is Load without the masking of its errors.
func load(opts Options) (Config, error) {
	env, err := ReadEnv()
	if err != nil {
		return Config{}, err
	}

	root, err := ResolveRoot(opts.Root, env)
	if err != nil {
		return Config{}, err
	}
	c := Config{Root: root, File: filepath.Join(root, DefaultFile)}
	if f := firstOf(opts.File, env.Config); f != "" {
		c.File = f
	}

	meta, keys, err := metadataLayer(opts.Metadata)
	if err != nil {
		return c, err
	}
	c.Spec, c.Runtimes, c.RuntimesFrom = meta.spec, meta.runtimes, meta.runtimesFrom
	if len(keys) > 0 {
		c.MetadataProvider, c.MetadataKeys = opts.Metadata.Provider, keys
	}

	file, err := loadFiles(c.File, root)
	if err != nil {
		return c, err
	}
	c.Spec = c.Spec.Overlay(file.spec)
	if file.runtimes != nil {
		c.Runtimes, c.RuntimesFrom = file.runtimes, file.runtimesFrom
	}

	if env.Mirrors != "" {
		s, err := spec.ParseCompact(env.Mirrors, spec.Source{Layer: spec.LayerEnv,
			Name: "MIRRORD_MIRRORS"})
		if err != nil {
			return c, fmt.Errorf("env MIRRORD_MIRRORS: %w", err)
		}
		c.Spec = c.Spec.Overlay(s)
	}
	if env.Runtimes != "" {
		rs, err := ParseRuntimes(strings.Split(env.Runtimes, ","))
		if err != nil {
			return c, fmt.Errorf("env MIRRORD_RUNTIMES: %w", err)
		}
		c.Runtimes, c.RuntimesFrom = rs, "env MIRRORD_RUNTIMES"
	}

	if opts.Mirrors != "" {
		s, err := spec.ParseCompact(opts.Mirrors, spec.Source{Layer: spec.LayerFlag,
			Name: "--mirrors"})
		if err != nil {
			return c, fmt.Errorf("flag --mirrors: %w", err)
		}
		c.Spec = c.Spec.Overlay(s)
	}

	if err := resolveCredentials(c.Spec, root, opts.Metadata); err != nil {
		return c, err
	}
	return c, nil
}

// metadataLayer parses the metadata values into the lowest layer: the TOML
// document of mirrord-config as the base, then the compact form of
// mirrord-mirrors, which replaces the registries it names.
//
// mirrord-config is read with the file's whole schema, runtimes included:
// a node group may say in its metadata which runtimes mirrord manages, as
// a file would, and the file and MIRRORD_RUNTIMES override it. An invalid
// value is an error that names the provider, the key and the value.
func metadataLayer(v *metadata.Values) (fileLayer, []MetadataKey, error) {
	var out fileLayer
	if v == nil || v.Empty() {
		return out, nil, nil
	}

	var keys []MetadataKey
	if len(v.Config) > 0 {
		src := metadataSource(v, metadata.KeyConfig)
		f, err := parseDoc(v.Config, src)
		if err != nil {
			return fileLayer{}, nil, metadataError(src, string(v.Config), err)
		}
		out.spec = f.Spec
		if f.Runtimes != nil {
			out.runtimes, out.runtimesFrom = f.Runtimes, src.String()
		}
		keys = append(keys, MetadataKey{Key: metadata.KeyConfig, Source: src.Name,
			Bytes: len(v.Config), Registries: hosts(f.Spec), Runtimes: f.Runtimes != nil})
	}

	if v.Mirrors != "" {
		src := metadataSource(v, metadata.KeyMirrors)
		s, err := spec.ParseCompact(v.Mirrors, src)
		if err != nil {
			return fileLayer{}, nil, metadataError(src, v.Mirrors, err)
		}
		out.spec = out.spec.Overlay(s)
		keys = append(keys, MetadataKey{Key: metadata.KeyMirrors, Source: src.Name,
			Bytes: len(v.Mirrors), Registries: hosts(s)})
	}

	// Credentials are read when a mirror names them; the key is listed,
	// never its size or value.
	if !v.Credentials.IsZero() {
		src := metadataSource(v, metadata.KeyCredentials)
		keys = append(keys, MetadataKey{Key: metadata.KeyCredentials, Source: src.Name})
	}
	return out, keys, nil
}

// metadataSource is the source of the registries taken from key, named as
// the provider placed it ("gce instance attribute mirrord-mirrors").
func metadataSource(v *metadata.Values, key string) spec.Source {
	name := v.Source[key]
	if name == "" {
		name = strings.TrimSpace(v.Provider + " " + key)
	}
	return spec.Source{Layer: spec.LayerMetadata, Name: name}
}

// clipAt is how many characters of a bad metadata value an error shows.
const clipAt = 72

// metadataError names the source (provider and key) and the value, with
// any credentials in URLs masked and a long value clipped, before err,
// which says what is wrong and what would be valid.
func metadataError(src spec.Source, value string, err error) error {
	var de *decodeError
	if errors.As(err, &de) && de.needsHint {
		err = fmt.Errorf("%w; want a TOML document in the schema of %s", err, DefaultFile)
	}

	shown := []rune(maskCredentials(value, rawCredentials))
	quoted := strconv.Quote(string(shown))
	if len(shown) > clipAt {
		quoted = fmt.Sprintf("%s... (%d bytes in all)", strconv.Quote(string(shown[:clipAt])),
			len(value))
	}
	return &maskedError{fmt.Errorf("%s: value %s: %w", src, quoted, err)}
}

// urlStart is where user information may start: after "scheme://", or a
// bare "://" when the scheme is missing or mistyped.
const urlStart = `((?:[A-Za-z][A-Za-z0-9+.-]*)?://)`

// rawCredentials matches the user information of a URL in text as given,
// as url.Parse reads it: from urlStart to the last '@' before the first
// '/', '?' or '#', whatever lies between (spaces, quotes, backslashes and
// line ends included: a password may hold them).
var rawCredentials = regexp.MustCompile(urlStart + `[^/?#]*@`)

// quotedCredentials matches the same in the text of an error, where values
// are Go-quoted: it does not run past the unescaped '"' that ends the
// quoted value holding the URL.
var quotedCredentials = regexp.MustCompile(urlStart + `(?:[^"\\/?#]|\\.)*@`)

// maskCredentials replaces the user information that re matches in s: a
// mirror URL never may carry credentials, and the refusal must not show
// them.
func maskCredentials(s string, re *regexp.Regexp) string {
	return re.ReplaceAllString(s, "${1}xxxxx@")
}

// maskedError is err with credentials in URLs masked in its text.
type maskedError struct{ err error }

func (e *maskedError) Error() string { return maskCredentials(e.err.Error(), quotedCredentials) }
func (e *maskedError) Unwrap() error { return e.err }

// hosts lists the registry hosts of s in its order.
func hosts(s spec.Spec) []string {
	out := make([]string, 0, len(s.Registries))
	for _, r := range s.Registries {
		out = append(out, r.Host)
	}
	return out
}

// runtimeNames lists AllRuntimes for an error message.
func runtimeNames() string {
	names := make([]string, len(AllRuntimes))
	for i, r := range AllRuntimes {
		names[i] = string(r)
	}
	return strings.Join(names, ", ")
}

// ParseRuntimes checks runtime names and returns them without duplicates.
func ParseRuntimes(names []string) ([]Runtime, error) {
	out := []Runtime{}
	for _, n := range names {
		n = strings.TrimSpace(n)
		if n == "" {
			continue
		}
		r := Runtime(n)
		if !slices.Contains(AllRuntimes, r) {
			return nil, fmt.Errorf("runtime %q is not known; valid: %s", n, runtimeNames())
		}
		if !slices.Contains(out, r) {
			out = append(out, r)
		}
	}
	return out, nil
}

type fileLayer struct {
	spec         spec.Spec
	runtimes     []Runtime
	runtimesFrom string
}

// loadFiles reads the main file, then every drop-in in conf.d beside it in
// lexical order; a later file replaces the registries it names. A missing
// main file is no error: the node may be configured by other layers. Files
// under root are named by their node path, so that what mirrord writes does
// not depend on where the node is mounted.
func loadFiles(main, root string) (fileLayer, error) {
	paths := []string{main}
	dropins, err := filepath.Glob(filepath.Join(filepath.Dir(main), "conf.d", "*.toml"))
	if err != nil {
		return fileLayer{}, fmt.Errorf("list drop-ins of %s: %w", main, err)
	}
	slices.Sort(dropins)
	paths = append(paths, dropins...)

	var out fileLayer
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if errors.Is(err, fs.ErrNotExist) && p == main {
			continue
		}
		if err != nil {
			return fileLayer{}, fmt.Errorf("read config %s: %w", p, err)
		}

		f, err := ParseFile(data, nodePath(p, root))
		if err != nil {
			return fileLayer{}, err
		}
		out.spec = out.spec.Overlay(f.Spec)
		if f.Runtimes != nil {
			out.runtimes, out.runtimesFrom = f.Runtimes, "file "+nodePath(p, root)
		}
	}
	return out, nil
}

func firstOf(vals ...string) string {
	for _, v := range vals {
		if v != "" {
			return v
		}
	}
	return ""
}

// nodePath names path as the node sees it when it is under root.
func nodePath(path, root string) string {
	rel, err := filepath.Rel(root, path)
	if err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
		return path
	}
	return "/" + rel
}
