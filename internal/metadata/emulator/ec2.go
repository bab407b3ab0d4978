package emulator

import (
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// EC2 emulates AWS EC2's instance metadata service with IMDSv2. It
// enforces and answers:
//
//   - Endpoint off (SetDisabled): 403 to everything.
//   - PUT /latest/api/token: X-Forwarded-For present: 403; no
//     X-aws-ec2-metadata-token-ttl-seconds, or one outside 1..21600: 400;
//     else a new token, valid for that many seconds.
//   - Another method than GET (or PUT on the token path): 405.
//   - GET with X-aws-ec2-metadata-token: 401 when the token is unknown or
//     expired (ExpireTokens expires all at once).
//   - GET without a token: 401, unless tokens are optional
//     (SetTokensOptional), as with HttpTokens=optional.
//   - /latest/meta-data/tags/instance and below: 404 while tags in metadata
//     are off (SetTagsEnabled(false)); the key names one a line; a tag's
//     value; 404 for a tag that is not set.
//   - /latest/meta-data/instance-id; anything else: 404.
type EC2 struct {
	control

	dmu            sync.Mutex
	tags           map[string]string
	tagsOff        bool
	tokensOptional bool
	disabled       bool
	tokens         map[string]time.Time // token -> expiry
	issued         int
}

// NewEC2 returns an EC2 emulator with tags in metadata on, no tags, and
// tokens required.
func NewEC2() *EC2 {
	return &EC2{tags: map[string]string{}, tokens: map[string]time.Time{}}
}

// SetTag sets the instance tag key.
func (e *EC2) SetTag(key, value string) { e.edit(func() { e.tags[key] = value }) }

// DeleteTag removes the instance tag key.
func (e *EC2) DeleteTag(key string) { e.edit(func() { delete(e.tags, key) }) }

// SetTagsEnabled turns tags in instance metadata on or off
// (InstanceMetadataTags).
func (e *EC2) SetTagsEnabled(on bool) { e.edit(func() { e.tagsOff = !on }) }

// SetTokensOptional lets reads go without a token (HttpTokens=optional,
// IMDSv1) or not.
func (e *EC2) SetTokensOptional(optional bool) {
	e.edit(func() { e.tokensOptional = optional })
}

// SetDisabled turns the endpoint off (HttpEndpoint=disabled) or on.
func (e *EC2) SetDisabled(off bool) { e.edit(func() { e.disabled = off }) }

// ExpireTokens makes every token issued so far expired.
func (e *EC2) ExpireTokens() {
	e.edit(func() {
		for t := range e.tokens {
			e.tokens[t] = time.Time{}
		}
	})
}

// TokensIssued returns how many tokens were issued.
func (e *EC2) TokensIssued() int {
	e.dmu.Lock()
	defer e.dmu.Unlock()
	return e.issued
}

// Tokens returns every token issued so far, expired or not, so that tests
// can check they appear nowhere.
func (e *EC2) Tokens() []string {
	e.dmu.Lock()
	defer e.dmu.Unlock()
	return slices.Collect(maps.Keys(e.tokens))
}

func (e *EC2) edit(f func()) {
	e.dmu.Lock()
	defer e.dmu.Unlock()
	f()
}

// ServeHTTP implements http.Handler.
func (e *EC2) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !e.gate(w, r) {
		return
	}
	w.Header().Set("Content-Type", "text/plain")
	e.dmu.Lock()
	defer e.dmu.Unlock()

	switch {
	case e.disabled:
		http.Error(w, "Forbidden", http.StatusForbidden)
	case r.URL.Path == "/latest/api/token" && r.Method == http.MethodPut:
		e.issue(w, r)
	case r.Method != http.MethodGet:
		http.Error(w, "Method Not Allowed", http.StatusMethodNotAllowed)
	case !e.authorized(r):
		http.Error(w, "Unauthorized", http.StatusUnauthorized)
	default:
		e.read(w, r)
	}
}

// issue answers a token request.
func (e *EC2) issue(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("X-Forwarded-For") != "" {
		http.Error(w, "Forbidden", http.StatusForbidden)
		return
	}
	ttl, err := strconv.Atoi(r.Header.Get("X-aws-ec2-metadata-token-ttl-seconds"))
	if err != nil || ttl < 1 || ttl > 21600 {
		http.Error(w, "Bad Request", http.StatusBadRequest)
		return
	}

	token := randomToken()
	e.tokens[token] = time.Now().Add(time.Duration(ttl) * time.Second)
	e.issued++
	w.Header().Set("X-aws-ec2-metadata-token-ttl-seconds", strconv.Itoa(ttl))
	fmt.Fprint(w, token)
}

// authorized reports whether r may read.
func (e *EC2) authorized(r *http.Request) bool {
	token := r.Header.Get("X-aws-ec2-metadata-token")
	if token == "" {
		return e.tokensOptional
	}
	expiry, ok := e.tokens[token]
	return ok && time.Now().Before(expiry)
}

// read answers a GET under /latest/meta-data/.
func (e *EC2) read(w http.ResponseWriter, r *http.Request) {
	const tags = "/latest/meta-data/tags/instance"
	p := r.URL.Path
	switch {
	case p == "/latest/meta-data/instance-id":
		fmt.Fprint(w, "i-0123456789abcdef0")
	case e.tagsOff && (p == tags || strings.HasPrefix(p, tags+"/")):
		http.NotFound(w, r)
	case p == tags || p == tags+"/":
		fmt.Fprint(w, strings.Join(slices.Sorted(maps.Keys(e.tags)), "\n"))
	case strings.HasPrefix(p, tags+"/"):
		value, ok := e.tags[strings.TrimPrefix(p, tags+"/")]
		if !ok {
			http.NotFound(w, r)
			return
		}
		fmt.Fprint(w, value)
	default:
		http.NotFound(w, r)
	}
}
