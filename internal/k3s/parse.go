package k3s

import (
	"fmt"

	"go.yaml.in/yaml/v3"
)

// File is what Parse reads from a registries.yaml.
type File struct {
	// Mirrors are the entries of mirrors:, in file order.
	Mirrors []Mirror

	// Configs are the entries of configs:, in file order.
	Configs []Config
}

// Config is one entry of configs:, without its content, which may hold
// credentials.
type Config struct {
	// Host is the key: the host[:port] of a registry or mirror.
	Host string

	// Managed reports that the entry carries mirrord's marker.
	Managed bool
}

// Mirror is one entry of mirrors:.
type Mirror struct {
	// Registry is the key: a host[:port], or "*" for every registry.
	Registry string

	// Endpoints are the mirror URLs in the order k3s tries them, before
	// the registry itself.
	Endpoints []string

	// Managed reports that the entry carries mirrord's marker.
	Managed bool
}

// Parse reads a registries.yaml written by anyone, with the checks Merge
// makes before editing it, and returns its mirrors and the hosts of its
// configs, leaving out entries with a null key, as k3s does. It reads no
// credentials out of configs.
func Parse(data []byte) (File, error) {
	doc, err := parseDocument(data)
	if err != nil {
		return File{}, err
	}
	root := doc.Content[0]

	var f File
	if _, sec := lookup(root, sectionMirrors); sec != nil && sec.Kind == yaml.MappingNode {
		for i := 0; i+1 < len(sec.Content); i += 2 {
			k, v := sec.Content[i], sec.Content[i+1]
			if isNull(k) {
				continue
			}
			m := Mirror{Registry: k.Value, Managed: isMarked(k)}
			var val struct {
				Endpoints []string `yaml:"endpoint"`
			}
			if err := v.Decode(&val); err != nil {
				return File{}, fmt.Errorf("parse registries.yaml: mirrors%s: %w",
					keyPath(k.Value), unwrapYAML(err))
			}
			m.Endpoints = val.Endpoints
			f.Mirrors = append(f.Mirrors, m)
		}
	}
	if _, sec := lookup(root, sectionConfigs); sec != nil && sec.Kind == yaml.MappingNode {
		for i := 0; i+1 < len(sec.Content); i += 2 {
			if k := sec.Content[i]; !isNull(k) {
				f.Configs = append(f.Configs, Config{Host: k.Value, Managed: isMarked(k)})
			}
		}
	}
	return f, nil
}

// isNull reports whether key node k is null (~, or nothing at all), which
// k3s's decoding drops: such an entry names no registry.
func isNull(k *yaml.Node) bool {
	return k.Kind == yaml.ScalarNode && k.Tag == "!!null"
}
