package metadata

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
)

// fuzzSecret stands for a credential or a token in the fuzz targets' seeds:
// wherever it is in an answer, and not in a key's name, no error may show it.
const fuzzSecret = "s3cr3t-7Hq2"

// fuzzStatuses are the statuses the fake services answer with. 429 and 5xx
// are left out: Fetch retries them until the bound, which the tests of
// client.go cover, and a fuzz run would spend its time waiting.
var fuzzStatuses = []int{
	http.StatusOK, http.StatusNotFound, http.StatusForbidden, http.StatusUnauthorized,
	http.StatusBadRequest, http.StatusMovedPermanently, http.StatusMethodNotAllowed,
}

// fuzzStatus picks one of fuzzStatuses.
func fuzzStatus(b uint8) int { return fuzzStatuses[int(b)%len(fuzzStatuses)] }

// answer is what a fake service answers to one request.
type answer struct {
	status int
	body   []byte
}

// fakeService is an http.RoundTripper that answers from a table of paths
// (with the query) and records the requests, in place of the network.
type fakeService struct {
	mu      sync.Mutex
	answers map[string]answer
	serve   func(r *http.Request) answer // overrides answers when set
	seen    []*http.Request

	// attempts counts the requests per method and path, those refused
	// before they are sent included.
	attempts map[string]int

	// validateHeaders refuses a request with a header value net/http's
	// Transport would refuse, as it does, before it is sent.
	validateHeaders bool
}

func (s *fakeService) RoundTrip(r *http.Request) (*http.Response, error) {
	s.mu.Lock()
	if s.attempts == nil {
		s.attempts = map[string]int{}
	}
	s.attempts[r.Method+" "+r.URL.Path]++
	s.mu.Unlock()

	if s.validateHeaders {
		for name, values := range r.Header {
			for _, v := range values {
				if strings.ContainsFunc(v, func(c rune) bool {
					return c < ' ' && c != '\t' || c == 0x7f
				}) {
					return nil, fmt.Errorf("net/http: invalid header field value for %q", name)
				}
			}
		}
	}

	s.mu.Lock()
	s.seen = append(s.seen, r)
	a, ok := s.answers[r.URL.RequestURI()]
	if s.serve != nil {
		a, ok = s.serve(r), true
	}
	s.mu.Unlock()

	if !ok {
		a = answer{status: http.StatusNotFound}
	}
	return &http.Response{
		StatusCode: a.status,
		Status:     http.StatusText(a.status),
		Header:     http.Header{},
		Body:       io.NopCloser(bytes.NewReader(a.body)),
		Request:    r,
	}, nil
}

// fetchFake runs Fetch for provider against s, or against the node under
// root when s is nil.
func fetchFake(t *testing.T, provider, root string, s *fakeService, allowV1 bool) (Values,
	error) {
	t.Helper()

	o := Options{Provider: provider, Root: root, AllowIMDSv1: allowV1}
	if s != nil {
		o.Endpoint, o.transport = "http://metadata.test", s
	}
	return Fetch(t.Context(), o)
}

// checkValues fails unless err is nil and v holds exactly want, or want is
// empty and err says there is no metadata.
func checkValues(t *testing.T, what string, v Values, err error, want Values) {
	t.Helper()

	if want.Empty() {
		if !errors.Is(err, ErrNoMetadata) {
			t.Fatalf("%s: Fetch = %+v, %v; want ErrNoMetadata", what, v, err)
		}
		want.Source = nil
	} else if err != nil {
		t.Fatalf("%s: Fetch: %v; want %+v", what, err, want)
	}
	if diff := cmp.Diff(want, v); diff != "" {
		t.Fatalf("%s: values (-want +got):\n%s", what, diff)
	}
}

// checkSound checks what Fetch made of an answer it was given whole: an
// error that does not show fuzzSecret (unless a key's name holds it), or
// values each set with its source, each a string the answer holds.
func checkSound(t *testing.T, what string, v Values, err error, held map[string]bool,
	keysHold bool) {
	t.Helper()

	if err != nil {
		if !keysHold && strings.Contains(err.Error(), fuzzSecret) {
			t.Fatalf("%s: the error shows a value of the answer: %v", what, err)
		}
		if !errors.Is(err, ErrNoMetadata) && !v.Empty() {
			t.Fatalf("%s: values %+v beside the error %v", what, v, err)
		}
		return
	}

	set := map[string]string{KeyMirrors: v.Mirrors, KeyConfig: string(v.Config)}
	for key, value := range set {
		_, hasSource := v.Source[key]
		if (value != "") != hasSource {
			t.Fatalf("%s: key %s is %q with source %v", what, key, value, v.Source)
		}
		if value != "" && !held[value] {
			t.Fatalf("%s: key %s is %q, which the answer does not hold", what, key, value)
		}
	}
	if len(v.Source) > len(keys) {
		t.Fatalf("%s: sources for keys mirrord does not read: %v", what, v.Source)
	}
}

// jsonStrings returns every string in a JSON text, keys and values, as
// decoded; with nested set, also those of every string that is JSON text
// itself and of every string that decodes as base64. It is a superset of
// what a provider may take from the text, duplicate keys included.
func jsonStrings(data []byte, nested bool) map[string]bool {
	out := map[string]bool{}
	var walk func(data []byte, depth int)
	walk = func(data []byte, depth int) {
		dec := json.NewDecoder(bytes.NewReader(data))
		for {
			tok, err := dec.Token()
			if err != nil {
				return
			}
			s, isString := tok.(string)
			if !isString {
				continue
			}
			out[s] = true
			if nested && depth < 3 {
				walk([]byte(s), depth+1)
				if b, err := base64.StdEncoding.DecodeString(s); err == nil {
					out[string(b)] = true
				}
			}
		}
	}
	walk(data, 0)
	return out
}

// keyHolds reports whether an object key anywhere in data, a JSON text or
// JSON texts nested in its strings, holds fuzzSecret.
func keyHolds(data []byte) bool {
	var v any
	if json.Unmarshal(data, &v) != nil {
		return false
	}
	var walk func(v any, depth int) bool
	walk = func(v any, depth int) bool {
		switch v := v.(type) {
		case map[string]any:
			for k, e := range v {
				if strings.Contains(k, fuzzSecret) || walk(e, depth) {
					return true
				}
			}
		case []any:
			for _, e := range v {
				if walk(e, depth) {
					return true
				}
			}
		case string:
			var inner any
			if depth < 3 && json.Unmarshal([]byte(v), &inner) == nil {
				return walk(inner, depth+1)
			}
		}
		return false
	}
	return walk(v, 0)
}

// placeNames are the places FuzzCloudInit puts the keys at, as lookupKey
// searches them.
var placeNames = [][]string{
	{"instance-data"}, {"tags", "instance"}, {"meta"}, {"imds", "compute", "tagsList"}, {},
	{"project-data"},
}

// FuzzCloudInit reads an instance-data.json from disk as the cloud-init
// provider does, and checks that Fetch gives an error that shows no value
// of the file, or values that the file holds, each with its source. Then it
// writes a file of its own with both keys at one of the places cloud-init
// keeps them (as text or base64, spelt with '-' or '_'), beside a secret,
// and checks that Fetch gives exactly those values from that place.
func FuzzCloudInit(f *testing.F) {
	f.Add([]byte(`{"v1": {"cloud_name": "gce"}, "ds": {"meta_data": {"instance-data": `+
		`"{\"mirrord-mirrors\": \"docker.io=https://m.example.net\", \"ssh-keys\": \"`+
		fuzzSecret+`\"}"}}}`), "docker.io=https://m.example.net", "", uint8(0), false)
	f.Add([]byte(`{"ds": {"meta-data": {"tags": {"instance": {"mirrord_config": "x"}}}}, `+
		`"base64_encoded_keys": ["ds/meta-data/tags/instance/mirrord_config"]}`), "",
		"[registries.\"quay.io\"]\nmirrors = [\"https://q.example.net\"]\n", uint8(1), true)
	f.Add([]byte(`{"ds": {"meta_data": {"imds": {"compute": {"tagsList": [{"name": `+
		`"Mirrord-Mirrors", "value": "quay.io=https://q"}]}}}}}`), "*=https://all", "x",
		uint8(3), false)
	f.Add([]byte(`{"ds": {"meta_data": {"mirrord-mirrors": "%%%"}}, `+
		`"base64_encoded_keys": ["ds/meta_data/mirrord-mirrors"]}`), "a", "b", uint8(4), true)
	root := f.TempDir()
	path := filepath.Join(root, instanceDataPath)

	f.Fuzz(func(t *testing.T, doc []byte, mirrors, config string, where uint8, b64 bool) {
		writeFile(t, root, instanceDataPath, string(doc))
		v, err := fetchFake(t, CloudInit, root, nil, false)
		checkSound(t, path, v, err, jsonStrings(doc, true), keyHolds(doc))

		if !b64 && !allValid(mirrors, config) {
			return // JSON would change them; the first half covers such text
		}
		own, want := ownInstanceData(mirrors, config, where, b64)
		writeFile(t, root, instanceDataPath, string(own))
		v, err = fetchFake(t, CloudInit, root, nil, false)
		checkValues(t, string(own), v, err, want)
	})
}

// ownInstanceData returns an instance-data.json with mirrors and config at
// the place where picks, and the values Fetch should read from it.
func ownInstanceData(mirrors, config string, where uint8, b64 bool) ([]byte, Values) {
	place := placeNames[int(where)%len(placeNames)]
	azure := len(place) == 3
	underscores := where&0x10 != 0
	spell := func(name string) string {
		if underscores {
			return strings.ReplaceAll(name, "-", "_")
		}
		return name
	}
	mdName := "meta_data"
	if where&0x20 != 0 {
		mdName = "meta-data"
	}
	var names []string
	for _, n := range place {
		names = append(names, spell(n))
	}

	want := Values{Provider: CloudInit}
	entries := map[string]any{}
	var tags []any
	var b64Keys []string
	for _, kv := range [][2]string{{KeyMirrors, mirrors}, {KeyConfig, config}} {
		key, value := kv[0], kv[1]
		name := spell(key)
		if azure { // Azure's tag names compare without regard to case
			name = strings.ToUpper(key)
		}
		stored := value
		if b64 {
			stored = base64.StdEncoding.EncodeToString([]byte(value))
		}
		if azure {
			tags = append(tags, map[string]any{"name": name, "value": stored})
		} else {
			entries[name] = stored
		}

		full := slices.Concat([]string{"ds", mdName}, names, []string{name})
		if b64 {
			b64Keys = append(b64Keys, strings.Join(full, "/"))
		}
		if value != "" {
			want.set(key, value, "cloud-init /"+instanceDataPath+" "+strings.Join(full, "."))
		}
	}

	var at any = entries
	if azure {
		at = tags
	}
	for i := len(names) - 1; i >= 0; i-- {
		if place[i] == "instance-data" && where&0x40 != 0 {
			text, _ := json.Marshal(at) // GCE's attributes as JSON text
			at = string(text)
		}
		at = map[string]any{names[i]: at}
	}
	md := at.(map[string]any)
	md["local-hostname"] = "node-1"
	md["admin-pass"] = fuzzSecret

	doc, _ := json.Marshal(map[string]any{
		"v1":                  map[string]any{"cloud_name": "nocloud"},
		"ds":                  map[string]any{mdName: md},
		"base64_encoded_keys": b64Keys,
	})
	return doc, want
}

// FuzzCompute gives the gce or yandex provider fuzzed answers: a status and
// a body for each attribute it reads, and a recursive JSON document for a
// long poll. Fetch must give exactly the values the answers hold (the
// instance attribute, else on gce the project attribute; a 404 or an empty
// value is absent) or, when an answer it needed has another status, an
// error that shows no body; the long poll must give an error or values
// that the document holds, each with its source. Then a document built
// from the attributes must give the same values by long poll as by Fetch.
func FuzzCompute(f *testing.F) {
	f.Add(false, "docker.io=https://m.example.net", "", fuzzSecret, "[registries]\n",
		uint16(0x0101), []byte(`{"instance": {"attributes": {"mirrord-mirrors": "a", `+
			`"ssh-keys": "`+fuzzSecret+`"}}, "project": {"attributes": {"mirrord-config": "b"}}}`))
	f.Add(true, "", "x", "", "", uint16(0x2301), []byte(`{"attributes": {"mirrord-config": 1, `+
		`"mirrord-mirrors": "quay.io=https://q"}, "hostname": "vm"}`))
	f.Add(false, "a", "b", "c", "d", uint16(0xffff), []byte(`{"instance": null}`))

	f.Fuzz(func(t *testing.T, yandex bool, instMirrors, instConfig, projMirrors,
		projConfig string, statuses uint16, doc []byte) {
		provider := GCE
		if yandex {
			provider = Yandex
		}
		attrs := map[string]map[string]string{
			"instance": {KeyMirrors: instMirrors, KeyConfig: instConfig},
			"project":  {KeyMirrors: projMirrors, KeyConfig: projConfig},
		}
		s := &fakeService{answers: map[string]answer{}}
		status := map[string]int{}
		bit := 0
		for _, level := range []string{"instance", "project"} {
			for _, key := range keys {
				path := computePrefix + level + "/attributes/" + key
				status[path] = fuzzStatus(uint8(statuses >> bit & 0xf))
				bit += 4
				s.answers[path] = answer{status[path], []byte(attrs[level][key])}
			}
		}

		v, err := fetchFake(t, provider, "", s, false)
		want, wantErr := computeWant(provider, attrs, status)
		if wantErr {
			checkUnavailable(t, provider, v, err)
		} else {
			checkValues(t, "Fetch", v, err, want)
		}
		for _, r := range s.seen {
			if r.Header.Get("Metadata-Flavor") != "Google" {
				t.Fatalf("%s sent without Metadata-Flavor: Google", r.URL)
			}
		}

		p := fakeProvider(t, provider, &fakeService{serve: func(*http.Request) answer {
			return answer{http.StatusOK, doc}
		}}).(*compute)
		lv, _, err := p.wait(t.Context(), "NONE", time.Second)
		lv.Provider = provider
		checkSound(t, "long poll", lv, err, jsonStrings(doc, false), keyHolds(doc))

		if !allValid(instMirrors, instConfig, projMirrors, projConfig) {
			return
		}
		whole := map[string]any{"instance": map[string]any{"attributes": attrs["instance"]},
			"project": map[string]any{"attributes": attrs["project"]}}
		if yandex {
			whole = map[string]any{"attributes": attrs["instance"]}
		}
		body, _ := json.Marshal(whole)
		p = fakeProvider(t, provider, &fakeService{serve: func(*http.Request) answer {
			return answer{http.StatusOK, body}
		}}).(*compute)
		lv, _, err = p.wait(t.Context(), "NONE", time.Second)
		lv.Provider = provider
		want, _ = computeWant(provider, attrs, nil)
		if lv.Empty() && err == nil {
			err = ErrNoMetadata
		}
		checkValues(t, "long poll of "+string(body), lv, err, want)
	})
}

// computeWant returns the values Fetch should give for the attributes and
// the statuses of their reads (nil: all 200), and whether it should fail.
func computeWant(provider string, attrs map[string]map[string]string,
	status map[string]int) (Values, bool) {
	statusOf := func(level, key string) int {
		if status == nil {
			return http.StatusOK
		}
		return status[computePrefix+level+"/attributes/"+key]
	}

	want := Values{Provider: provider}
	for _, key := range keys {
		st := statusOf("instance", key)
		switch {
		case st == http.StatusOK && attrs["instance"][key] != "":
			want.set(key, attrs["instance"][key], provider+" instance attribute "+key)
			continue
		case st != http.StatusOK && st != http.StatusNotFound:
			return Values{}, true
		case provider == Yandex:
			continue
		}

		switch st := statusOf("project", key); st {
		case http.StatusOK:
			want.set(key, attrs["project"][key], provider+" project attribute "+key)
		case http.StatusNotFound:
		default:
			return Values{}, true
		}
	}
	return want, false
}

// fakeProvider returns the provider called name with s for its network.
func fakeProvider(t *testing.T, name string, s *fakeService) provider {
	t.Helper()

	o, err := Options{Provider: name, Endpoint: "http://metadata.test",
		transport: s}.normalized()
	if err != nil {
		t.Fatal(err)
	}
	p, err := newProvider(name, o)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// checkUnavailable fails unless err says the service answered with a
// status mirrord cannot use, v holds nothing but the provider, and err
// shows no body.
func checkUnavailable(t *testing.T, provider string, v Values, err error) {
	t.Helper()

	var fe *fetchError
	if err == nil || !errors.Is(err, ErrNoMetadata) || !errors.As(err, &fe) ||
		fe.kind != kindUnavailable {
		t.Fatalf("Fetch = %+v, %v; want the error of an unusable answer", v, err)
	}
	if diff := cmp.Diff(Values{Provider: provider}, v); diff != "" {
		t.Fatalf("values beside the error %v (-want +got):\n%s", err, diff)
	}
	if strings.Contains(err.Error(), fuzzSecret) {
		t.Fatalf("the error shows a body: %v", err)
	}
}

// FuzzEC2 gives the aws provider a fuzzed token answer and a status and a
// body for each tag, optionally refusing the first token once with 401 as
// an expired one, and checks that Fetch gives exactly the tags' values
// (404 is absent), reads with the token whenever it got one and IMDSv1
// only when allowed, retries nothing but a 401 once, and fails on any
// other answer with an error that shows neither the token nor a body.
func FuzzEC2(f *testing.F) {
	f.Add([]byte("AQAEAFx"+fuzzSecret+"=="), uint8(0), uint8(0), uint8(1),
		"docker.io=https://m.example.net", "", false, false)
	f.Add([]byte(fuzzSecret), uint8(0), uint8(0), uint8(0), "a", "b", false, true)
	f.Add([]byte(""), uint8(2), uint8(0), uint8(0), "a", "b", true, false)
	f.Add([]byte("<html>\n"+fuzzSecret+"\n</html>"), uint8(0), uint8(0), uint8(0), "a", "b",
		false, false)

	f.Fuzz(func(t *testing.T, token []byte, tokenStatus, mirrorsStatus, configStatus uint8,
		mirrors, config string, allowV1, expireOnce bool) {
		tags := map[string]answer{
			KeyMirrors: {fuzzStatus(mirrorsStatus), []byte(mirrors)},
			KeyConfig:  {fuzzStatus(configStatus), []byte(config)},
		}
		tokenAnswer := answer{fuzzStatus(tokenStatus), token}
		expired := !expireOnce
		s := &fakeService{serve: func(r *http.Request) answer {
			if r.Method == http.MethodPut {
				if r.URL.Path != ec2TokenPath || r.Header.Get(ec2TTLHeader) == "" {
					t.Errorf("token asked at %s %s with TTL %q", r.Method, r.URL,
						r.Header.Get(ec2TTLHeader))
				}
				return tokenAnswer
			}
			key, ok := strings.CutPrefix(r.URL.Path, ec2TagsPrefix)
			if !ok || r.Method != http.MethodGet {
				t.Errorf("unexpected request %s %s", r.Method, r.URL)
			}
			if got := r.Header.Get(ec2TokenHeader); got != "" && !expired {
				expired = true
				return answer{status: http.StatusUnauthorized}
			}
			return tags[key]
		}}
		s.validateHeaders = true

		v, err := fetchFake(t, AWS, "", s, allowV1)
		if err != nil && strings.Contains(err.Error(), fuzzSecret) {
			t.Fatalf("the error shows the token or a body: %v", err)
		}
		for path, n := range s.attempts {
			limit := 2 // a 401 calls for one more read with a new token
			if strings.HasPrefix(path, http.MethodPut) {
				limit = 2 * len(keys) // IMDSv1 asks again on every read
			}
			if n > limit {
				t.Fatalf("%s sent %d times; no answer here calls for more than %d", path, n,
					limit)
			}
		}

		authed, readable := ec2Auth(tokenAnswer, allowV1)
		for _, r := range s.seen {
			if r.Method == http.MethodGet && authed &&
				r.Header.Get(ec2TokenHeader) != string(token) {
				t.Fatalf("%s read without the token", r.URL)
			}
		}
		if !readable {
			checkUnavailable(t, AWS, v, err)
			return
		}
		want := Values{Provider: AWS}
		for _, key := range keys {
			switch a := tags[key]; a.status {
			case http.StatusOK:
				want.set(key, string(a.body), "aws instance tag "+key)
			case http.StatusNotFound:
			default:
				checkUnavailable(t, AWS, v, err)
				return
			}
		}
		checkValues(t, "Fetch", v, err, want)
	})
}

// ec2Auth says whether the token answer a gives a token, and whether the
// tags can be read at all: with the token, or without one when IMDSv1 is
// allowed and the token is refused as IMDS refuses it where v1 works.
func ec2Auth(a answer, allowV1 bool) (authed, readable bool) {
	if a.status == http.StatusOK {
		ok := len(a.body) > 0 && len(a.body) <= ec2TokenMaxLength &&
			!bytes.ContainsFunc(a.body, func(r rune) bool { return r < 0x21 || r > 0x7e })
		return ok, ok
	}
	switch a.status {
	case http.StatusForbidden, http.StatusNotFound, http.StatusMethodNotAllowed:
		return false, allowV1
	}
	return false, false
}

// FuzzAzure gives the azure provider a fuzzed tagsList answer and checks
// that Fetch gives an error that shows no body, or values that the answer
// holds under tag names that match the keys without regard to case. Then
// it serves a list of its own (three tags, any names) and checks that each
// key takes the value of the first tag named so that is not empty.
func FuzzAzure(f *testing.F) {
	f.Add(uint8(0), []byte(`[{"name": "mirrord-mirrors", "value": "docker.io=https://m"}, `+
		`{"name": "token", "value": "`+fuzzSecret+`"}]`),
		"Mirrord-Config", "x", "mirrord-config", "y", "env", fuzzSecret)
	f.Add(uint8(0), []byte(`{"tagsList": []}`), "MIRRORD-MIRRORS", "", "mirrord-mirrors", "z",
		"", "")
	f.Add(uint8(1), []byte(`[{"name": 1}]`), "a", "b", "c", "d", "e", "f")

	f.Fuzz(func(t *testing.T, status uint8, body []byte, n1, v1, n2, v2, n3, v3 string) {
		st := fuzzStatus(status)
		s := &fakeService{serve: func(r *http.Request) answer {
			if r.URL.Path != azureTagsPath || r.Header.Get("Metadata") != "true" ||
				r.URL.Query().Get("api-version") == "" {
				t.Errorf("unexpected request %s with Metadata %q", r.URL,
					r.Header.Get("Metadata"))
			}
			return answer{st, body}
		}}
		v, err := fetchFake(t, Azure, "", s, false)
		switch st {
		case http.StatusOK:
			checkSound(t, "tagsList", v, err, jsonStrings(body, false), keyHolds(body))
			for key, src := range v.Source {
				name, _ := strings.CutPrefix(src, "azure tag ")
				if !strings.EqualFold(name, key) {
					t.Fatalf("key %s taken from tag %q", key, name)
				}
			}
		case http.StatusNotFound:
			checkValues(t, "404", v, err, Values{Provider: Azure})
		default:
			checkUnavailable(t, Azure, v, err)
		}

		if !allValid(n1, v1, n2, v2, n3, v3) {
			return
		}
		tags := [][2]string{{n1, v1}, {n2, v2}, {n3, v3}}
		var list []map[string]string
		want := Values{Provider: Azure}
		for _, key := range keys {
			for _, tag := range tags {
				if strings.EqualFold(tag[0], key) && tag[1] != "" && !want.has(key) {
					want.set(key, tag[1], "azure tag "+tag[0])
				}
			}
		}
		for _, tag := range tags {
			list = append(list, map[string]string{"name": tag[0], "value": tag[1]})
		}
		own, _ := json.Marshal(list)
		v, err = fetchFake(t, Azure, "", &fakeService{serve: func(*http.Request) answer {
			return answer{http.StatusOK, own}
		}}, false)
		checkValues(t, string(own), v, err, want)
	})
}

// FuzzOpenStack gives the openstack provider a fuzzed meta_data.json, from
// the metadata service and from a config drive, and checks that both give
// an error that shows no value of the file, or the same values, which the
// file holds. Then it serves a meta_data.json of its own with both keys in
// meta beside a secret and checks that Fetch gives exactly them.
func FuzzOpenStack(f *testing.F) {
	f.Add([]byte(`{"uuid": "d8e02d56", "meta": {"mirrord-mirrors": "docker.io=https://m", `+
		`"admin_pass": "`+fuzzSecret+`"}, "public_keys": {"k": "ssh-ed25519 AAAA"}}`),
		uint8(0), "docker.io=https://m.example.net", "")
	f.Add([]byte(`{"meta": {"mirrord-config": ["x"]}, "Meta": {"mirrord-mirrors": "y"}}`),
		uint8(0), "", "[registries]\n")
	f.Add([]byte(`{"meta": "`+fuzzSecret+`"}`), uint8(3), "a", "b")
	root := f.TempDir()
	drive := filepath.Join(configDriveMounts[0], openStackMetaPath)

	f.Fuzz(func(t *testing.T, doc []byte, status uint8, mirrors, config string) {
		st := fuzzStatus(status)
		s := &fakeService{serve: func(r *http.Request) answer {
			if r.URL.Path != openStackMetaPath {
				t.Errorf("unexpected request %s", r.URL)
			}
			return answer{st, doc}
		}}
		v, err := fetchFake(t, OpenStack, root, s, false)
		switch st {
		case http.StatusOK:
			checkSound(t, "service", v, err, jsonStrings(doc, false), keyHolds(doc))
		default:
			checkUnavailable(t, OpenStack, v, err)
		}

		writeFile(t, root, drive, string(doc))
		dv, derr := fetchFake(t, OpenStack, root, nil, false)
		checkSound(t, "config drive", dv, derr, jsonStrings(doc, false), keyHolds(doc))
		if st == http.StatusOK && (err == nil) != (derr == nil) ||
			err == nil && derr == nil && (dv.Mirrors != v.Mirrors ||
				!bytes.Equal(dv.Config, v.Config)) {
			t.Fatalf("the service gives %+v, %v; the config drive %+v, %v", v, err, dv, derr)
		}

		if !allValid(mirrors, config) {
			return
		}
		own, _ := json.Marshal(map[string]any{"uuid": "d8e02d56", "name": "node-1",
			"meta": map[string]any{KeyMirrors: mirrors, KeyConfig: config,
				"admin_pass": fuzzSecret}})
		v, err = fetchFake(t, OpenStack, root, &fakeService{serve: func(*http.Request) answer {
			return answer{http.StatusOK, own}
		}}, false)
		want := Values{Provider: OpenStack}
		want.set(KeyMirrors, mirrors, "openstack meta "+KeyMirrors)
		want.set(KeyConfig, config, "openstack meta "+KeyConfig)
		checkValues(t, string(own), v, err, want)
	})
}

// allValid reports whether every string is valid UTF-8, which JSON keeps as
// it is. Each is checked alone: an invalid end of one may run on into a
// valid string after it.
func allValid(ss ...string) bool {
	for _, s := range ss {
		if !utf8.ValidString(s) {
			return false
		}
	}
	return true
}
