// Package watch keeps a node in line with its spec: it runs a reconcile pass
// at start, then again whenever something changes in the directories it
// watches (inotify through fsnotify, never polling), on a periodic resync
// and on reload, and it tells systemd how it is doing (sd_notify).
//
// The loop knows nothing of runtimes or files: Options.Pass does the work and
// returns the files it changed. Passes run one at a time; a burst of events
// gives one pass; a pass error is logged and the loop goes on. When passes
// keep repairing the same files (another tool writing them back), the loop
// backs off exponentially so that the two never fight in a tight loop.
package watch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/fsnotify/fsnotify"
)

// Defaults of Options.
const (
	DefaultDebounce    = 20 * time.Millisecond
	DefaultResync      = 5 * time.Minute
	DefaultFightLimit  = 5
	DefaultFightWindow = 30 * time.Second
	DefaultBackoffMin  = 2 * time.Second
	DefaultBackoffMax  = 5 * time.Minute
	DefaultPassTimeout = 3 * time.Minute
)

// The reasons Run gives Options.Pass for a pass not caused by a file event.
// A pass caused by events gets "change: <op> <path>" and, for a burst, the
// number of further events.
const (
	ReasonStart   = "start"
	ReasonReload  = "reload"
	ReasonResync  = "resync"
	ReasonBackoff = "backoff over"
	ReasonNewDir  = "new directory watched"
	ReasonInotify = "inotify lost events"

	// ReasonHealth opens the reason of a pass asked for through
	// Options.Kick when the health order changed; such a pass is no
	// repair, and fight protection does not count it.
	ReasonHealth = "health order"
)

// Options configure Run. Pass is required; zero values take the defaults.
type Options struct {
	// Dirs lists the directories to watch. Run calls it at start and after
	// each pass, since a pass may create directories. A directory that does
	// not exist is watched for through its nearest existing ancestor, which
	// reacts only to the creation of the path leading to it.
	Dirs func() []string

	// Pass is one reconcile: it re-reads the sources, applies them, and
	// returns the files it changed (a repair, when the pass was caused by
	// drift). An error is logged; the loop goes on. Its ctx ends on
	// shutdown or after PassTimeout.
	Pass func(ctx context.Context, reason string) (changed []string, err error)

	// Debounce is how long the loop waits after an event for more before it
	// runs a pass: a burst gives one pass. A steady stream of events still
	// gets a pass every 5 Debounce. Default 20ms.
	Debounce time.Duration

	// Resync is the period of a full pass without events, for what inotify
	// missed. Default 5m.
	Resync time.Duration

	// Notify sends one sd_notify(3) state: READY=1 after the first pass,
	// STATUS=..., WATCHDOG=1, RELOADING=1 and READY=1 around a reload,
	// STOPPING=1 on the way out. Nil sends nothing.
	Notify func(state string)

	// Status returns a one-line summary of the node for STATUS=; Run adds
	// its own state (backing off) after it. Run calls it after passes that
	// changed something, failed, or were asked for (start, reload, resync),
	// not after quiet passes. Nil leaves only Run's state.
	Status func() string

	// Log receives the loop's lines; nil discards them.
	Log *slog.Logger

	// Kick asks for a pass with the reason received, which should start
	// with ReasonHealth: soon, like a file event, but within a backoff's
	// hold like one too, and never counted as a repair. Nil never kicks.
	Kick <-chan string

	// FightLimit repairing passes within FightWindow make the loop back
	// off: the next pass waits BackoffMin, and each repair during the fight
	// doubles the wait up to BackoffMax. A fight ends when no repair came
	// for FightWindow beyond the current wait. Defaults 5, 30s, 2s, 5m.
	FightLimit  int
	FightWindow time.Duration
	BackoffMin  time.Duration
	BackoffMax  time.Duration

	// PassTimeout bounds a pass through its ctx; a pass still running after
	// it is taken as hung, and the watchdog pings stop so that systemd
	// restarts the process. Default 3m.
	PassTimeout time.Duration

	// Watchdog is the systemd watchdog interval; Run pings at half of it.
	// Zero reads it from the environment (WATCHDOG_USEC, WATCHDOG_PID) as
	// systemd sets it; negative disables the pings.
	Watchdog time.Duration
}

func (o Options) withDefaults() Options {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&o.Debounce, DefaultDebounce)
	def(&o.Resync, DefaultResync)
	def(&o.FightWindow, DefaultFightWindow)
	def(&o.BackoffMin, DefaultBackoffMin)
	def(&o.BackoffMax, DefaultBackoffMax)
	def(&o.PassTimeout, DefaultPassTimeout)
	if o.BackoffMax < o.BackoffMin {
		o.BackoffMax = o.BackoffMin
	}
	if o.FightLimit <= 0 {
		o.FightLimit = DefaultFightLimit
	}
	if o.Dirs == nil {
		o.Dirs = func() []string { return nil }
	}
	if o.Notify == nil {
		o.Notify = func(string) {}
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	return o
}

// Run watches until ctx ends, then sends STOPPING=1, waits for a pass in
// flight and returns nil. It returns an error only when the watcher cannot
// start or stops working. Each receive from reload (SIGHUP) sends
// RELOADING=1, runs a pass at once, past any backoff, and sends READY=1
// after it.
func Run(ctx context.Context, o Options, reload <-chan struct{}) error {
	if o.Pass == nil {
		return errors.New("watch: Options.Pass is nil")
	}
	o = o.withDefaults()

	wd := o.Watchdog
	if wd == 0 {
		var err error
		if wd, err = daemon.SdWatchdogEnabled(false); err != nil {
			o.Log.Warn("watchdog setting unreadable; no pings", "err", err)
		}
	}

	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("start inotify watcher: %w", err)
	}
	defer w.Close()

	l := &loop{o: o, w: w, done: make(chan result, 1), kick: time.NewTimer(time.Hour),
		fight: fight{limit: o.FightLimit, window: o.FightWindow, min: o.BackoffMin,
			max: o.BackoffMax}}
	l.kick.Stop()
	l.syncWatches()
	return l.run(ctx, reload, wd)
}

// loop is Run's state; only Run's goroutine touches it.
type loop struct {
	o       Options
	w       *fsnotify.Watcher
	filters map[string]filter

	// The next pass: wanted, why, how many events since, when the burst
	// began, and when the kick timer fires (zero: not armed).
	dirty      bool
	reason     string
	events     int
	burstStart time.Time
	debounced  bool
	due        time.Time
	kick       *time.Timer

	running bool
	started time.Time
	done    chan result

	ready        bool
	reloadWanted bool
	reloadInPass bool
	hungLogged   bool

	fight      fight
	holdUntil  time.Time
	lastErr    string
	lastStatus string
	// statusHold is whether the last STATUS= told of a backoff.
	statusHold bool
}

// result is what a pass came to. cause is one of the Reason constants or
// the first event; reason adds the number of further events.
type result struct {
	cause   string
	reason  string
	changed []string
	err     error
	took    time.Duration
}

func (l *loop) run(ctx context.Context, reload <-chan struct{}, wd time.Duration) error {
	resync := time.NewTicker(l.o.Resync)
	defer resync.Stop()

	var ping <-chan time.Time
	if wd > 0 {
		t := time.NewTicker(wd / 2)
		defer t.Stop()
		ping = t.C
		l.o.Log.Debug("watchdog on", "interval", wd)
	}

	l.want(ReasonStart, time.Now(), true)
	for {
		select {
		case <-ctx.Done():
			l.o.Notify(daemon.SdNotifyStopping)
			l.wait()
			l.o.Log.Info("watch stopped")
			return nil

		case ev, ok := <-l.w.Events:
			if !ok {
				return l.fatal(errors.New("inotify watcher stopped: event channel closed"))
			}
			if l.relevant(ev) {
				l.event(ev)
			}

		case err, ok := <-l.w.Errors:
			if !ok {
				return l.fatal(errors.New("inotify watcher stopped: error channel closed"))
			}
			l.o.Log.Warn("inotify may have lost events; running a full pass", "err", err)
			l.want(ReasonInotify, time.Now(), false)

		case <-reload:
			l.o.Log.Info("reload: re-reading the sources")
			l.o.Notify(daemon.SdNotifyReloading)
			l.reloadWanted = true
			l.want(ReasonReload, time.Now(), true)

		case <-resync.C:
			l.want(ReasonResync, time.Now(), false)

		case reason := <-l.o.Kick:
			l.want(reason, time.Now().Add(l.o.Debounce), false)

		case <-l.kick.C:
			l.due = time.Time{}
			l.maybeStart(ctx)

		case r := <-l.done:
			l.finished(r)
			l.maybeStart(ctx)

		case <-ping:
			l.pingWatchdog()
		}
	}
}

// want asks for a pass by at. A non-urgent pass waits for a backoff to end;
// an urgent one (start, reload) does not and takes over the reason, which is
// otherwise the first cause of a burst.
func (l *loop) want(reason string, at time.Time, urgent bool) {
	if !l.dirty {
		l.dirty, l.reason, l.events, l.burstStart = true, reason, 0, time.Now()
		l.debounced = false
	} else if urgent {
		l.reason, l.debounced = reason, false
	}

	if !urgent && at.Before(l.holdUntil) {
		at = l.holdUntil
	}
	if l.due.IsZero() || at.Before(l.due) {
		l.arm(at)
		l.debounced = false
	}
}

// event asks for a pass after a file event: Debounce after the last event of
// a burst, and no later than 5 Debounce after its first.
func (l *loop) event(ev fsnotify.Event) {
	now := time.Now()
	if !l.dirty {
		l.want("change: "+ev.Op.String()+" "+ev.Name, now.Add(l.o.Debounce), false)
		l.debounced = true
		return
	}
	l.events++
	if !l.debounced || l.due.IsZero() {
		return // a pass is already due sooner, or running
	}

	at := now.Add(l.o.Debounce)
	if limit := l.burstStart.Add(5 * l.o.Debounce); at.After(limit) {
		at = limit
	}
	if at.Before(l.holdUntil) {
		at = l.holdUntil
	}
	l.arm(at)
}

func (l *loop) arm(at time.Time) {
	l.due = at
	l.kick.Reset(max(time.Until(at), 0))
}

// maybeStart runs the wanted pass unless one is running or a backoff holds
// it back.
func (l *loop) maybeStart(ctx context.Context) {
	if !l.dirty || l.running || !l.due.IsZero() {
		return
	}
	if time.Now().Before(l.holdUntil) && !l.reloadWanted {
		l.arm(l.holdUntil)
		return
	}

	cause := l.reason
	if l.reloadWanted {
		l.reloadWanted, l.reloadInPass, cause = false, true, ReasonReload
	}
	reason := cause
	if l.events > 0 && strings.HasPrefix(cause, "change: ") {
		reason = fmt.Sprintf("%s and %d more event(s)", cause, l.events)
	}
	l.dirty, l.reason, l.events = false, "", 0
	l.running, l.started, l.hungLogged = true, time.Now(), false

	go func() {
		pctx, cancel := context.WithTimeout(ctx, l.o.PassTimeout)
		defer cancel()
		start := time.Now()
		changed, err := l.o.Pass(pctx, reason)
		l.done <- result{cause: cause, reason: reason, changed: changed, err: err,
			took: time.Since(start)}
	}()
}

// finished takes in a pass's result: logs, fight protection, watches, and
// what systemd hears.
func (l *loop) finished(r result) {
	l.running = false
	log := l.o.Log.With("reason", r.reason, "took", r.took.Round(time.Microsecond))

	errChanged := false
	switch {
	case r.err != nil && r.err.Error() != l.lastErr:
		log.Error("pass failed; files stay as they are", "err", r.err)
		l.lastErr, errChanged = r.err.Error(), true
	case r.err != nil:
		log.Debug("pass failed again, same error", "err", r.err)
	case l.lastErr != "":
		log.Info("pass succeeded after failing")
		l.lastErr, errChanged = "", true
	}
	if len(r.changed) > 0 {
		log.Debug("pass changed files", "files", strings.Join(r.changed, " "))
	} else if r.err == nil {
		log.Debug("pass found nothing to do")
	}

	stepped := false
	if len(r.changed) > 0 && r.cause != ReasonStart && r.cause != ReasonReload &&
		!strings.HasPrefix(r.cause, ReasonHealth) {
		now := time.Now()
		if hold := l.fight.repaired(now, r.changed); hold > 0 {
			l.holdUntil, stepped = now.Add(hold), true
			l.o.Log.Warn("another writer keeps changing mirrord's files; backing off",
				"files", l.fight.summary(), "during", now.Sub(l.fight.since).Round(
					time.Millisecond), "next_pass_in", hold, "step", l.fight.level)
			// Look again once the hold is over, events or not.
			l.want(ReasonBackoff, l.holdUntil, false)
		}
	}

	if l.syncWatches() {
		l.want(ReasonNewDir, time.Now().Add(l.o.Debounce), false)
	}

	quiet := len(r.changed) == 0 && r.err == nil && !errChanged && !stepped &&
		l.statusHold == time.Now().Before(l.holdUntil) && r.cause != ReasonStart &&
		r.cause != ReasonReload && r.cause != ReasonResync
	if !quiet {
		l.sendStatus()
	}
	if !l.ready || l.reloadInPass {
		l.o.Notify(daemon.SdNotifyReady)
		l.ready, l.reloadInPass = true, false
	}
}

// sendStatus sends STATUS= when the line changed.
func (l *loop) sendStatus() {
	var parts []string
	if l.o.Status != nil {
		parts = append(parts, l.o.Status())
	}
	l.statusHold = time.Now().Before(l.holdUntil)
	if until := l.holdUntil; l.statusHold {
		parts = append(parts, fmt.Sprintf("backing off until %s: another writer keeps "+
			"changing %s", until.Format("15:04:05"), l.fight.summary()))
	}
	if len(parts) == 0 {
		parts = append(parts, "watching")
	}
	line := strings.Join(strings.Fields(strings.Join(parts, "; ")), " ")
	if line == l.lastStatus {
		return
	}
	l.lastStatus = line
	l.o.Notify("STATUS=" + line)
}

func (l *loop) pingWatchdog() {
	if !l.running || time.Since(l.started) < l.o.PassTimeout {
		l.o.Notify(daemon.SdNotifyWatchdog)
		return
	}
	if !l.hungLogged {
		l.o.Log.Error("pass hung; watchdog pings stopped so that systemd restarts the watch",
			"running_for", time.Since(l.started).Round(time.Second))
		l.hungLogged = true
	}
}

// wait lets a pass in flight finish; its ctx is already done.
func (l *loop) wait() {
	if l.running {
		<-l.done
		l.running = false
	}
}

func (l *loop) fatal(err error) error {
	l.o.Notify(daemon.SdNotifyStopping)
	l.wait()
	return err
}

// filter says which events of a watched directory matter: all of them, or
// only those naming a child on the path to a directory not there yet.
type filter struct {
	all   bool
	names map[string]bool
}

// syncWatches brings the inotify watches to what Dirs wants and reports
// whether it added one after the start.
func (l *loop) syncWatches() (added bool) {
	want := map[string]filter{}
	for _, d := range l.o.Dirs() {
		d = filepath.Clean(d)
		if isDir(d) {
			want[d] = filter{all: true}
			continue
		}
		child := d
		for a := filepath.Dir(d); ; child, a = a, filepath.Dir(a) {
			if isDir(a) {
				f := want[a]
				if !f.all {
					if f.names == nil {
						f.names = map[string]bool{}
					}
					f.names[filepath.Base(child)] = true
				}
				want[a] = f
				break
			}
			if a == filepath.Dir(a) {
				break
			}
		}
	}

	have := l.w.WatchList()
	for _, d := range have {
		if _, ok := want[d]; !ok {
			_ = l.w.Remove(d) // gone already when the directory was removed
			l.o.Log.Debug("unwatched", "dir", d)
		}
	}
	dirs := make([]string, 0, len(want))
	for d := range want {
		dirs = append(dirs, d)
	}
	slices.Sort(dirs)
	for _, d := range dirs {
		if slices.Contains(have, d) {
			continue
		}
		if err := l.w.Add(d); err != nil {
			// Removed since the Stat (its parent's event brings a pass), or
			// out of inotify watches (the resync still covers it).
			l.o.Log.Warn("cannot watch directory; the periodic resync covers it",
				"dir", d, "err", err)
			continue
		}
		l.o.Log.Debug("watching", "dir", d, "all_events", want[d].all)
		added = added || l.filters != nil
	}
	l.filters = want
	return added
}

// relevant drops attribute changes, mirrord's own temporary files, and
// events of an ancestor that do not lead to a wanted directory. A
// hosts.toml's attribute changes stay: one that carries credentials must
// stay 0600, and a chmod is drift there.
func (l *loop) relevant(ev fsnotify.Event) bool {
	if ev.Name == "" || (ev.Op == fsnotify.Chmod && filepath.Base(ev.Name) != "hosts.toml") {
		return false
	}
	base := filepath.Base(ev.Name)
	if strings.HasPrefix(base, ".") && strings.Contains(base, ".mirrord-") {
		return false
	}
	f, ok := l.filters[filepath.Dir(ev.Name)]
	return !ok || f.all || f.names[base]
}

func isDir(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.IsDir()
}
