package spec

import (
	"encoding/base64"
	"fmt"
	"log/slog"
	"strings"
	"unicode"
)

// Secret holds a password or token. Every way of printing it (fmt's verbs,
// JSON, text marshalling, slog) shows Redacted instead; only Reveal gives
// the value, and only the code that writes it into a 0600 file or sends it
// to the mirror calls Reveal.
type Secret struct{ v string }

// Redacted is what a Secret prints as.
const Redacted = "(secret)"

// NewSecret wraps v.
func NewSecret(v string) Secret { return Secret{v} }

// Reveal returns the value.
func (s Secret) Reveal() string { return s.v }

// IsZero reports whether the secret is empty.
func (s Secret) IsZero() bool { return s.v == "" }

// Equal reports whether s and o hold the same value; go-cmp uses it, so
// that comparing specs in tests never looks inside.
func (s Secret) Equal(o Secret) bool { return s.v == o.v }

// String returns Redacted, whatever the value.
func (s Secret) String() string { return Redacted }

// GoString returns Redacted, for %#v.
func (s Secret) GoString() string { return Redacted }

// Format prints Redacted for every verb.
func (s Secret) Format(f fmt.State, _ rune) { fmt.Fprint(f, Redacted) }

// MarshalText returns Redacted: a Secret never leaves in JSON or TOML.
func (s Secret) MarshalText() ([]byte, error) { return []byte(Redacted), nil }

// LogValue returns Redacted.
func (s Secret) LogValue() slog.Value { return slog.StringValue(Redacted) }

// Auth is the credentials mirrord gives a mirror: a user name and a
// password or token from a file, the environment or instance metadata,
// never from the mirror's URL. containerd gets them as a static
// "Authorization: Basic" header of that mirror's host entry.
//
// Only Key and Name are ever shown or stored in mirrord's state; the user
// name and the password are in the hosts.toml files (0600) and nowhere
// else.
type Auth struct {
	// Username is the user name; it has no ':' (HTTP Basic forbids one)
	// and no control character.
	Username string `json:"-"`

	// Password is the password or token, read from where Key and Name say.
	Password Secret `json:"-"`

	// Key is the key that named the password's source: KeyPasswordFile,
	// KeyPasswordEnv or KeyPasswordMetadata.
	Key string `json:"key"`

	// Name is that key's value: a node path, a variable, a metadata entry.
	Name string `json:"name"`
}

// The keys of a mirror's table that name where its password comes from.
const (
	KeyPasswordFile     = "password_file"
	KeyPasswordEnv      = "password_env"
	KeyPasswordMetadata = "password_metadata"
)

// From says where the password came from, e.g. "password_file
// /etc/mirrord/secrets/gitlab"; it is safe to show.
func (a Auth) From() string { return a.Key + " " + a.Name }

// File returns the node path of the password file, "" when the password
// comes from elsewhere: the watch follows that file.
func (a Auth) File() string {
	if a.Key == KeyPasswordFile {
		return a.Name
	}
	return ""
}

// Header returns the value of the Authorization header for a: "Basic "
// and the base64 of user:password.
func (a Auth) Header() Secret {
	raw := a.Username + ":" + a.Password.Reveal()
	return NewSecret("Basic " + base64.StdEncoding.EncodeToString([]byte(raw)))
}

// CheckUsername returns an error saying what is wrong with a user name, or
// nil. The error does not repeat the name, which may hold a password
// pasted in by mistake ("user:token").
func CheckUsername(u string) error {
	switch {
	case u == "":
		return fmt.Errorf("is empty; want the user name the mirror knows")
	case strings.Contains(u, ":"):
		return fmt.Errorf("has a ':', which HTTP Basic authentication cannot carry " +
			"(value not shown: it may hold a password); give the password apart")
	case strings.IndexFunc(u, unicode.IsControl) >= 0:
		return fmt.Errorf("has a control character (value not shown)")
	}
	return nil
}

// ParseSecret checks a password or token read from a file, the
// environment or metadata and returns it without the line end a file
// usually has. It refuses an empty value and one with a control character
// inside, such as a second line, which would not survive as a header. The
// error never repeats the value.
func ParseSecret(raw string) (Secret, error) {
	v := strings.TrimRight(raw, "\r\n")
	v = strings.TrimSpace(v)
	switch {
	case v == "":
		return Secret{}, fmt.Errorf("is empty; want the token or password")
	case strings.IndexFunc(v, unicode.IsControl) >= 0:
		return Secret{}, fmt.Errorf("has a control character or more than one line; " +
			"want the token or password alone")
	}
	return NewSecret(v), nil
}
