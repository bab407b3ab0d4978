// Package systemd carries out apply's actions through systemd's D-Bus API
// and proves afterwards that each runtime took its new configuration.
//
// A Manager is the apply.Actor of a real node. For each action it reads the
// unit's state first and leaves a unit that is missing or not active alone:
// such a unit reads the new files when it starts. Otherwise it enqueues the
// job (restart through TryRestartUnit, so a unit that stopped meanwhile is
// not started; reload through ReloadUnit), waits for its result with a
// bound, and treats any result but "done" as an error naming the unit and
// the result. Then it checks that the runtime really took the change, since
// an active unit proves nothing (FACTS.md §2.3, §3.1): dockerd must report
// the mirrors of daemon.json through its API, containerd's CRI must answer
// on its socket.
//
// # The boot deadlock
//
// mirrord's units are ordered before the runtimes. While mirrord's own start
// job runs, a job on a unit ordered after it waits for that start job, so
// waiting for its result would deadlock (FACTS.md §6.3). Act detects this
// case: the unit it runs in (found from its cgroup, confirmed by systemd for
// its PID) is "activating", as a oneshot is during ExecStart and a notify
// unit before READY=1. Then it only enqueues the jobs of units ordered after
// it, without waiting and without a proof; they run as soon as mirrord's
// start job ends, and the watch unit proves the result later through Verify.
//
// It never asks systemd for the unit of PID 0 (the caller): systemd 252
// crashes when a process outside its PID namespace does that.
//
// # Budget
//
// A Manager counts the jobs it started per unit. Past the Budget within its
// window an action is refused with an error wrapping ErrBudget, so that
// mirrord never fights another tool in a restart loop.
package systemd

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/mirrord/mirrord/internal/apply"
	"github.com/mirrord/mirrord/internal/config"
)

// ErrNoSystemd is wrapped by New when no systemd answers under the root:
// neither socket exists or accepts a connection, or no systemd is on the
// bus. The caller then reports the actions as not carried out.
var ErrNoSystemd = errors.New("no systemd reachable")

// ErrBudget is wrapped by the error of an action refused because its unit
// had as many jobs as its Budget allows within the window.
var ErrBudget = errors.New("restart budget exhausted")

// Defaults for the zero fields of Options.
const (
	DefaultJobTimeout   = 60 * time.Second
	DefaultCheckTimeout = 15 * time.Second
)

// DefaultBudget allows three jobs per unit in ten minutes.
var DefaultBudget = Budget{Max: 3, Window: 10 * time.Minute}

// Options configure a Manager. Zero fields take the defaults.
type Options struct {
	// Root is the directory every node path is under, the D-Bus sockets
	// included: <Root>/run/dbus/system_bus_socket, or, for root only,
	// systemd's private <Root>/run/systemd/private when nothing answers on
	// the bus socket. systemd hangs up on the private socket for a process
	// of another PID namespace, so there only the bus works. Empty means
	// "/".
	Root string

	// JobTimeout bounds the wait for one job's result; the job itself goes
	// on. Default DefaultJobTimeout.
	JobTimeout time.Duration

	// CheckTimeout bounds each proof: how long a runtime may take to show
	// its new configuration, and how long a unit may take to settle before
	// Verify checks it. Default DefaultCheckTimeout.
	CheckTimeout time.Duration

	// Budget limits the jobs per unit. Default DefaultBudget.
	Budget Budget

	// Log receives one line per action. Default: discard.
	Log *slog.Logger
}

// Budget is the most jobs (restarts and reloads together) a Manager starts
// for one unit within Window. Zero fields take DefaultBudget's; a negative
// Max means no limit.
type Budget struct {
	Max    int
	Window time.Duration
}

// Manager carries out actions through systemd. It implements apply.Actor;
// one Manager may serve many passes of the watch (the budget lives in it),
// and its methods may be called from several goroutines: they run one at a
// time.
type Manager struct {
	root         string
	jobTimeout   time.Duration
	checkTimeout time.Duration
	log          *slog.Logger

	// bus is the connection to systemd; fakes replace it in tests.
	bus bus
	// prove checks that a runtime took its configuration; tests replace it.
	prove func(ctx context.Context, rt config.Runtime) error
	// now is the clock of the budget; tests replace it.
	now func() time.Time
	// selfCgroup reads /proc/self/cgroup and pid is our PID, to find the
	// unit we run in; tests replace them.
	selfCgroup func() ([]byte, error)
	pid        int

	// mu serialises Act and Verify and guards budget.
	mu     sync.Mutex
	budget *budget
}

var _ apply.Actor = (*Manager)(nil)

// New connects to systemd under o.Root. When no systemd is reachable there
// the error wraps ErrNoSystemd and names the socket; any other error means
// a systemd is there but the connection failed. The connection lives until
// Close; ctx bounds only the connecting.
func New(ctx context.Context, o Options) (*Manager, error) {
	o = o.withDefaults()
	b, err := dial(ctx, o.Root, o.Log)
	if err != nil {
		return nil, err
	}
	return newManager(o, b), nil
}

func newManager(o Options, b bus) *Manager {
	o = o.withDefaults()
	m := &Manager{
		root:         o.Root,
		jobTimeout:   o.JobTimeout,
		checkTimeout: o.CheckTimeout,
		log:          o.Log,
		bus:          b,
		now:          time.Now,
		selfCgroup:   func() ([]byte, error) { return os.ReadFile("/proc/self/cgroup") },
		pid:          os.Getpid(),
		budget:       newBudget(o.Budget),
	}
	m.prove = m.proveRuntime
	return m
}

func (o Options) withDefaults() Options {
	if o.Root == "" {
		o.Root = "/"
	}
	if o.JobTimeout <= 0 {
		o.JobTimeout = DefaultJobTimeout
	}
	if o.CheckTimeout <= 0 {
		o.CheckTimeout = DefaultCheckTimeout
	}
	if o.Budget.Max == 0 {
		o.Budget.Max = DefaultBudget.Max
	}
	if o.Budget.Window <= 0 {
		o.Budget.Window = DefaultBudget.Window
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	return o
}

// Close closes the connection to systemd. Jobs already enqueued go on.
func (m *Manager) Close() {
	m.bus.close()
}
