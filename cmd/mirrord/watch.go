package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"

	"github.com/mirrord/mirrord/internal/apply"
	"github.com/mirrord/mirrord/internal/config"
	"github.com/mirrord/mirrord/internal/containerd"
	"github.com/mirrord/mirrord/internal/docker"
	"github.com/mirrord/mirrord/internal/k3s"
	"github.com/mirrord/mirrord/internal/metadata"
	"github.com/mirrord/mirrord/internal/registries"
	"github.com/mirrord/mirrord/internal/spec"
	"github.com/mirrord/mirrord/internal/watch"
)

// verifier is an Actor that can prove the runtimes took their
// configuration. Boot-time applies skip the proofs; the watch runs them
// after its first pass and after each reload.
type verifier interface {
	Verify(ctx context.Context, runtimes []config.Runtime) error
}

// reasonMetadata is the reason of a pass asked for by a change of the
// instance's metadata.
const reasonMetadata = "metadata"

// watchCmd applies, tells systemd it is ready, then keeps the node in line:
// a pass on every change in the directories mirrord owns or reads, on each
// change of the instance's metadata, on SIGHUP and every 5 minutes. A pass
// that fails (a spec that does not parse, a metadata value that is not
// valid, a runtime file mirrord does not understand) is logged and the node
// keeps its files. It returns on SIGINT or SIGTERM (ctx).
//
// The metadata is read once before the first pass; a failure there other
// than "nothing to take" ends the watch with an error before anything is
// written (systemd starts it again). After the first pass a metadata.Watcher
// follows the values until ctx ends; an unreachable service is retried
// there and never drops the values in place.
//
// In a pod, MIRRORD_HEARTBEAT and MIRRORD_REVERT_ON_STOP add a heartbeat
// file and a revert after a signal (pod.go).
func watchCmd(ctx context.Context, o options, stdout io.Writer, log *slog.Logger) error {
	md, err := readMetadata(ctx, o.root, log)
	if err != nil {
		if ctx.Err() != nil {
			return nil // stopped while reading: nothing was done
		}
		return err
	}
	// The values the passes layer in; the follower replaces them.
	var current atomic.Pointer[metadata.Values]
	current.Store(md.values)
	opts := func() config.Options {
		return config.Options{Root: o.root, File: o.config, Mirrors: o.mirrors,
			Metadata: current.Load()}
	}

	cfg, cfgErr := config.Load(opts())
	if cfg.Root == "" {
		return cfgErr
	}
	logMetadataUse(log, cfg)
	fightLimit, fightWindow, err := parseFight(os.Getenv(fightEnv))
	if err != nil {
		return err
	}
	probeInterval, probeTimeout, err := probeSettings()
	if err != nil {
		return err
	}
	if os.Getenv("GOGC") == "" {
		// The watch lives long and allocates only during passes; a heap
		// goal of a quarter above the live heap keeps it about 3 MiB
		// smaller than Go's default, for no CPU to speak of.
		debug.SetGCPercent(25)
	}
	root, file := cfg.Root, cfg.File

	actor, closeActor, notDone := newActor(ctx, root, o.noReload, log)
	defer closeActor()
	if notDone != "" {
		log.Info("actions are reported, not carried out", "why", notDone)
	}

	// SIGHUP and a change of metadata both ask for a pass through reload,
	// the loop's one way in from outside; each marks itself first so that
	// the pass can tell which it was.
	var hupPending, mdPending atomic.Bool
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	reload := make(chan struct{}, 1)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				hupPending.Store(true)
				poke(reload)
			}
		}
	}()

	// The follower starts after the first pass and ends with ctx; the
	// watch waits for it on the way out.
	var follower sync.WaitGroup
	defer follower.Wait()
	var startFollower sync.Once
	// The health loop probes the spec of the last pass and kicks a pass
	// when the order of the hosts.toml files should change.
	var effective atomic.Pointer[spec.Spec]
	kick := make(chan string, 1)
	follow := func() {
		follower.Add(1)
		go func() {
			defer follower.Done()
			followMetadata(ctx, md, &current, &mdPending, reload, log)
		}()
		if probeInterval > 0 {
			follower.Add(1)
			go func() {
				defer follower.Done()
				h := healthLoop{root: root, interval: probeInterval, timeout: probeTimeout,
					current: &effective, kick: kick, log: log}
				h.run(ctx)
			}()
		}
	}

	// The last load, for Status; only the loop's goroutines touch them, one
	// at a time (a pass ends before Status is called).
	var proofErr error
	verifyDue := true
	pass := func(ctx context.Context, reason string) ([]string, error) {
		defer startFollower.Do(follow)
		if reason == watch.ReasonReload {
			reason = reloadReason(&hupPending, &mdPending)
		}
		verifyDue = verifyDue || reason == watch.ReasonReload

		cfg, cfgErr = config.Load(opts())
		if cfgErr != nil {
			return nil, fmt.Errorf("read spec: %w", cfgErr)
		}

		p, err := apply.Apply(ctx, cfg, actor, log.With("pass", reason))
		var changed []string
		if p != nil {
			effective.Store(&p.Spec)
			for _, c := range p.Changes {
				changed = append(changed, c.Path)
			}
			if len(changed) > 0 && err == nil {
				proofErr = nil // the actor proved what it acted on
			}
		}

		if v, ok := actor.(verifier); ok && verifyDue {
			verifyDue = false
			runtimes := cfg.Runtimes
			if runtimes == nil {
				runtimes = apply.DetectRuntimes(root)
			}
			if proofErr = v.Verify(ctx, runtimes); proofErr != nil {
				log.Error("runtimes do not show the mirrors", "err", proofErr)
			} else {
				log.Info("runtimes show the mirrors", "runtimes", runtimes)
			}
		}
		return changed, err
	}

	hb := newHeartbeat(log) // nil unless in a pod (deploy/kubernetes)
	err = watch.Run(ctx, watch.Options{
		Dirs: func() []string {
			return append(watchDirs(root, file), secretDirs(root, cfg)...)
		},
		FightLimit:  fightLimit,
		FightWindow: fightWindow,
		Pass:        pass,
		Watchdog:    hb.watchdog(),
		Notify: func(state string) {
			hb.notify(state)
			if state == daemon.SdNotifyReloading {
				state += "\n" + daemon.SdNotifyMonotonicUsec()
			}
			if _, err := daemon.SdNotify(false, state); err != nil {
				log.Debug("sd_notify failed", "state", state, "err", err)
			}
		},
		Status: func() string { return statusLine(cfg, cfgErr, proofErr) },
		Log:    log,
		Kick:   kick,
	}, reload)
	if err != nil {
		return fmt.Errorf("watch: %w", err)
	}
	return revertOnStop(ctx, root, stdout, log)
}

// poke asks for a pass through reload, unless one is asked for already.
func poke(reload chan<- struct{}) {
	select {
	case reload <- struct{}{}:
	default: // one is waiting already
	}
}

// reloadReason names what asked for a reload pass: SIGHUP ("reload"), a
// change of metadata ("metadata"), or both.
func reloadReason(hup, md *atomic.Bool) string {
	h, m := hup.Swap(false), md.Swap(false)
	switch {
	case m && h:
		return watch.ReasonReload + " and " + reasonMetadata
	case m:
		return reasonMetadata
	}
	return watch.ReasonReload
}

// followMetadata follows the instance's metadata from what the first read
// gave until ctx ends. Each change replaces the values in current (nil
// when every key is gone), marks pending and asks for a pass through
// reload; the pass parses the values, and one that is not valid fails the
// pass and leaves the node's files alone. With no provider to follow
// (metadata off, none detected) it returns at once.
func followMetadata(ctx context.Context, md metaStep, current *atomic.Pointer[metadata.Values],
	pending *atomic.Bool, reload chan<- struct{}, log *slog.Logger) {
	w, err := metadata.NewWatcher(md.opts, md.first)
	if errors.Is(err, metadata.ErrNoMetadata) {
		log.Debug("instance metadata not followed", "reason", err)
		return
	}
	if err != nil {
		log.Error("instance metadata not followed", "err", err)
		return
	}
	log.Debug("following instance metadata", "provider", md.first.Provider)

	for {
		v, err := w.Next(ctx)
		if err != nil {
			return // ctx ended: the watch is stopping
		}

		if v.Empty() {
			current.Store(nil)
		} else {
			current.Store(&v)
		}
		pending.Store(true)
		poke(reload)
	}
}

// fightEnv tunes the watch's fight protection: more than LIMIT repairs
// within WINDOW make it back off ("5/30s", the default), or "off".
const fightEnv = "MIRRORD_WATCH_FIGHT"

// parseFight reads fightEnv's value; empty gives zeros, the defaults.
func parseFight(v string) (limit int, window time.Duration, err error) {
	if v == "" {
		return 0, 0, nil
	}
	if v == "off" {
		return math.MaxInt, 0, nil
	}
	n, w, ok := strings.Cut(v, "/")
	if ok {
		limit, err = strconv.Atoi(n)
		if err == nil {
			window, err = time.ParseDuration(w)
		}
	}
	if !ok || err != nil || limit < 1 || window <= 0 {
		return 0, 0, fmt.Errorf("env %s: %q: want LIMIT/WINDOW, repairs within a "+
			"duration before the watch backs off, such as 5/30s; or off", fightEnv, v)
	}
	return limit, window, nil
}

// watchDirs lists the directories whose changes call for a pass: the
// runtimes' configuration directories, each certs.d/<host> of containerd
// and dockerd, the registries.conf drop-in directory, the registries.yaml
// directories of k3s and RKE2, and the config file's directory with its
// conf.d. The watch loop follows those that do not exist yet through their
// parents.
func watchDirs(root, file string) []string {
	dirs := []string{
		filepath.Join(root, filepath.Dir(containerd.ConfigFile)),
		filepath.Join(root, filepath.Dir(docker.DaemonJSON)),
		filepath.Join(root, registries.Dir),
		filepath.Join(root, filepath.Dir(k3s.K3s.File)),
		filepath.Join(root, filepath.Dir(k3s.RKE2.File)),
		filepath.Dir(file),
		filepath.Join(filepath.Dir(file), "conf.d"),
	}
	for _, certsDir := range []string{containerd.CertsDir, docker.CertsDir} {
		certs := filepath.Join(root, certsDir)
		dirs = append(dirs, certs)
		entries, _ := os.ReadDir(certs) // none yet: watched through its parent
		for _, e := range entries {
			if e.IsDir() {
				dirs = append(dirs, filepath.Join(certs, e.Name()))
			}
		}
	}
	return dirs
}

// secretDirs lists the directories of the password files cfg's mirrors
// read, so that a new token is rendered at once: containerd reads hosts.toml
// on every pull, so nothing is restarted.
func secretDirs(root string, cfg config.Config) []string {
	var dirs []string
	for _, r := range cfg.Spec.Registries {
		for _, m := range r.Mirrors {
			if m.Auth != nil && m.Auth.File() != "" {
				dirs = append(dirs, filepath.Join(root, filepath.Dir(m.Auth.File())))
			}
		}
	}
	return dirs
}

// statusLine is the watch's STATUS= line: whether the node is in sync, how
// many registries each runtime carries, and what mirrord last did, e.g.
// "in sync; containerd 3 registries, docker 1; last: apply 12:01:02, restart
// containerd.service".
func statusLine(cfg config.Config, cfgErr, proofErr error) string {
	s, err := apply.ReadStatus(cfg, cfgErr)
	if err != nil {
		return "status unknown: " + clip(err.Error())
	}

	var parts []string
	switch {
	case s.Error != "":
		parts = append(parts, "NOT APPLIED: "+clip(s.Error))
	case len(s.PendingActions) > 0:
		var acts []string
		for _, a := range s.PendingActions {
			acts = append(acts, string(a.Verb)+" "+a.Unit)
		}
		parts = append(parts, "ACTION FAILED, will retry: "+strings.Join(acts, ", "))
	case !s.InSync:
		parts = append(parts, fmt.Sprintf("OUT OF SYNC: %d file(s) differ", len(s.Pending)))
	default:
		parts = append(parts, "in sync")
	}
	if proofErr != nil {
		parts = append(parts, "PROOF FAILED: "+clip(proofErr.Error()))
	}
	if n := len(s.Demoted); n > 0 {
		parts = append(parts, fmt.Sprintf("%d failing mirror%s moved last", n, plural(n, "", "s")))
	}

	var rts []string
	for i, rt := range s.Runtimes {
		n := fmt.Sprint(len(rt.Registries))
		if i == 0 {
			n += " registr" + plural(len(rt.Registries), "y", "ies")
		}
		rts = append(rts, string(rt.Runtime)+" "+n)
	}
	if len(rts) > 0 {
		parts = append(parts, strings.Join(rts, ", "))
	}

	if s.Last != nil {
		last := "last: " + s.Last.Command + " " + s.Last.Time.Local().Format(time.DateTime)
		acted := false
		for _, a := range s.Last.Actions {
			if a.Verb != apply.None {
				last += ", " + string(a.Verb) + " " + a.Unit
				acted = true
			}
		}
		if !acted {
			last += fmt.Sprintf(", %d file(s)", len(s.Last.Files))
		}
		parts = append(parts, last)
	}
	return strings.Join(parts, "; ")
}

// clip keeps an error short enough for one status line.
func clip(s string) string {
	r := []rune(strings.Join(strings.Fields(s), " "))
	if len(r) > 120 {
		return string(r[:117]) + "..."
	}
	return string(r)
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
