package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/mirrord/mirrord/internal/config"
	"github.com/mirrord/mirrord/internal/metadata"
	"github.com/mirrord/mirrord/internal/spec"
)

// metaStep is what the metadata step came to: the options it used, the
// values to layer under the other sources, and why there are none.
type metaStep struct {
	// opts are the options Fetch ran with; a Watcher follows with them.
	opts metadata.Options

	// values are what config.Load takes as the metadata layer; nil when
	// there is nothing to take.
	values *metadata.Values

	// first is what Fetch returned, next to ErrNoMetadata too: the
	// provider asked, if any, for a Watcher to start from.
	first metadata.Values

	// none is the ErrNoMetadata error that says why values is nil; nil
	// when values is set.
	none error
}

// readMetadata runs the metadata step for the node under the root that
// flagRoot or the environment names: it reads MIRRORD_METADATA* and
// fetches every key within the bound. Nothing to take (metadata off, no
// provider detected, the service not there, no key set) is no error:
// Fetch has logged it at the level it deserves and the step has no values.
// Any other failure is an error, and the caller must change nothing.
func readMetadata(ctx context.Context, flagRoot string, log *slog.Logger) (metaStep, error) {
	env, err := config.ReadEnv()
	if err != nil {
		return metaStep{}, err
	}
	root, err := config.ResolveRoot(flagRoot, env)
	if err != nil {
		return metaStep{}, err
	}
	opts, err := config.MetadataOptions(env, root, log)
	if err != nil {
		return metaStep{}, err
	}

	v, err := metadata.Fetch(ctx, opts)
	step := metaStep{opts: opts, first: v}
	switch {
	case errors.Is(err, metadata.ErrNoMetadata):
		step.none = err
		return step, nil
	case err != nil:
		return step, fmt.Errorf("read instance metadata: %w", err)
	}

	step.values = &v
	log.Debug("instance metadata read", "provider", v.Provider,
		"keys", strings.Join(presentKeys(v), ","))
	return step, nil
}

// logMetadataUse says once, at Info, which provider and keys cfg took,
// when it took any.
func logMetadataUse(log *slog.Logger, cfg config.Config) {
	if cfg.MetadataProvider == "" {
		return
	}
	var keys, sources []string
	for _, k := range cfg.MetadataKeys {
		keys = append(keys, k.Key)
		sources = append(sources, k.Source)
	}
	log.Info("instance metadata in use", "provider", cfg.MetadataProvider,
		"keys", strings.Join(keys, ","), "source", strings.Join(sources, "; "))
}

// presentKeys lists the keys v holds, mirrord-config first, the order in
// which they are layered.
func presentKeys(v metadata.Values) []string {
	var keys []string
	if len(v.Config) > 0 {
		keys = append(keys, metadata.KeyConfig)
	}
	if v.Mirrors != "" {
		keys = append(keys, metadata.KeyMirrors)
	}
	if !v.Credentials.IsZero() {
		keys = append(keys, metadata.KeyCredentials)
	}
	return keys
}

// metadataReport is what plan and status say of the metadata layer: the
// provider and the keys taken, never their values.
type metadataReport struct {
	Provider string              `json:"provider,omitempty"`
	Keys     []metadataKeyReport `json:"keys,omitempty"`
	// None says why nothing came from metadata.
	None string `json:"none,omitempty"`
}

// metadataKeyReport is one key taken, with the registries of it that no
// higher layer replaced.
type metadataKeyReport struct {
	config.MetadataKey
	InEffect []string `json:"in_effect"`
}

// newMetadataReport describes step as cfg used it. When the spec did not
// load (cfg has no metadata keys), the keys are listed from step alone.
func newMetadataReport(step metaStep, cfg config.Config) metadataReport {
	if step.values == nil {
		why := "metadata not read"
		if step.none != nil {
			why = strings.TrimPrefix(step.none.Error(), metadata.ErrNoMetadata.Error()+": ")
		}
		return metadataReport{None: why}
	}

	r := metadataReport{Provider: step.values.Provider}
	for _, key := range presentKeys(*step.values) {
		size := len(step.values.Mirrors)
		switch key {
		case metadata.KeyConfig:
			size = len(step.values.Config)
		case metadata.KeyCredentials:
			size = 0 // not even its size is shown
		}
		k := metadataKeyReport{MetadataKey: config.MetadataKey{Key: key,
			Source: step.values.Source[key], Bytes: size}}
		for _, used := range cfg.MetadataKeys {
			if used.Key == key {
				k.MetadataKey = used
			}
		}
		for _, reg := range cfg.Spec.Registries {
			if reg.Source == (spec.Source{Layer: spec.LayerMetadata, Name: k.Source}) {
				k.InEffect = append(k.InEffect, reg.Host)
			}
		}
		r.Keys = append(r.Keys, k)
	}
	return r
}

// write prints the report as "metadata: " lines, one per key, e.g.
//
//	metadata: gce: mirrord-mirrors (gce instance attribute mirrord-mirrors,
//	63 bytes): 2 registries, 1 in effect
//
// on one line; or one line saying why there is nothing from metadata.
func (r metadataReport) write(w io.Writer) {
	if r.Provider == "" {
		fmt.Fprintf(w, "metadata: none: %s\n", clip(r.None))
		return
	}
	for _, k := range r.Keys {
		if k.Key == metadata.KeyCredentials {
			fmt.Fprintf(w, "metadata: %s: %s (%s): credentials, not shown\n", r.Provider,
				k.Key, k.Source)
			continue
		}
		fmt.Fprintf(w, "metadata: %s: %s (%s, %d bytes)", r.Provider, k.Key, k.Source, k.Bytes)
		if k.Registries != nil {
			fmt.Fprintf(w, ": %d registr%s, %d in effect", len(k.Registries),
				plural(len(k.Registries), "y", "ies"), len(k.InEffect))
		}
		if k.Runtimes {
			fmt.Fprint(w, ", sets runtimes")
		}
		fmt.Fprintln(w)
	}
}
