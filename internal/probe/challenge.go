package probe

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/mirrord/mirrord/internal/spec"
)

// challenge is one parsed WWW-Authenticate header.
type challenge struct {
	scheme string // lowercase: "basic" or "bearer"
	params map[string]string
}

// parseChallenge reads the first challenge of a WWW-Authenticate header:
// a scheme, then comma-separated key=value pairs, values quoted or not.
// It returns ok false for a header it cannot read.
func parseChallenge(h string) (challenge, bool) {
	scheme, rest, _ := strings.Cut(strings.TrimSpace(h), " ")
	c := challenge{scheme: strings.ToLower(scheme), params: map[string]string{}}
	if c.scheme != "basic" && c.scheme != "bearer" {
		return c, false
	}

	for rest = strings.TrimSpace(rest); rest != ""; {
		key, after, ok := strings.Cut(rest, "=")
		if !ok {
			break
		}
		key = strings.ToLower(strings.TrimSpace(key))
		after = strings.TrimSpace(after)

		var value string
		if strings.HasPrefix(after, `"`) {
			var b strings.Builder
			i := 1
			for ; i < len(after) && after[i] != '"'; i++ {
				if after[i] == '\\' && i+1 < len(after) {
					i++
				}
				b.WriteByte(after[i])
			}
			value, rest = b.String(), strings.TrimPrefix(after[min(i+1, len(after)):], ",")
		} else {
			value, rest, _ = strings.Cut(after, ",")
		}
		c.params[key] = strings.TrimSpace(value)
		rest = strings.TrimSpace(rest)
	}
	if c.scheme == "bearer" && c.params["realm"] == "" {
		return c, false
	}
	return c, true
}

// maxTokenBody bounds a token response; real ones are a few KiB.
const maxTokenBody = 1 << 20

// fetchToken asks a Bearer challenge's realm for a token for scope (the
// challenge's own scope when empty), sending auth's Basic credentials when
// set, as a registry client does. Errors never hold the token or the
// response body.
func (p *prober) fetchToken(ctx context.Context, c challenge, scope string,
	auth *spec.Auth) (spec.Secret, error) {
	realm, err := url.Parse(c.params["realm"])
	if err != nil || (realm.Scheme != "https" && realm.Scheme != "http") {
		return spec.Secret{}, fmt.Errorf("token realm %q is not an http(s) URL",
			c.params["realm"])
	}
	q := realm.Query()
	if s := c.params["service"]; s != "" {
		q.Set("service", s)
	}
	if scope == "" {
		scope = c.params["scope"]
	}
	if scope != "" {
		q.Set("scope", scope)
	}
	realm.RawQuery = q.Encode()

	req, err := http.NewRequestWithContext(ctx, http.MethodGet, realm.String(), nil)
	if err != nil {
		return spec.Secret{}, fmt.Errorf("token request: %w", err)
	}
	req.Header.Set("User-Agent", p.o.UserAgent)
	if auth != nil {
		req.Header.Set("Authorization", auth.Header().Reveal())
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return spec.Secret{}, fmt.Errorf("token realm %s: %w", redactURL(realm), cause(err))
	}
	defer resp.Body.Close()

	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxTokenBody))
		return spec.Secret{}, fmt.Errorf("token realm %s answered %s", redactURL(realm),
			resp.Status)
	}
	var body struct {
		Token       string `json:"token"`
		AccessToken string `json:"access_token"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxTokenBody)).Decode(&body); err != nil {
		return spec.Secret{}, fmt.Errorf("token realm %s: response is not a token document",
			redactURL(realm))
	}
	tok := body.Token
	if tok == "" {
		tok = body.AccessToken
	}
	if tok == "" {
		return spec.Secret{}, fmt.Errorf("token realm %s: response has no token",
			redactURL(realm))
	}
	return spec.NewSecret(tok), nil
}

// redactURL is u without its query, which may name an account.
func redactURL(u *url.URL) string {
	c := *u
	c.RawQuery, c.User = "", nil
	return c.String()
}
