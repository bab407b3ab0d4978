package metadata

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/mirrord/mirrord/internal/spec"
)

// The metadata keys mirrord reads, under the same name on every provider.
const (
	KeyMirrors = "mirrord-mirrors" // the compact form of MIRRORD_MIRRORS
	KeyConfig  = "mirrord-config"  // a TOML document in the file's schema

	// KeyCredentials holds passwords and tokens that mirrors name with
	// password_metadata: one NAME=SECRET per line. Its value is never
	// logged, shown or stored.
	KeyCredentials = "mirrord-credentials"
)

// keys lists the keys in the order providers read them.
var keys = []string{KeyMirrors, KeyConfig, KeyCredentials}

// Provider names accepted in Options.Provider, besides "auto" and "none".
const (
	GCE       = "gce"
	Yandex    = "yandex"
	AWS       = "aws"
	Azure     = "azure"
	OpenStack = "openstack"
	CloudInit = "cloud-init"
)

// Providers lists every value Options.Provider accepts, "auto" first.
var Providers = []string{"auto", "none", GCE, Yandex, AWS, Azure, OpenStack, CloudInit}

// Defaults for the zero fields of Options.
const (
	DefaultTimeout  = 2 * time.Second
	DefaultInterval = 60 * time.Second
	defaultHang     = 60 * time.Second // timeout_sec of a long poll
	defaultBackoff  = time.Second      // first retry delay of a watcher
)

// ErrNoMetadata means there is nothing to take from instance metadata: it is
// turned off, no provider was detected, the service is not reachable (at
// once, or not within the bound), it refuses to serve, or no key is
// set. The caller falls back to the other layers.
var ErrNoMetadata = errors.New("no instance metadata")

// Options says which provider to ask and how. The zero value detects the
// provider on the machine's root with the default bound.
type Options struct {
	// Provider is "auto" (or empty: detect, see Detect), "none" (metadata
	// off), or one of the provider names to use that one without detection.
	Provider string

	// Endpoint, when set, replaces the link-local base of the provider's
	// service (http://169.254.169.254): scheme://host[:port] with scheme
	// http or https, for proxies and tests. It also turns off the OpenStack
	// config drive. cloud-init reads no network and ignores it.
	Endpoint string

	// Timeout bounds a whole Fetch, and each poll of a Watcher; zero means
	// DefaultTimeout.
	Timeout time.Duration

	// Interval is the time between two polls of a Watcher for the providers
	// that cannot long-poll (all but gce and yandex), before jitter of ±10%;
	// zero means DefaultInterval.
	Interval time.Duration

	// Root is the node's root: DMI under Root/sys/class/dmi/id, cloud-init's
	// data under Root/run/cloud-init, config drives under Root/mnt/config and
	// Root/media/config-2. Empty means "/".
	Root string

	// AllowIMDSv1 lets the aws provider read without a token when the token
	// request is refused. Off by default: IMDSv1 can be reached through
	// SSRF, so it should stay off wherever IMDSv2 works.
	AllowIMDSv1 bool

	// Log receives the package's logs; nil drops them.
	Log *slog.Logger

	// Tuning for tests; zero means the defaults above.
	hang    time.Duration // timeout_sec of a long poll
	backoff time.Duration // first retry delay of a watcher

	// transport, when set, answers every request instead of the network,
	// for the fuzz targets.
	transport http.RoundTripper
}

// Validate reports the first field of o that is not valid, naming the value
// and what would be.
func (o Options) Validate() error {
	_, err := o.normalized()
	return err
}

// normalized returns o validated and with its defaults filled in.
func (o Options) normalized() (Options, error) {
	if o.Provider == "" {
		o.Provider = "auto"
	}
	if !slices.Contains(Providers, o.Provider) {
		return o, fmt.Errorf("provider %q unknown; want one of %s",
			o.Provider, strings.Join(Providers, ", "))
	}

	if o.Endpoint != "" {
		base, err := parseEndpoint(o.Endpoint)
		if err != nil {
			return o, err
		}
		o.Endpoint = base
	}

	switch {
	case o.Timeout < 0:
		return o, fmt.Errorf("timeout %s is negative; want a positive duration such as 2s",
			o.Timeout)
	case o.Timeout == 0:
		o.Timeout = DefaultTimeout
	}
	switch {
	case o.Interval < 0:
		return o, fmt.Errorf("interval %s is negative; want a positive duration such as 60s",
			o.Interval)
	case o.Interval == 0:
		o.Interval = DefaultInterval
	}

	if o.Root == "" {
		o.Root = "/"
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.hang <= 0 {
		o.hang = defaultHang
	}
	if o.backoff <= 0 {
		o.backoff = defaultBackoff
	}
	return o, nil
}

// parseEndpoint checks that s is scheme://host[:port] and returns it without
// a trailing slash.
func parseEndpoint(s string) (string, error) {
	bad := func(why string) error {
		return fmt.Errorf("endpoint %q: %s; want scheme://host[:port] with scheme http or "+
			"https, e.g. http://127.0.0.1:8080", s, why)
	}

	u, err := url.Parse(s)
	switch {
	case err != nil:
		return "", bad(err.Error())
	case u.Scheme != "http" && u.Scheme != "https":
		return "", bad(fmt.Sprintf("scheme %q is not http or https", u.Scheme))
	case u.Opaque != "" || u.Host == "" || u.Hostname() == "":
		return "", bad("no host")
	case u.User != nil:
		return "", bad("user information is not allowed")
	case u.Path != "" && u.Path != "/":
		return "", bad(fmt.Sprintf("path %q is not allowed", u.Path))
	case u.RawQuery != "" || u.ForceQuery:
		return "", bad("a query is not allowed")
	case u.Fragment != "":
		return "", bad("a fragment is not allowed")
	}
	return u.Scheme + "://" + u.Host, nil
}

// Values is what a provider holds for mirrord.
type Values struct {
	// Provider names the provider that answered (or was asked, next to
	// ErrNoMetadata); empty when none was detected.
	Provider string

	// Mirrors is the value of mirrord-mirrors, "" when absent.
	Mirrors string

	// Config is the value of mirrord-config, nil when absent.
	Config []byte

	// Credentials is the value of mirrord-credentials, zero when absent.
	// It never leaves in JSON, not even masked.
	Credentials spec.Secret `json:"-"`

	// Source maps each key present to where exactly it came from, e.g.
	// "gce instance attribute mirrord-mirrors".
	Source map[string]string
}

// Empty reports whether no key is set. A key set to the empty string
// counts as absent.
func (v Values) Empty() bool {
	return v.Mirrors == "" && len(v.Config) == 0 && v.Credentials.IsZero()
}

// Equal reports whether v and w hold the same values from the same places.
func (v Values) Equal(w Values) bool {
	return v.Provider == w.Provider && v.Mirrors == w.Mirrors &&
		bytes.Equal(v.Config, w.Config) && v.Credentials.Equal(w.Credentials) &&
		maps.Equal(v.Source, w.Source)
}

// set records value for key from src; an empty value counts as absent.
func (v *Values) set(key, value, src string) {
	if value == "" {
		return
	}
	switch key {
	case KeyMirrors:
		v.Mirrors = value
	case KeyConfig:
		v.Config = []byte(value)
	case KeyCredentials:
		v.Credentials = spec.NewSecret(value)
	}
	if v.Source == nil {
		v.Source = make(map[string]string, len(keys))
	}
	v.Source[key] = src
}

// has reports whether key is already set.
func (v *Values) has(key string) bool {
	_, ok := v.Source[key]
	return ok
}

// provider reads every key from one provider.
type provider interface {
	// fetch returns the values, with the absent keys left empty; an error
	// means it could not tell. The context bounds it.
	fetch(ctx context.Context) (Values, error)

	// close releases idle connections.
	close()
}

// longPoller is a provider whose service holds a request until a change.
type longPoller interface {
	provider

	// wait asks for the values, held by the service until they differ from
	// those of etag or hang elapses; the literal etag "NONE" answers at
	// once. It returns the values and their etag ("" if the service sent
	// none).
	wait(ctx context.Context, etag string, hang time.Duration) (Values, string, error)
}

// newProvider returns the provider called name, set up from o.
func newProvider(name string, o Options) (provider, error) {
	switch name {
	case GCE:
		return newCompute(GCE, o), nil
	case Yandex:
		return newYandex(o), nil
	case AWS:
		return newEC2(o), nil
	case Azure:
		return newAzure(o), nil
	case OpenStack:
		return newOpenStack(o), nil
	case CloudInit:
		return newCloudInit(o), nil
	}
	return nil, fmt.Errorf("provider %q unknown; want one of %s",
		name, strings.Join(Providers[2:], ", "))
}

// resolve returns the provider o names, detecting it when o says "auto", or
// an ErrNoMetadata error when metadata is off or nothing was detected.
func resolve(o Options) (string, error) {
	switch o.Provider {
	case "none":
		return "", fmt.Errorf("%w: turned off (provider none)", ErrNoMetadata)
	case "auto":
		name, how := Detect(o.Root)
		if name == "" {
			o.Log.Debug("no metadata provider detected", "root", o.Root)
			return "", fmt.Errorf("%w: no provider detected: no cloud-init instance data "+
				"and no DMI field names a known cloud under %s", ErrNoMetadata, o.Root)
		}
		o.Log.Debug("metadata provider detected", "provider", name, "how", how)
		return name, nil
	}
	return o.Provider, nil
}

// Fetch reads every key from the provider o names (detected first if
// "auto"), within o.Timeout.
//
// It returns an error wrapping ErrNoMetadata when there is nothing to take:
// metadata off, no provider detected, the service unreachable at once (no
// route, refused), or no key set; these are logged at Debug or Info. A
// service that does not answer within the bound, answers with an error
// status or refuses mirrord's request also gives ErrNoMetadata, logged at
// Warn: the node goes on without metadata. Any other error (a malformed
// document, an unreadable file, ctx ending) means metadata could not be
// read and the caller should keep its configuration. Values.Provider names
// the provider asked whenever there was one, errors or not; next to an
// error, Values holds nothing else, even if one key was read before the
// failure, so that a Watcher started from it sees the keys as a change.
func Fetch(ctx context.Context, o Options) (Values, error) {
	o, err := o.normalized()
	if err != nil {
		return Values{}, err
	}

	name, err := resolve(o)
	if err != nil {
		return Values{}, err
	}
	p, err := newProvider(name, o)
	if err != nil {
		return Values{}, err
	}
	defer p.close()

	start := time.Now()
	bctx, cancel := context.WithTimeoutCause(ctx, o.Timeout, &boundError{o.Timeout})
	defer cancel()
	v, err := p.fetch(bctx)
	v.Provider = name
	took := time.Since(start).Round(time.Millisecond)

	if err == nil && v.Empty() {
		o.Log.Debug("metadata has no mirrord keys", "provider", name, "duration", took)
		return v, fmt.Errorf("%w: %s: none of %s, %s and %s is set",
			ErrNoMetadata, name, KeyMirrors, KeyConfig, KeyCredentials)
	}
	if err == nil {
		o.Log.Debug("metadata read", "provider", name, "keys", len(v.Source),
			"duration", took)
		return v, nil
	}
	// What was read before the failure is no answer: the caller takes
	// nothing from metadata and keeps its configuration.
	return Values{Provider: name}, noMetadata(o.Log, name, err, took)
}

// noMetadata logs err as its kind deserves and wraps ErrNoMetadata around
// the errors that mean "nothing to take"; others come back as they are.
func noMetadata(log *slog.Logger, name string, err error, took time.Duration) error {
	var fe *fetchError
	if !errors.As(err, &fe) {
		return err
	}
	switch fe.kind {
	case kindAbsent:
		log.Info("metadata service not there; going on without metadata",
			"provider", name, "duration", took, "error", err)
	case kindUnavailable:
		log.Warn("metadata service unusable; going on without metadata",
			"provider", name, "duration", took, "error", err)
	}
	return fmt.Errorf("%w: %w", ErrNoMetadata, err)
}

// errorKind sorts the failures that mean "nothing to take from metadata".
type errorKind int

const (
	// kindAbsent: nothing there, known at once (no route, refused, no
	// file); logged at Info.
	kindAbsent errorKind = iota + 1

	// kindUnavailable: the service did not answer within the bound, or
	// answered with an error; logged at Warn.
	kindUnavailable
)

// fetchError is a failure of a known kind; its text is the cause's.
type fetchError struct {
	kind errorKind
	err  error
}

func (e *fetchError) Error() string { return e.err.Error() }
func (e *fetchError) Unwrap() error { return e.err }

// absentf returns a kindAbsent error formatted as fmt.Errorf would.
func absentf(format string, a ...any) error {
	return &fetchError{kindAbsent, fmt.Errorf(format, a...)}
}

// unavailablef returns a kindUnavailable error formatted as fmt.Errorf would.
func unavailablef(format string, a ...any) error {
	return &fetchError{kindUnavailable, fmt.Errorf(format, a...)}
}

// boundError is the cause of a context that reached the metadata step's
// bound.
type boundError struct{ d time.Duration }

func (e *boundError) Error() string {
	return fmt.Sprintf("gave up after %s, the bound on the metadata step", e.d)
}
