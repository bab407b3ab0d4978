package systemd

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"

	sdbus "github.com/coreos/go-systemd/v22/dbus"
	"github.com/godbus/dbus/v5"

	"github.com/mirrord/mirrord/internal/apply"
)

// The sockets New tries, under the root.
const (
	busSocket     = "/run/dbus/system_bus_socket"
	privateSocket = "/run/systemd/private"
)

// unitState is what Act and Verify need to know about a unit.
type unitState struct {
	// Load is LoadState: "loaded", "not-found", "masked", ...
	Load string
	// Active is ActiveState: "active", "reloading", "inactive", "failed",
	// "activating", "deactivating".
	Active string
	// Sub is SubState, e.g. "running" or "exited".
	Sub string
	// After and Before list the units this one is ordered after and before;
	// systemd fills in both sides of every ordering.
	After, Before []string
	// Job is the ID of the job queued or running for the unit, 0 if none.
	Job uint32
}

// missing reports whether no unit file defines the unit.
func (s unitState) missing() bool { return s.Load == "not-found" }

// running reports whether the unit is up, so that a job on it acts.
func (s unitState) running() bool { return s.Active == "active" || s.Active == "reloading" }

// bus is the part of systemd's D-Bus API that a Manager uses.
type bus interface {
	// unit returns a unit's state; a unit with no unit file is not an
	// error but reports Load "not-found".
	unit(ctx context.Context, name string) (unitState, error)
	// unitByPID names the unit a process of this systemd's PID namespace
	// runs in.
	unitByPID(ctx context.Context, pid int) (string, error)
	// enqueue queues a job of the given verb with mode "replace". A non-nil
	// ch receives the job's result; it must be buffered.
	enqueue(ctx context.Context, verb apply.Verb, unit string, ch chan<- string) (int, error)
	close()
}

// dbusBus is the bus over a real connection to systemd. It connects again
// when the connection broke, e.g. after the bus daemon restarted, so that a
// watch running for weeks keeps working.
type dbusBus struct {
	root string
	log  *slog.Logger

	mu     sync.Mutex
	conn   *sdbus.Conn
	socket string
	// cancel ends conn's context, which closes it.
	cancel context.CancelFunc
}

// dial connects to systemd under root: the system bus, or systemd's private
// socket when the bus is not there and the caller is root.
func dial(ctx context.Context, root string, log *slog.Logger) (*dbusBus, error) {
	b := &dbusBus{root: root, log: log}
	if err := b.connect(ctx); err != nil {
		return nil, err
	}
	return b, nil
}

func (b *dbusBus) connect(ctx context.Context) error {
	sockets := []string{busSocket}
	if os.Geteuid() == 0 {
		sockets = append(sockets, privateSocket)
	}

	var causes []string
	for _, s := range sockets {
		path := filepath.Join(b.root, s)
		conn, cancel, err := connectSocket(ctx, path, s == busSocket)
		if unreachable(err) {
			causes = append(causes, err.Error())
			continue
		}
		if err != nil {
			return fmt.Errorf("connect to systemd at %s: %w", path, err)
		}

		state, err := conn.SystemStateContext(ctx)
		if err != nil {
			cancel()
			var de dbus.Error
			if errors.As(err, &de) && de.Name == "org.freedesktop.DBus.Error.ServiceUnknown" {
				return fmt.Errorf("%w at %s: the bus has no systemd on it", ErrNoSystemd, path)
			}
			return fmt.Errorf("ask systemd at %s for its state: %w", path, err)
		}
		b.conn, b.cancel, b.socket = conn, cancel, path
		b.log.Debug("connected to systemd", "socket", path, "system_state", state.Value.Value())
		return nil
	}
	return fmt.Errorf("%w at %s: %s", ErrNoSystemd, filepath.Join(b.root, busSocket),
		strings.Join(causes, "; "))
}

// unreachable reports whether err means nobody we may talk to listens at a
// socket: no socket, nobody accepting, or a peer that hangs up at once, as
// systemd's private socket does for a process of another PID namespace.
func unreachable(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ECONNREFUSED) ||
		errors.Is(err, syscall.ECONNRESET)
}

// connectSocket opens a connection to systemd over the socket at path; hello
// is false for systemd's private socket, which is no bus. ctx bounds the
// connecting only: the connection lives until the returned cancel.
func connectSocket(ctx context.Context, path string, hello bool) (*sdbus.Conn,
	context.CancelFunc, error) {
	connCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stop := context.AfterFunc(ctx, cancel)
	defer stop()

	addr := "unix:path=" + dbus.EscapeBusAddressValue(path)
	conn, err := sdbus.NewConnection(func() (*dbus.Conn, error) {
		return dialBus(connCtx, addr, hello)
	})
	if err != nil {
		cancel()
		if ctx.Err() != nil {
			return nil, nil, ctx.Err()
		}
		return nil, nil, err
	}
	return conn, cancel, nil
}

// dialBus opens and authenticates one D-Bus connection. It authenticates by
// UID only (EXTERNAL), as go-systemd does, so no user lookup is needed.
func dialBus(ctx context.Context, addr string, hello bool) (*dbus.Conn, error) {
	c, err := dbus.Dial(addr, dbus.WithContext(ctx))
	if err != nil {
		return nil, err
	}
	if err := c.Auth([]dbus.Auth{dbus.AuthExternal(strconv.Itoa(os.Getuid()))}); err != nil {
		c.Close()
		return nil, fmt.Errorf("authenticate: %w", err)
	}
	if hello {
		if err := c.Hello(); err != nil {
			c.Close()
			return nil, fmt.Errorf("hello: %w", err)
		}
	}
	return c, nil
}

// get returns the connection, connecting again if it broke.
func (b *dbusBus) get(ctx context.Context) (*sdbus.Conn, error) {
	b.mu.Lock()
	defer b.mu.Unlock()

	if b.conn != nil && b.conn.Connected() {
		return b.conn, nil
	}
	if b.conn != nil {
		b.log.Info("connection to systemd lost; connecting again", "socket", b.socket)
		b.cancel()
		b.conn = nil
	}
	if err := b.connect(ctx); err != nil {
		return nil, err
	}
	return b.conn, nil
}

func (b *dbusBus) unit(ctx context.Context, name string) (unitState, error) {
	conn, err := b.get(ctx)
	if err != nil {
		return unitState{}, err
	}
	props, err := conn.GetUnitPropertiesContext(ctx, name)
	if err != nil {
		return unitState{}, err
	}

	st := unitState{
		Load:   stringProp(props, "LoadState"),
		Active: stringProp(props, "ActiveState"),
		Sub:    stringProp(props, "SubState"),
	}
	st.After, _ = props["After"].([]string)
	st.Before, _ = props["Before"].([]string)
	// Job is a (uo) struct: the job's ID and object path.
	if job, ok := props["Job"].([]any); ok && len(job) == 2 {
		st.Job, _ = job[0].(uint32)
	}
	return st, nil
}

func stringProp(props map[string]any, name string) string {
	s, _ := props[name].(string)
	return s
}

// unitByPID never asks for PID 0 (the caller, as the socket's credentials
// tell): systemd 252 crashes when a process outside its PID namespace does
// that (seen in systemd-nspawn, dialing the container's bus from the host).
func (b *dbusBus) unitByPID(ctx context.Context, pid int) (string, error) {
	if pid <= 0 {
		return "", fmt.Errorf("no unit lookup for PID %d", pid)
	}
	conn, err := b.get(ctx)
	if err != nil {
		return "", err
	}
	return conn.GetUnitNameByPID(ctx, uint32(pid))
}

func (b *dbusBus) enqueue(ctx context.Context, verb apply.Verb, unit string,
	ch chan<- string) (int, error) {
	conn, err := b.get(ctx)
	if err != nil {
		return 0, err
	}
	switch verb {
	case apply.Restart:
		return conn.TryRestartUnitContext(ctx, unit, "replace", ch)
	case apply.Reload:
		return conn.ReloadUnitContext(ctx, unit, "replace", ch)
	}
	return 0, fmt.Errorf("unknown action %q; valid: %s, %s", verb, apply.Restart, apply.Reload)
}

func (b *dbusBus) close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.conn != nil {
		b.conn.Close()
		b.cancel()
		b.conn = nil
	}
}
