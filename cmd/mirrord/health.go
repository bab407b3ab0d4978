package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/mirrord/mirrord/internal/apply"
	"github.com/mirrord/mirrord/internal/containerd"
	"github.com/mirrord/mirrord/internal/health"
	"github.com/mirrord/mirrord/internal/probe"
	"github.com/mirrord/mirrord/internal/spec"
	"github.com/mirrord/mirrord/internal/watch"
)

// The environment of the watch's probes.
const (
	probeIntervalEnv = "MIRRORD_PROBE_INTERVAL"
	probeTimeoutEnv  = "MIRRORD_PROBE_TIMEOUT"
)

// Defaults of the watch's probes.
const (
	defaultProbeInterval = 30 * time.Second
	// maxRetry bounds the wait before probing a mirror again that is on its
	// way to a change (a quarter of the interval otherwise).
	maxRetry = 5 * time.Second
)

// probeSettings reads the probe interval (0 when off) and bound from the
// environment.
func probeSettings() (interval, timeout time.Duration, err error) {
	interval, timeout = defaultProbeInterval, probe.DefaultTimeout
	if v := os.Getenv(probeIntervalEnv); v == "off" {
		interval = 0
	} else if v != "" {
		if interval, err = time.ParseDuration(v); err != nil || interval <= 0 {
			return 0, 0, fmt.Errorf("env %s: %q: want a positive Go duration such as 30s, "+
				"or off", probeIntervalEnv, v)
		}
	}
	if v := os.Getenv(probeTimeoutEnv); v != "" {
		if timeout, err = time.ParseDuration(v); err != nil || timeout <= 0 {
			return 0, 0, fmt.Errorf("env %s: %q: want a positive Go duration such as 5s",
				probeTimeoutEnv, v)
		}
	}
	return interval, timeout, nil
}

// healthLoop probes the mirrors of the spec in force every interval, and
// sooner while a mirror is on its way to a change. A mirror that fails
// health.DefaultDown probes in a row moves behind the healthy ones; one
// that then passes health.DefaultUp comes back. Each move is logged, saved
// in mirrord's state directory and asks the watch for a pass through kick,
// which rewrites the hosts.toml files (no action: containerd reads them on
// every pull).
type healthLoop struct {
	root     string
	interval time.Duration
	timeout  time.Duration
	// current is the effective spec of the last pass, nil before one.
	current *atomic.Pointer[spec.Spec]
	kick    chan<- string
	log     *slog.Logger
}

func (h *healthLoop) run(ctx context.Context) {
	saved, err := apply.LoadHealth(h.root)
	if err != nil {
		h.log.Warn("health order unreadable; starting from the spec's order", "err", err)
	}
	if !saved.Fresh(time.Now()) {
		saved = health.State{}
	}
	tr := health.NewTracker(saved)
	opts := probe.Options{Root: h.root, Timeout: h.timeout, UserAgent: userAgent()}
	opts.ContainerdMajor, _ = containerd.DetectMajor(h.root)
	h.log.Debug("probing mirrors for the health order", "interval", h.interval,
		"timeout", h.timeout)

	wait := time.Duration(0)
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}

		wait = h.interval
		sp := h.current.Load()
		if sp == nil {
			continue
		}
		start := time.Now()
		rep := probe.Check(ctx, *sp, opts)
		if ctx.Err() != nil {
			return
		}
		now := time.Now()
		changes := tr.Observe(rep, now)
		h.log.Debug("mirrors probed", "duration", now.Sub(start).Round(time.Millisecond),
			"registries", len(rep.Registries), "failing", strings.Join(rep.Failing(), ","))
		for _, c := range changes {
			h.logChange(c)
		}

		st := tr.State(now)
		if len(changes) > 0 || !sameDemoted(saved, st) || now.Sub(saved.Updated) > health.MaxAge/4 {
			if err := apply.SaveHealth(h.root, st); err != nil {
				h.log.Error("health order not saved; hosts.toml keeps its order", "err", err)
			} else {
				saved = st
			}
		}
		if len(changes) > 0 {
			select {
			case h.kick <- watch.ReasonHealth + " changed":
			default: // a pass is asked for already
			}
		}
		if tr.Unsettled() {
			wait = min(h.interval/4, maxRetry)
		}
	}
}

func (h *healthLoop) logChange(c health.Change) {
	if c.Demoted {
		h.log.Warn("mirror failing; moved behind the healthy mirrors in hosts.toml",
			"registry", c.Registry, "mirror", c.Mirror, "failures", c.Failures, "err", c.Err)
		return
	}
	h.log.Info("mirror healthy again; back in its place in hosts.toml",
		"registry", c.Registry, "mirror", c.Mirror, "duration", c.DownFor.Round(time.Second))
}

// sameDemoted reports whether two states demote the same mirrors.
func sameDemoted(a, b health.State) bool {
	return slices.EqualFunc(a.Demoted, b.Demoted, func(x, y health.Entry) bool {
		return x.Registry == y.Registry && x.Mirror == y.Mirror
	})
}
