package metadata

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"syscall"
	"time"
)

// linkLocal is the base every network provider uses unless
// Options.Endpoint replaces it. GCE's metadata.google.internal resolves to
// the same address; the address needs no DNS at boot.
const linkLocal = "http://169.254.169.254"

const (
	// dialTimeout bounds one connection attempt; attempts repeat until the
	// bound. aws-sdk-go-v2 uses 250 ms (FACTS.md §1.8); a link-local
	// service answers in well under a millisecond.
	dialTimeout = 500 * time.Millisecond

	// retryMin and retryMax bound the pause between two attempts within
	// one Fetch.
	retryMin = 50 * time.Millisecond
	retryMax = 500 * time.Millisecond

	// maxBody caps a response; GCE's whole metadata is at most 512 KB.
	maxBody = 1 << 20
)

// client sends a provider's requests to its service.
type client struct {
	name string // the provider, for errors
	base string // scheme://host[:port]
	hc   *http.Client
}

// newClient returns a client for the provider called name, sending to
// o.Endpoint or else to the link-local address.
//
// The transport never uses a proxy: HTTP_PROXY would send link-local
// requests elsewhere (FACTS.md §1.5). The client has no Timeout, which would
// cut long polls short (google-cloud-go#12885); contexts bound requests.
// Redirects are not followed.
func newClient(name string, o Options) *client {
	base := o.Endpoint
	if base == "" {
		base = linkLocal
	}

	d := &net.Dialer{Timeout: dialTimeout}
	var t http.RoundTripper = &http.Transport{
		Proxy:               nil,
		DialContext:         d.DialContext,
		TLSHandshakeTimeout: o.Timeout,
		MaxIdleConnsPerHost: 2,
		IdleConnTimeout:     90 * time.Second,
	}
	if o.transport != nil {
		t = o.transport
	}
	return &client{
		name: name,
		base: base,
		hc: &http.Client{
			Transport: t,
			CheckRedirect: func(*http.Request, []*http.Request) error {
				return http.ErrUseLastResponse
			},
		},
	}
}

// close drops the idle connections.
func (c *client) close() {
	c.hc.CloseIdleConnections()
}

// response is an answer read whole.
type response struct {
	status int
	header http.Header
	body   []byte
}

// do sends method path (path includes the query) with header and reads the
// answer. It retries transport failures and 429 and 5xx answers until ctx
// ends, and returns at once:
//   - an answer with any other status, for the caller to judge;
//   - a kindAbsent error when the service is not there (no route, refused);
//   - a kindUnavailable error when ctx reached a bound (boundError);
//   - ctx's error, plain, when ctx ended otherwise.
func (c *client) do(ctx context.Context, method, path string,
	header http.Header) (response, error) {
	return c.send(ctx, method, path, header, true)
}

// doOnce is do without retries, for long polls, whose failures the
// watcher retries with its own backoff: a transport failure is a
// kindUnavailable error, and 429 and 5xx answers come back as answers.
func (c *client) doOnce(ctx context.Context, method, path string,
	header http.Header) (response, error) {
	return c.send(ctx, method, path, header, false)
}

// send implements do and doOnce.
func (c *client) send(ctx context.Context, method, path string, header http.Header,
	retry bool) (response, error) {
	target := c.base + path
	pause := retryMin
	var last error

	for {
		resp, err := c.once(ctx, method, target, header)
		switch {
		case ctx.Err() != nil:
			return response{}, c.ended(ctx, method, target, last)
		case err == nil && (!retry || resp.status != http.StatusTooManyRequests &&
			resp.status < 500):
			return resp, nil
		case err == nil:
			last = fmt.Errorf("status %d %s", resp.status, http.StatusText(resp.status))
		case notThere(err):
			return response{}, absentf("%s: %w", c.name, err)
		case !retry:
			return response{}, unavailablef("%s: %w", c.name, err)
		default:
			last = err
		}

		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return response{}, c.ended(ctx, method, target, last)
		case <-t.C:
		}
		pause = min(2*pause, retryMax)
	}
}

// once sends one request and reads the whole answer.
func (c *client) once(ctx context.Context, method, target string,
	header http.Header) (response, error) {
	req, err := http.NewRequestWithContext(ctx, method, target, nil)
	if err != nil {
		return response{}, err
	}
	req.Header = header.Clone()
	if req.Header == nil {
		req.Header = http.Header{}
	}
	// Without it Go would offer gzip; the services answer small plain text.
	req.Header.Set("Accept-Encoding", "identity")

	resp, err := c.hc.Do(req)
	if err != nil {
		return response{}, err
	}
	defer resp.Body.Close()

	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody+1))
	if err != nil {
		return response{}, fmt.Errorf("%s %s: read the answer: %w", method, target, err)
	}
	if len(body) > maxBody {
		return response{}, fmt.Errorf("%s %s: answer longer than %d bytes", method, target,
			maxBody)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: body}, nil
}

// ended returns the error for a request whose context ended, last being the
// failure of the attempt before, if any.
func (c *client) ended(ctx context.Context, method, target string, last error) error {
	cause := context.Cause(ctx)
	var be *boundError
	if !errors.As(cause, &be) {
		return fmt.Errorf("%s: %s %s: %w", c.name, method, target, cause)
	}
	if last == nil {
		return unavailablef("%s: %s %s: %w: no answer", c.name, method, target, cause)
	}
	// The URL is already said.
	var ue *url.Error
	if errors.As(last, &ue) {
		last = ue.Err
	}
	return unavailablef("%s: %s %s: %w: last error: %v", c.name, method, target, cause, last)
}

// notThere reports whether err says at once that nothing serves the
// address: no route (ENETUNREACH), an unreachable route (EHOSTUNREACH), a
// blackhole route (EINVAL), a firewall's reject (EPERM, EACCES), no source
// address (EADDRNOTAVAIL), a refused connection, or a name that does not
// resolve. A dial timeout is not among them: it is retried until the bound.
func notThere(err error) bool {
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return dnsErr.IsNotFound
	}

	var op *net.OpError
	if !errors.As(err, &op) || op.Op != "dial" {
		return false
	}
	var errno syscall.Errno
	if !errors.As(op.Err, &errno) {
		return false
	}
	switch errno {
	case syscall.ENETUNREACH, syscall.EHOSTUNREACH, syscall.EINVAL, syscall.EPERM,
		syscall.EACCES, syscall.EADDRNOTAVAIL, syscall.ECONNREFUSED:
		return true
	}
	return false
}

// statusError returns the kindUnavailable error for an answer the caller
// cannot use.
func (c *client) statusError(what string, r response) error {
	return unavailablef("%s: %s: status %d %s", c.name, what, r.status, http.StatusText(r.status))
}
