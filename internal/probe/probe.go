// Package probe asks registry mirrors what a runtime would ask them, and
// says which work.
//
// For each mirror of each registry, Check makes the requests containerd
// makes through a hosts.toml entry: TLS with the mirror's CA file or
// skip_verify, GET of the API root /v2/ (200, or 401 with a challenge it
// can answer), then HEAD of the registry's canary manifest with
// ?ns=<registry>, sending the mirror's credentials as the static
// Authorization header of its host entry and answering a Bearer challenge
// by fetching a token from the realm with them. A mirror that may not
// resolve tags (pull-only, untrusted) is asked for the canary by the
// digest that the first host allowed to resolve names: another mirror, or
// the upstream. Check never writes anything and never shows a credential
// or a token.
//
// Every mirror's probe is bounded by Options.Timeout; mirrors are probed
// concurrently, at most Options.Concurrency at a time.
package probe

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/mirrord/mirrord/internal/spec"
)

// Defaults of Options.
const (
	DefaultTimeout     = 5 * time.Second
	DefaultConcurrency = 8
)

// Options configure Check. The zero value probes with the defaults.
type Options struct {
	// Root is the node's root: CA files are node paths under it.
	Root string

	// Timeout bounds the probe of one mirror, every request included.
	Timeout time.Duration

	// Concurrency is how many mirrors are probed at once.
	Concurrency int

	// UserAgent is sent with every request; registries log it.
	UserAgent string

	// ContainerdMajor is the node's containerd major version, 0 when
	// unknown. On 1.x the credentials of a hosts.toml reach the mirror but
	// not its token realm, which a result then notes.
	ContainerdMajor int
}

func (o Options) withDefaults() Options {
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.Concurrency <= 0 {
		o.Concurrency = DefaultConcurrency
	}
	if o.UserAgent == "" {
		o.UserAgent = "mirrord-probe"
	}
	if o.Root == "" {
		o.Root = "/"
	}
	return o
}

// Status is what came of a probe.
type Status string

// The statuses. Unknown means the mirror could not be asked for content:
// it may not resolve tags, and no host that may could name the canary's
// digest.
const (
	OK      Status = "ok"
	Fail    Status = "fail"
	Unknown Status = "unknown"
)

// The steps a probe fails at, as Result.Step names them.
const (
	StepConnect = "connect"
	StepTLS     = "tls"
	StepV2      = "v2"
	StepAuth    = "auth"
	StepCanary  = "canary"
	StepResolve = "resolve"
)

// Result is the probe of one mirror.
type Result struct {
	// URL is the mirror's URL as the spec gives it.
	URL string `json:"url"`

	Status Status `json:"status"`

	// Step is where a probe that did not succeed stopped.
	Step string `json:"step,omitempty"`

	// Error says what went wrong, for a person; it never holds a
	// credential.
	Error string `json:"error,omitempty"`

	// Latency is the round trip of GET /v2/, connection and TLS included.
	Latency time.Duration `json:"latency_ns"`

	// Took is the whole probe.
	Took time.Duration `json:"took_ns"`

	// Auth is how the mirror was authenticated: "none", "basic" (the
	// static header) or "bearer" (a token from its realm).
	Auth string `json:"auth"`

	// Canary is the reference asked for, Digest what the mirror answered.
	Canary string `json:"canary,omitempty"`
	Digest string `json:"digest,omitempty"`

	// PullOnly is true for a mirror that may not resolve tags.
	PullOnly bool `json:"pull_only,omitempty"`

	// Notes say what else a person should know.
	Notes []string `json:"notes,omitempty"`
}

// Registry is the probe of one registry's mirrors.
type Registry struct {
	Host   string `json:"host"`
	Source string `json:"source"`

	// OK is true when at least one mirror works.
	OK bool `json:"ok"`

	// Working counts the mirrors whose Status is OK.
	Working int `json:"working"`

	// Canary is what the mirrors were asked for, "" for /v2/ only.
	Canary string `json:"canary,omitempty"`

	// Mirrors are the results in spec order.
	Mirrors []Result `json:"mirrors"`

	// Resolved says which host named the canary's digest for pull-only
	// mirrors; Unresolved why none could.
	Resolved   string `json:"resolved,omitempty"`
	Unresolved string `json:"unresolved,omitempty"`
}

// Report is a whole Check.
type Report struct {
	// OK is true when every registry has a working mirror.
	OK         bool          `json:"ok"`
	Registries []Registry    `json:"registries"`
	Took       time.Duration `json:"took_ns"`
}

// Failing lists the registries without a working mirror.
func (r Report) Failing() []string {
	var out []string
	for _, reg := range r.Registries {
		if !reg.OK {
			out = append(out, reg.Host)
		}
	}
	return out
}

// Check probes every mirror of s.
func Check(ctx context.Context, s spec.Spec, o Options) Report {
	o = o.withDefaults()
	start := time.Now()
	sem := make(chan struct{}, o.Concurrency)

	rep := Report{OK: true, Registries: make([]Registry, len(s.Registries))}
	var wg sync.WaitGroup
	for i, r := range s.Registries {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rep.Registries[i] = checkRegistry(ctx, r, o, sem)
		}()
	}
	wg.Wait()

	for _, r := range rep.Registries {
		rep.OK = rep.OK && r.OK
	}
	rep.Took = time.Since(start)
	return rep
}

// checkRegistry probes the mirrors that may resolve tags first, then those
// that may not, by the digest the first working resolver named.
func checkRegistry(ctx context.Context, r spec.Registry, o Options,
	sem chan struct{}) Registry {
	out := Registry{Host: r.Host, Source: r.Source.String(), Canary: r.CanaryRef(),
		Mirrors: make([]Result, len(r.Mirrors))}
	canary := newCanary(r)

	probeAll := func(pullOnly bool, digest string) {
		var wg sync.WaitGroup
		for i, m := range r.Mirrors {
			if isPullOnly(m) != pullOnly {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				sem <- struct{}{}
				defer func() { <-sem }()
				out.Mirrors[i] = probeMirror(ctx, m, canary, digest, o)
			}()
		}
		wg.Wait()
	}

	probeAll(false, "")
	if slices.ContainsFunc(r.Mirrors, isPullOnly) {
		digest, from, err := resolveDigest(ctx, r, canary, out.Mirrors, o)
		switch {
		case canary == nil:
			probeAll(true, "")
		case err != nil:
			out.Unresolved = err.Error()
			for i, m := range r.Mirrors {
				if isPullOnly(m) {
					out.Mirrors[i] = unresolved(m, canary, err)
				}
			}
		default:
			out.Resolved = from
			probeAll(true, digest)
		}
	}

	for _, m := range out.Mirrors {
		if m.Status == OK {
			out.Working++
		}
	}
	out.OK = out.Working > 0
	return out
}

// isPullOnly reports whether containerd resolves no tags on m.
func isPullOnly(m spec.Mirror) bool {
	return !m.Has(spec.Resolve)
}

// unresolved is the result of a pull-only mirror when no host could name
// the canary's digest.
func unresolved(m spec.Mirror, c *canary, err error) Result {
	return Result{URL: m.URL, Status: Unknown, Step: StepResolve, Auth: "none",
		Canary: c.String(), PullOnly: true,
		Error: "cannot test: the mirror may not resolve tags, and " + err.Error(),
		Notes: []string{"pulls by tag fail through this mirror while no host can resolve " +
			"tags; pulls by digest still work"}}
}

// canary is a registry's canary, split.
type canary struct {
	ns   string // the ?ns= value: the image's registry
	repo string
	ref  string // a tag or a digest
}

func newCanary(r spec.Registry) *canary {
	ref := r.CanaryRef()
	if ref == "" {
		return nil
	}
	reg, repo, tag := spec.SplitCanary(ref, r.Host == spec.Wildcard)
	if reg == "" {
		reg = r.Host
	}
	return &canary{ns: reg, repo: repo, ref: tag}
}

func (c *canary) String() string {
	if c == nil {
		return ""
	}
	sep := ":"
	if strings.HasPrefix(c.ref, "sha256:") {
		sep = "@"
	}
	return c.repo + sep + c.ref
}

// isDigest reports whether the canary names a digest already.
func (c *canary) isDigest() bool { return strings.HasPrefix(c.ref, "sha256:") }

// resolveDigest names the canary's digest as containerd would resolve the
// tag: on the first mirror, in spec order, that may resolve and answered
// it, else on the upstream.
func resolveDigest(ctx context.Context, r spec.Registry, c *canary, done []Result,
	o Options) (digest, from string, err error) {
	if c == nil {
		return "", "", nil
	}
	if c.isDigest() {
		return c.ref, "the canary names its digest", nil
	}
	resolvers := "no mirror that may resolve tags works"
	if !slices.ContainsFunc(r.Mirrors, func(m spec.Mirror) bool { return !isPullOnly(m) }) {
		resolvers = "no mirror of the registry may resolve tags"
	}
	for i, m := range r.Mirrors {
		if !isPullOnly(m) && done[i].Status == OK && done[i].Digest != "" {
			return done[i].Digest, "mirror " + m.URL, nil
		}
	}

	if r.NoUpstream || (r.Host == spec.Wildcard && c.ns == "") {
		return "", "", errors.New(resolvers + ", and the upstream is off (upstream = false)")
	}
	up := spec.Upstream(c.ns)
	m, _ := spec.NewMirror(up)
	res := probeMirror(ctx, m, &canary{ns: "", repo: c.repo, ref: c.ref}, "", o)
	if res.Status != OK || res.Digest == "" {
		return "", "", fmt.Errorf("%s, and the upstream %s cannot resolve them either (%s)",
			resolvers, up, res.Error)
	}
	return res.Digest, "upstream " + up, nil
}

// manifestAccept is the Accept header containerd sends for manifests.
var manifestAccept = strings.Join([]string{
	"application/vnd.docker.distribution.manifest.v2+json",
	"application/vnd.docker.distribution.manifest.list.v2+json",
	"application/vnd.oci.image.manifest.v1+json",
	"application/vnd.oci.image.index.v1+json",
	"*/*",
}, ", ")

// prober probes one host.
type prober struct {
	o      Options
	m      spec.Mirror
	client *http.Client
	// token is the Bearer token in use, once a challenge was answered.
	token spec.Secret
	auth  string
	notes []string
}

// probeMirror probes m: TLS and GET /v2/, then the canary (by digest when
// digest is set).
func probeMirror(ctx context.Context, m spec.Mirror, c *canary, digest string,
	o Options) Result {
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()

	res := Result{URL: m.URL, Auth: "none", PullOnly: isPullOnly(m), Canary: c.String()}
	fail := func(step string, err error) Result {
		res.Status, res.Step, res.Error, res.Took = Fail, step, err.Error(), time.Since(start)
		return res
	}

	client, err := newClient(m, o)
	if err != nil {
		return fail(StepTLS, err)
	}
	defer client.CloseIdleConnections()
	p := &prober{o: o, m: m, client: client}

	// GET /v2/: the API is there and, with credentials, they are taken.
	resp, err := p.request(ctx, http.MethodGet, v2URL(m), "", m.Auth != nil)
	res.Latency = time.Since(start)
	if err != nil {
		return fail(stepOf(err), err)
	}
	resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusOK:
	case resp.StatusCode == http.StatusUnauthorized && m.Auth == nil:
		// A challenge this probe could answer; the canary says whether
		// anonymous pulls are allowed.
	case resp.StatusCode == http.StatusNotFound:
		return fail(StepV2, fmt.Errorf("GET %s answered 404: no registry API there%s",
			v2Path(m), pathHint(m)))
	default:
		return fail(StepV2, fmt.Errorf("GET %s answered %s", v2Path(m), resp.Status))
	}

	if c != nil {
		ref := c.ref
		if digest != "" {
			ref = digest
		}
		d, err := p.manifest(ctx, c, ref)
		if err != nil {
			res.Auth, res.Notes = p.authName(), p.notes
			return fail(stepOf(err), err)
		}
		res.Digest = d
	}

	res.Auth, res.Notes = p.authName(), p.notes
	res.Status, res.Took = OK, time.Since(start)
	return res
}

func (p *prober) authName() string {
	if p.auth == "" {
		return "none"
	}
	return p.auth
}

// manifest asks for the canary's manifest by ref and returns its digest.
func (p *prober) manifest(ctx context.Context, c *canary, ref string) (string, error) {
	u := p.m.API() + "/" + c.repo + "/manifests/" + ref
	if c.ns != "" {
		u += "?ns=" + url.QueryEscape(c.ns)
	}
	scope := "repository:" + c.repo + ":pull"

	resp, err := p.request(ctx, http.MethodHead, u, scope, true)
	if err == nil && resp.StatusCode == http.StatusMethodNotAllowed {
		resp.Body.Close()
		resp, err = p.request(ctx, http.MethodGet, u, scope, true)
	}
	if err != nil {
		return "", err
	}
	resp.Body.Close()

	what := c.repo + ":" + ref
	if strings.HasPrefix(ref, "sha256:") {
		what = c.repo + "@" + ref
	}
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusNotFound:
		return "", &stepError{StepCanary, fmt.Errorf("canary %s not on the mirror (404); "+
			"containerd would try the next host", what)}
	case http.StatusUnauthorized, http.StatusForbidden:
		return "", &stepError{StepAuth, fmt.Errorf("canary %s: access denied (%s)%s", what,
			resp.Status, p.credentialHint())}
	default:
		return "", &stepError{StepCanary, fmt.Errorf("canary %s: answered %s", what,
			resp.Status)}
	}

	d := resp.Header.Get("Docker-Content-Digest")
	if strings.HasPrefix(ref, "sha256:") {
		if d != "" && d != ref {
			return "", &stepError{StepCanary, fmt.Errorf("canary %s: the mirror answered "+
				"digest %s", what, d)}
		}
		d = ref
	}
	return d, nil
}

// credentialHint says what to do about an access denied.
func (p *prober) credentialHint() string {
	if p.m.Auth == nil {
		return "; the mirror wants credentials: give it username and a password_* key"
	}
	return "; check the mirror's credentials (" + p.m.Auth.From() + ")"
}

// request sends one request as containerd would: with the mirror's static
// Authorization header, or the Bearer token this probe got; on a 401 with
// a challenge, and when follow is set, it answers the challenge once.
func (p *prober) request(ctx context.Context, method, u, scope string,
	follow bool) (*http.Response, error) {
	send := func(authz string) (*http.Response, error) {
		req, err := http.NewRequestWithContext(ctx, method, u, nil)
		if err != nil {
			return nil, &stepError{StepConnect, err}
		}
		req.Header.Set("User-Agent", p.o.UserAgent)
		req.Header.Set("Accept", manifestAccept)
		if authz != "" {
			req.Header.Set("Authorization", authz)
		}
		resp, err := p.client.Do(req)
		if err != nil {
			return nil, classify(err, p.o.Timeout)
		}
		return resp, nil
	}

	var authz string
	switch {
	case !p.token.IsZero():
		authz = "Bearer " + p.token.Reveal()
	case p.m.Auth != nil:
		authz = p.m.Auth.Header().Reveal()
	}
	resp, err := send(authz)
	if err != nil || resp.StatusCode != http.StatusUnauthorized || !follow {
		if err == nil && resp.StatusCode < 300 && p.auth == "" && p.m.Auth != nil {
			p.auth = "basic"
		}
		return resp, err
	}

	h := resp.Header.Get("WWW-Authenticate")
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	ch, ok := parseChallenge(h)
	switch {
	case !ok:
		return nil, &stepError{StepAuth, fmt.Errorf("%s answered 401 without a challenge "+
			"a client can answer", pathOf(u))}
	case ch.scheme == "basic" && p.m.Auth == nil:
		return nil, &stepError{StepAuth, fmt.Errorf("%s asks for Basic credentials; give "+
			"the mirror username and a password_* key", pathOf(u))}
	case ch.scheme == "basic":
		return nil, &stepError{StepAuth, fmt.Errorf("%s refused the credentials (%s)",
			pathOf(u), p.m.Auth.From())}
	}

	tok, err := p.fetchToken(ctx, ch, scope, p.m.Auth)
	if err != nil {
		return nil, &stepError{StepAuth, fmt.Errorf("%s asks for a Bearer token: %w",
			pathOf(u), err)}
	}
	p.token, p.auth = tok, "bearer"
	if p.m.Auth != nil && p.o.ContainerdMajor == 1 {
		p.noteOnce("containerd 1.x sends a mirror's credentials to the mirror only, not " +
			"to its token realm: it would fetch this token without them")
	}
	return send("Bearer " + tok.Reveal())
}

func (p *prober) noteOnce(n string) {
	if !slices.Contains(p.notes, n) {
		p.notes = append(p.notes, n)
	}
}

// v2URL is the URL of GET /v2/ for m: the API root for a mirror at a
// registry root, the host's /v2/ for one at a repository prefix.
func v2URL(m spec.Mirror) string {
	if m.Prefix() != "" {
		return m.Scheme() + "://" + m.Host() + "/v2/"
	}
	return m.API() + "/"
}

func v2Path(m spec.Mirror) string { return pathOf(v2URL(m)) }

// pathOf is the path of u, for messages.
func pathOf(u string) string {
	if pu, err := url.Parse(u); err == nil {
		return pu.Path
	}
	return u
}

// pathHint suggests the other form of a path mirror after a 404.
func pathHint(m spec.Mirror) string {
	if m.Path() != "" && m.Prefix() == "" {
		return fmt.Sprintf("; a mirror that serves a repository prefix in its API is "+
			"written https://host/v2/PREFIX (here %s://%s/v2%s)", m.Scheme(), m.Host(), m.Path())
	}
	return ""
}

// newClient returns a client for m as containerd would build it from its
// host entry: the system roots plus ca_file, or no verification with
// skip_verify; the environment's proxy; no redirect limit beyond Go's.
func newClient(m spec.Mirror, o Options) (*http.Client, error) {
	tlsConf := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: m.SkipVerify}
	if m.CAFile != "" {
		pool, err := x509.SystemCertPool()
		if err != nil || pool == nil {
			pool = x509.NewCertPool()
		}
		pem, err := os.ReadFile(filepath.Join(o.Root, m.CAFile))
		if err != nil {
			return nil, fmt.Errorf("ca_file %s: cannot read: %w", m.CAFile, pathCause(err))
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("ca_file %s: no PEM certificate in it", m.CAFile)
		}
		tlsConf.RootCAs = pool
	}

	tr := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: o.Timeout}).DialContext,
		TLSClientConfig:       tlsConf,
		TLSHandshakeTimeout:   o.Timeout,
		ResponseHeaderTimeout: o.Timeout,
		DisableKeepAlives:     false,
		MaxIdleConnsPerHost:   2,
	}
	return &http.Client{Transport: tr}, nil
}

// pathCause drops the path from a *fs.PathError, which names the file
// under the root.
func pathCause(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// stepError is an error with the step it happened at.
type stepError struct {
	step string
	err  error
}

func (e *stepError) Error() string { return e.err.Error() }
func (e *stepError) Unwrap() error { return e.err }

func stepOf(err error) string {
	var se *stepError
	if errors.As(err, &se) {
		return se.step
	}
	return StepConnect
}

// classify turns a client error into a short one with its step: TLS,
// connection, or a bound reached.
func classify(err error, bound time.Duration) error {
	err = cause(err)
	var certErr *tls.CertificateVerificationError
	var recordErr tls.RecordHeaderError
	var unknownAuth x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	switch {
	case errors.Is(err, context.DeadlineExceeded) || isTimeout(err):
		return &stepError{StepConnect, fmt.Errorf("no answer within %s", bound)}
	case errors.As(err, &certErr) || errors.As(err, &unknownAuth) || errors.As(err, &hostErr):
		return &stepError{StepTLS, fmt.Errorf("TLS: %w (set ca_file, or skip_verify)", err)}
	case errors.As(err, &recordErr) || strings.Contains(err.Error(), "tls:"):
		return &stepError{StepTLS, fmt.Errorf("TLS: %w", err)}
	}
	return &stepError{StepConnect, err}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// cause drops the *url.Error around a client error: its text repeats the
// method and URL, which the result names already.
func cause(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}
