package metadata

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"
)

// IMDSv2 (FACTS.md §1.4): a token from PUT /latest/api/token, sent back on
// every read.
const (
	ec2TokenPath      = "/latest/api/token"
	ec2TTLHeader      = "X-aws-ec2-metadata-token-ttl-seconds"
	ec2TokenHeader    = "X-aws-ec2-metadata-token"
	ec2TagsPrefix     = "/latest/meta-data/tags/instance/"
	ec2TokenTTL       = 6 * time.Hour // the most IMDS grants, 21600 s
	ec2TokenSlack     = time.Minute   // renew this long before expiry
	ec2TokenMaxLength = 4096          // a token longer than this is no token
)

// ec2 reads the instance tags of EC2's instance metadata, which must be
// enabled on the instance (InstanceMetadataTags=enabled); while they are
// not, every tag reads 404 and counts as absent.
type ec2 struct {
	c       *client
	allowV1 bool
	ttl     time.Duration // the TTL asked for each token

	mu      sync.Mutex
	token   string    // never logged, never in an error
	expires time.Time // when to stop using token
}

// newEC2 returns the AWS provider.
func newEC2(o Options) *ec2 {
	return &ec2{c: newClient(AWS, o), allowV1: o.AllowIMDSv1, ttl: ec2TokenTTL}
}

func (p *ec2) close() { p.c.close() }

// fetch reads both tags.
func (p *ec2) fetch(ctx context.Context) (Values, error) {
	var v Values
	for _, key := range keys {
		r, err := p.get(ctx, ec2TagsPrefix+url.PathEscape(key))
		if err != nil {
			return v, err
		}
		switch r.status {
		case http.StatusOK:
			v.set(key, string(r.body), "aws instance tag "+key)
		case http.StatusNotFound:
		default:
			return v, p.c.statusError("read instance tag "+key, r)
		}
	}
	return v, nil
}

// get reads path with a token. A 401 means the token expired or was
// revoked: it gets a new one and tries once more.
func (p *ec2) get(ctx context.Context, path string) (response, error) {
	for attempt := 0; ; attempt++ {
		header, err := p.auth(ctx)
		if err != nil {
			return response{}, err
		}

		r, err := p.c.do(ctx, http.MethodGet, path, header)
		if err != nil || r.status != http.StatusUnauthorized || attempt > 0 ||
			header.Get(ec2TokenHeader) == "" {
			return r, err
		}
		p.dropToken()
	}
}

// auth returns the header that authenticates a read: the current token, a
// new one if it expires soon, or, when the token is refused and IMDSv1 is
// allowed, no header at all.
func (p *ec2) auth(ctx context.Context) (http.Header, error) {
	p.mu.Lock()
	defer p.mu.Unlock()

	if p.token != "" && time.Now().Before(p.expires) {
		return tokenHeader(p.token), nil
	}

	asked := time.Now()
	header := http.Header{}
	header.Set(ec2TTLHeader, strconv.Itoa(int(p.ttl/time.Second)))
	r, err := p.c.do(ctx, http.MethodPut, ec2TokenPath, header)
	if err != nil {
		return nil, err
	}

	switch {
	case r.status == http.StatusOK && isToken(r.body):
		p.token = string(r.body)
		p.expires = asked.Add(p.ttl - min(ec2TokenSlack, p.ttl/2))
		return tokenHeader(p.token), nil
	case r.status == http.StatusOK:
		return nil, unavailablef("aws: get a token: answer of %d bytes is no token", len(r.body))
	case p.allowV1 && (r.status == http.StatusForbidden || r.status == http.StatusNotFound ||
		r.status == http.StatusMethodNotAllowed):
		// aws-sdk-go-v2 falls back to IMDSv1 on these (FACTS.md §1.4).
		return http.Header{}, nil
	case r.status == http.StatusForbidden:
		return nil, unavailablef("aws: get a token: status 403 Forbidden: " +
			"the instance metadata endpoint is disabled")
	}
	return nil, p.c.statusError("get a token", r)
}

// isToken reports whether b can be a token: 1 to ec2TokenMaxLength bytes of
// visible ASCII, as IMDS tokens are. Anything else (an HTML page from
// something else at the address, say) is no token: sent back in a header,
// it would make net/http refuse every read before sending it, and Fetch
// would retry them until the bound.
func isToken(b []byte) bool {
	if len(b) == 0 || len(b) > ec2TokenMaxLength {
		return false
	}
	for _, c := range b {
		if c < 0x21 || c > 0x7e {
			return false
		}
	}
	return true
}

// dropToken forgets the token so that the next read gets a new one.
func (p *ec2) dropToken() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.token = ""
}

// tokenHeader returns the header that carries token.
func tokenHeader(token string) http.Header {
	h := http.Header{}
	h.Set(ec2TokenHeader, token)
	return h
}
