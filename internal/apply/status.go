package apply

import (
	"bytes"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2"

	"github.com/mirrord/mirrord/internal/config"
	"github.com/mirrord/mirrord/internal/containerd"
	"github.com/mirrord/mirrord/internal/docker"
	"github.com/mirrord/mirrord/internal/health"
	"github.com/mirrord/mirrord/internal/spec"
)

// Diff renders the Plan's changes as one unified diff per file, paths as the
// node sees them; a created file comes from /dev/null, a removed one goes to
// it. Credentials never show: every line that carries one has its value
// masked, in old and new alike, and a change of credentials alone is
// named, not shown.
func (p *Plan) Diff() string {
	var b strings.Builder
	for _, c := range p.Changes {
		b.WriteString(diffFile(c, p.Spec))
	}
	return b.String()
}

// Status is what is in effect on a node: per runtime, the mirrors its files
// carry and where they came from; whether the node matches the spec; what
// mirrord last did.
type Status struct {
	Root string `json:"root"`
	// InSync is true when applying now would change nothing.
	InSync bool `json:"in_sync"`
	// Pending lists the files an apply would change now.
	Pending []string `json:"pending,omitempty"`
	// Error says why the spec or a runtime file could not be read; the rest
	// of the Status then comes from the files alone.
	Error string `json:"error,omitempty"`
	// Drift lists the files mirrord owns that no longer say what the spec
	// wants: someone else changed mirrord's part of them.
	Drift []string `json:"drift,omitempty"`
	// PendingActions failed last time and are retried by the next apply.
	PendingActions []Action `json:"pending_actions,omitempty"`
	// Demoted lists the mirrors the watch's probes moved behind the healthy
	// ones in hosts.toml.
	Demoted []health.Entry `json:"demoted,omitempty"`
	// LastError says why they failed.
	LastError string          `json:"last_error,omitempty"`
	Runtimes  []RuntimeStatus `json:"runtimes"`
	Warnings  []string        `json:"warnings,omitempty"`
	Last      *Event          `json:"last,omitempty"`
}

// RuntimeStatus is one runtime's mirrors as its files say.
type RuntimeStatus struct {
	Runtime config.Runtime `json:"runtime"`
	Unit    string         `json:"unit"`
	// ConfigPath is containerd's config_path as config.toml sets it.
	ConfigPath string           `json:"config_path,omitempty"`
	Registries []RegistryStatus `json:"registries"`
}

// RegistryStatus is one registry's mirrors in one runtime.
type RegistryStatus struct {
	Host    string   `json:"host"`
	Mirrors []string `json:"mirrors"`
	// Source is the layer that set these mirrors, or "not mirrord's".
	Source string `json:"source"`
	File   string `json:"file"`
}

// ReadStatus reports the node's state. cfg may carry an error from loading
// the spec (cfgErr): the files are still read and shown.
func ReadStatus(cfg config.Config, cfgErr error) (*Status, error) {
	st, err := LoadState(cfg.Root)
	if err != nil {
		return nil, err
	}
	s := &Status{Root: cfg.Root, Last: st.Last, PendingActions: st.Pending,
		LastError: st.LastError}

	if cfgErr == nil {
		p, err := Build(cfg, discardLogger())
		if err != nil {
			cfgErr = err
		} else {
			s.InSync = len(p.Changes) == 0 && len(st.Pending) == 0
			for _, c := range p.Changes {
				s.Pending = append(s.Pending, c.Path)
				if st.Files[c.Path] != nil && !c.Restore {
					s.Drift = append(s.Drift, c.Path)
				}
			}
			s.Warnings = p.Warnings
			if p.Health.Fresh(time.Now()) {
				s.Demoted = p.Health.Demoted
			}
		}
	}
	if cfgErr != nil {
		s.Error = cfgErr.Error()
	}

	runtimes := cfg.Runtimes
	if runtimes == nil {
		runtimes = DetectRuntimes(cfg.Root)
	}
	for _, rt := range runtimes {
		rs := RuntimeStatus{Runtime: rt, Unit: rt.Unit(), Registries: []RegistryStatus{}}
		switch rt {
		case config.Containerd:
			rs.ConfigPath, rs.Registries = containerdStatus(cfg.Root, st.Spec)
		case config.Docker:
			rs.Registries = append(dockerStatus(cfg.Root, st.Spec),
				hostsStatus(cfg.Root, docker.CertsDir, st.Spec)...)
		case config.CRIO, config.Podman:
			rs.Registries = containersStatus(cfg.Root, st.Spec)
		case config.K3s, config.RKE2:
			rs.Registries = rancherStatus(cfg.Root, rt, st.Spec)
		}
		s.Runtimes = append(s.Runtimes, rs)
	}
	return s, nil
}

func containerdStatus(root string, last spec.Spec) (string, []RegistryStatus) {
	configPath := ""
	if data, err := os.ReadFile(filepath.Join(root, containerd.ConfigFile)); err == nil {
		configPath = readConfigPath(data)
	}
	return configPath, hostsStatus(root, containerd.CertsDir, last)
}

// hostsStatus lists the registries of the hosts.toml files under dir, a
// certs.d directory: containerd's, or dockerd's for its containerd store.
func hostsStatus(root, dir string, last spec.Spec) []RegistryStatus {
	out := []RegistryStatus{}
	files, _ := filepath.Glob(filepath.Join(root, dir, "*", "hosts.toml"))
	slices.Sort(files)
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			continue
		}
		hf, err := containerd.ParseHosts(data)
		if err != nil {
			continue
		}
		host := filepath.Base(filepath.Dir(file))
		if host == "_default" {
			host = spec.Wildcard
		}
		source := "not mirrord's"
		if hf.Managed {
			source = managedSource(last, host)
		}
		out = append(out, RegistryStatus{Host: host, Mirrors: hf.Mirrors, Source: source,
			File: path.Join(dir, filepath.Base(filepath.Dir(file)), "hosts.toml")})
	}
	return out
}

// readConfigPath finds config_path in a config.toml of any version.
func readConfigPath(data []byte) string {
	var doc map[string]any
	if toml.Unmarshal(data, &doc) != nil {
		return ""
	}
	plugins, _ := doc["plugins"].(map[string]any)
	for _, name := range []string{"io.containerd.cri.v1.images", "io.containerd.grpc.v1.cri",
		"cri"} {
		plugin, _ := plugins[name].(map[string]any)
		registry, _ := plugin["registry"].(map[string]any)
		if v, ok := registry["config_path"].(string); ok {
			return v
		}
	}
	return ""
}

func dockerStatus(root string, last spec.Spec) []RegistryStatus {
	data, err := os.ReadFile(filepath.Join(root, docker.DaemonJSON))
	if err != nil || len(bytes.TrimSpace(data)) == 0 {
		return []RegistryStatus{}
	}
	set, err := docker.ReadSettings(data)
	if err != nil || len(set.Mirrors) == 0 {
		return []RegistryStatus{}
	}
	source := "not mirrord's"
	if r, ok := last.Effective("docker.io"); ok {
		source = r.Source.String()
	}
	return []RegistryStatus{{Host: "docker.io", Mirrors: set.Mirrors, Source: source,
		File: docker.DaemonJSON}}
}

// String renders the Status for a person: the verdict first, then each
// runtime's registries.
func (s *Status) String() string {
	var b strings.Builder
	verdict := "in sync"
	switch {
	case len(s.PendingActions) > 0:
		verdict = fmt.Sprintf("OUT OF SYNC: %d action(s) failed and are pending: %s",
			len(s.PendingActions), s.LastError)
	case !s.InSync:
		verdict = fmt.Sprintf("OUT OF SYNC: %d file(s) would change: %s", len(s.Pending),
			strings.Join(s.Pending, ", "))
	}
	if s.Error != "" {
		verdict = "UNKNOWN: " + s.Error
	}
	fmt.Fprintf(&b, "node:     %s\n", verdict)
	if len(s.Drift) > 0 {
		fmt.Fprintf(&b, "drift:    %s changed by someone else since mirrord wrote them\n",
			strings.Join(s.Drift, ", "))
	}
	if s.Last != nil {
		fmt.Fprintf(&b, "last:     %s at %s, %d file(s)", s.Last.Command,
			s.Last.Time.Format("2006-01-02 15:04:05 MST"), len(s.Last.Files))
		for _, a := range s.Last.Actions {
			if a.Verb != None {
				fmt.Fprintf(&b, ", %s %s", a.Verb, a.Unit)
			}
		}
		b.WriteString("\n")
	}
	for _, d := range s.Demoted {
		fmt.Fprintf(&b, "demoted:  %s %s, failing since %s: %s\n", d.Registry, d.Mirror,
			d.Since.Local().Format(time.DateTime), d.Error)
	}
	for _, w := range s.Warnings {
		fmt.Fprintf(&b, "warning:  %s\n", w)
	}

	for _, rt := range s.Runtimes {
		fmt.Fprintf(&b, "\n%s (%s): %d registr%s", rt.Runtime, rt.Unit, len(rt.Registries),
			plural(len(rt.Registries), "y", "ies"))
		if rt.Runtime == config.Containerd {
			fmt.Fprintf(&b, ", config_path %q", rt.ConfigPath)
		}
		b.WriteString("\n")
		for _, r := range rt.Registries {
			fmt.Fprintf(&b, "  %-20s %s  [%s]\n", r.Host, strings.Join(r.Mirrors, " "), r.Source)
		}
	}
	return b.String()
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
