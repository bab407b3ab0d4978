package main

import (
	"context"
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
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"

	"github.com/mirrord/mirrord/internal/apply"
	"github.com/mirrord/mirrord/internal/config"
	"github.com/mirrord/mirrord/internal/containerd"
	"github.com/mirrord/mirrord/internal/docker"
	"github.com/mirrord/mirrord/internal/watch"
)

// verifier is an Actor that can prove the runtimes took their
// configuration. Boot-time applies skip the proofs; the watch runs them
// after its first pass and after each reload.
type verifier interface {
	Verify(ctx context.Context, runtimes []config.Runtime) error
}

// watchCmd applies, tells systemd it is ready, then keeps the node in line:
// a pass on every change in the directories mirrord owns or reads, on
// SIGHUP and every 5 minutes. A pass that fails (a spec that does not
// parse, a runtime file mirrord does not understand) is logged and the
// node keeps its files. It returns on SIGINT or SIGTERM (ctx).
func watchCmd(ctx context.Context, o options, _ io.Writer, log *slog.Logger) error {
	opts := config.Options{Root: o.root, File: o.config, Mirrors: o.mirrors}
	cfg, cfgErr := config.Load(opts)
	if cfg.Root == "" {
		return cfgErr
	}
	fightLimit, fightWindow, err := parseFight(os.Getenv(fightEnv))
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
				select {
				case reload <- struct{}{}:
				default: // one is waiting already
				}
			}
		}
	}()

	// The last load, for Status; only the loop's goroutines touch them, one
	// at a time (a pass ends before Status is called).
	var proofErr error
	verifyDue := true
	pass := func(ctx context.Context, reason string) ([]string, error) {
		verifyDue = verifyDue || reason == watch.ReasonReload
		cfg, cfgErr = config.Load(opts)
		if cfgErr != nil {
			return nil, fmt.Errorf("read spec: %w", cfgErr)
		}

		p, err := apply.Apply(ctx, cfg, actor, log.With("pass", reason))
		var changed []string
		if p != nil {
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

	err = watch.Run(ctx, watch.Options{
		Dirs:        func() []string { return watchDirs(root, file) },
		FightLimit:  fightLimit,
		FightWindow: fightWindow,
		Pass:        pass,
		Notify: func(state string) {
			if state == daemon.SdNotifyReloading {
				state += "\n" + daemon.SdNotifyMonotonicUsec()
			}
			if _, err := daemon.SdNotify(false, state); err != nil {
				log.Debug("sd_notify failed", "state", state, "err", err)
			}
		},
		Status: func() string { return statusLine(cfg, cfgErr, proofErr) },
		Log:    log,
	}, reload)
	if err != nil {
		return fmt.Errorf("watch: %w", err)
	}
	return nil
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
// runtimes' configuration directories, each certs.d/<host>, and the config
// file's directory with its conf.d. The watch loop follows those that do
// not exist yet through their parents.
func watchDirs(root, file string) []string {
	certs := filepath.Join(root, containerd.CertsDir)
	dirs := []string{
		filepath.Join(root, filepath.Dir(containerd.ConfigFile)),
		certs,
		filepath.Join(root, filepath.Dir(docker.DaemonJSON)),
		filepath.Dir(file),
		filepath.Join(filepath.Dir(file), "conf.d"),
	}
	entries, _ := os.ReadDir(certs) // none yet: watched through its parent
	for _, e := range entries {
		if e.IsDir() {
			dirs = append(dirs, filepath.Join(certs, e.Name()))
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
