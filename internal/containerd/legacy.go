package containerd

import (
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"

	"github.com/mirrord/mirrord/internal/spec"
)

// legacyRegistries turns the registry table's legacy mirrors entries into
// registries, the way containerd's CRI plugin read them: an endpoint without
// a scheme is https (http for localhost), an endpoint without a path serves
// /v2/ at its root, and one with a path is used as the API root verbatim.
// Endpoints that are the registry itself are dropped, since hosts.toml's
// server covers them; so are repeats.
func legacyRegistries(src []byte, exprs []expr, reg map[string]any, regPath []string) (
	[]spec.Registry, error) {

	raw, ok := reg["mirrors"]
	if !ok {
		return nil, nil
	}
	mirrorsPath := append(slices.Clone(regPath), "mirrors")
	mirrors, ok := raw.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("config.toml %s%s is %s, not a table of registries",
			renderKey(mirrorsPath), atLine(src, exprs, mirrorsPath), tomlType(raw))
	}

	var out []spec.Registry
	for _, name := range sortedKeys(mirrors) {
		key := append(slices.Clone(mirrorsPath), name)
		where := renderKey(key) + atLine(src, exprs, key)
		host, err := spec.NormalizeHost(name)
		if err != nil {
			return nil, fmt.Errorf("config.toml %s: %w", where, err)
		}
		table, ok := mirrors[name].(map[string]any)
		if !ok {
			return nil, fmt.Errorf("config.toml %s is %s, not a table with an endpoint list",
				where, tomlType(mirrors[name]))
		}
		endpoints, err := endpointList(table, where)
		if err != nil {
			return nil, err
		}

		i := slices.IndexFunc(out, func(r spec.Registry) bool { return r.Host == host })
		if i < 0 {
			out = append(out, spec.Registry{Host: host, Source: legacySource})
			i = len(out) - 1
		}
		for _, e := range endpoints {
			m, err := legacyMirror(e)
			if err != nil {
				return nil, fmt.Errorf("config.toml %s endpoint %q: %w", where, e, err)
			}
			if isUpstream(host, m) || slices.ContainsFunc(out[i].Mirrors,
				func(o spec.Mirror) bool { return o.URL == m.URL }) {
				continue
			}
			out[i].Mirrors = append(out[i].Mirrors, m)
		}
	}

	out = slices.DeleteFunc(out, func(r spec.Registry) bool { return len(r.Mirrors) == 0 })
	slices.SortFunc(out, func(a, b spec.Registry) int {
		switch {
		case a.Host == b.Host:
			return 0
		case a.Host == spec.Wildcard:
			return -1
		case b.Host == spec.Wildcard:
			return 1
		}
		return strings.Compare(a.Host, b.Host)
	})
	if len(out) == 0 {
		return nil, nil
	}
	return out, nil
}

// endpointList reads a mirrors entry's endpoint list.
func endpointList(table map[string]any, where string) ([]string, error) {
	raw, ok := table["endpoint"]
	if !ok {
		return nil, nil
	}
	list, ok := raw.([]any)
	if !ok {
		return nil, fmt.Errorf("config.toml %s endpoint is %s; want a list of URLs",
			where, tomlType(raw))
	}
	out := make([]string, 0, len(list))
	for _, v := range list {
		s, ok := v.(string)
		if !ok {
			return nil, fmt.Errorf("config.toml %s endpoint holds %s (%v); want URL strings",
				where, tomlType(v), v)
		}
		out = append(out, s)
	}
	return out, nil
}

// legacyMirror converts one legacy endpoint to a mirror.
func legacyMirror(endpoint string) (spec.Mirror, error) {
	if !strings.Contains(endpoint, "://") {
		scheme := "https"
		if u, err := url.Parse("dummy://" + endpoint); err == nil && isLocalhost(u.Hostname()) {
			scheme = "http"
		}
		endpoint = scheme + "://" + endpoint
	}
	u, err := url.Parse(endpoint)
	if err != nil {
		return spec.NewMirror(endpoint)
	}

	// containerd adds /v2 only to an endpoint without a path; a path ending
	// in /v2 is the same mirror as its parent in hosts.toml terms.
	p := strings.TrimRight(u.Path, "/")
	switch {
	case p == "" || p == "/v2":
		p = ""
	case strings.HasSuffix(p, "/v2"):
		p = strings.TrimSuffix(p, "/v2")
	default:
		return spec.Mirror{}, fmt.Errorf("containerd used the path %s as the API root, without "+
			"/v2, which a mirror URL cannot express; give this mirror in the mirrord spec "+
			"(or in hosts.toml with override_path) and remove the entry", u.Path)
	}
	u.Path, u.RawPath = p, ""
	return spec.NewMirror(u.String())
}

// isUpstream reports whether m is the registry host itself over https.
func isUpstream(host string, m spec.Mirror) bool {
	if m.Scheme() != "https" || m.Path() != "" {
		return false
	}
	h, err := spec.NormalizeHost(m.Host())
	return err == nil && h == host
}

// isLocalhost reports whether containerd would reach host over plain http
// by default: localhost and loopback addresses.
func isLocalhost(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
