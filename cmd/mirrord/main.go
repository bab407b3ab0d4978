// Command mirrord writes registry mirrors into every container runtime on a
// node, applies them with the least disruptive action and keeps them there.
//
// Run "mirrord help" for the commands, flags and environment variables.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/mirrord/mirrord/internal/apply"
	"github.com/mirrord/mirrord/internal/config"
	"github.com/mirrord/mirrord/internal/logging"
	"github.com/mirrord/mirrord/internal/probe"
	"github.com/mirrord/mirrord/internal/systemd"
)

// Stamped at build time with -ldflags "-X main.version=... -X main.commit=...
// -X main.date=...".
var (
	version = ""
	commit  = ""
	date    = ""
)

const usage = `mirrord: registry mirrors for every container runtime on this node

Usage: mirrord COMMAND [flags]

Commands:
  apply     write the mirrors into every runtime's files, report the action each runtime needs
  plan      show what apply would change: a unified diff per file and the actions; change nothing
  status    show the mirrors in effect per runtime, where they came from, drift and the last apply
  watch     apply, tell systemd it is ready, then repair drift and follow changes of the sources
  check     probe every mirror as containerd would use it: TLS, /v2/, the canary image
  revert    put back every file mirrord changed as it was before, remove what it created
  health    check the heartbeat of a watch in a pod (the liveness probe of deploy/kubernetes)
  version   print version, commit and build date
  help      print this text

Flags (every command):
  --root DIR        every node path is under DIR (default /, or MIRRORD_ROOT)
  --config FILE     the config file (default ROOT/etc/mirrord/mirrord.toml, or MIRRORD_CONFIG);
                    drop-ins are read from conf.d/*.toml beside it
  --mirrors SPEC    mirrors in the compact form; beats every other source
  --log-level L     debug, info, warn or error (default info)
Flags of apply and watch:  --no-reload  write files and report actions, carry none out
Flags of status and check: --json       machine-readable output
Flags of check:            --timeout D  bound on each mirror's probe (default 5s)
Flags of health:           --max-age D  oldest heartbeat taken as alive (default 60s)

Environment:
  MIRRORD_MIRRORS   compact form: REGISTRY=URL[,URL...] separated by ';' or newlines,
                    e.g. docker.io=https://mirror.example.net;quay.io=https://quay.example.net
  MIRRORD_RUNTIMES  runtimes to manage, comma-separated: containerd, docker, crio, podman, k3s,
                    rke2 (default: those found on the node)
  MIRRORD_ROOT      as --root
  MIRRORD_CONFIG    as --config
  MIRRORD_METADATA  instance metadata provider: auto (default; picks it from cloud-init's
                    instance data or DMI, never by probing the network), none (off), or one of
                    gce, yandex, aws, azure, openstack, cloud-init
  MIRRORD_METADATA_ENDPOINT  the provider's base URL, scheme://host[:port], in place of
                    http://169.254.169.254 (for a proxy or a test)
  MIRRORD_METADATA_TIMEOUT   bound on the whole metadata step, a Go duration (default 2s);
                    a service that is not there, or does not answer in time, is no error
  MIRRORD_METADATA_INTERVAL  watch: how often to poll a provider that cannot long-poll
                    (all but gce and yandex), a Go duration (default 60s, with jitter)
  MIRRORD_METADATA_IMDSV1    aws: true to read without a token when IMDSv2 refuses one
                    (default false)
  MIRRORD_WATCH_FIGHT  watch: repairs allowed per window before backing off, LIMIT/WINDOW
                    (default 5/30s) or off
  MIRRORD_HEARTBEAT  watch: a file to keep fresh (every 10s, while no pass hangs) with the
                    status line; health: the file to check
  MIRRORD_REVERT_ON_STOP  watch: a file; when it holds "true" as the watch stops on SIGTERM
                    or SIGINT, the node is reverted (a pod's way out, deploy/kubernetes)
  MIRRORD_PROBE_INTERVAL  watch: how often mirrors are probed for the health order
                    (default 30s), or off
  MIRRORD_PROBE_TIMEOUT   watch: bound on each mirror's probe (default 5s)

Instance metadata: the keys mirrord-config (a TOML document in the config file's schema)
and mirrord-mirrors (the compact form, replacing the registries it names). apply, plan,
status and watch read them first; watch then follows their changes. A value that does not
parse is an error and nothing on the node changes.

Precedence, lowest first: instance metadata, config file and drop-ins, environment, flags.
A higher source replaces a registry's whole mirror list.

Exit status: 0 success, 1 error, 2 usage.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// options are the flags every command takes.
type options struct {
	root, config, mirrors, logLevel string
	noReload, json                  bool
	maxAge                          time.Duration
	timeout                         time.Duration
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmd, args := args[0], args[1:]

	fs := flag.NewFlagSet("mirrord "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage) }
	var o options
	fs.StringVar(&o.root, "root", "", "")
	fs.StringVar(&o.config, "config", "", "")
	fs.StringVar(&o.mirrors, "mirrors", "", "")
	fs.StringVar(&o.logLevel, "log-level", "info", "")
	if cmd == "apply" || cmd == "watch" {
		fs.BoolVar(&o.noReload, "no-reload", false, "")
	}
	if cmd == "status" || cmd == "check" {
		fs.BoolVar(&o.json, "json", false, "")
	}
	if cmd == "health" {
		fs.DurationVar(&o.maxAge, "max-age", defaultMaxAge, "")
	}
	if cmd == "check" {
		fs.DurationVar(&o.timeout, "timeout", probe.DefaultTimeout, "")
	}

	switch cmd {
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	case "version", "--version":
		printVersion(stdout)
		return 0
	case "apply", "plan", "status", "revert", "watch", "check", "health":
	default:
		fmt.Fprintf(stderr, "mirrord: unknown command %q; run 'mirrord help'\n", cmd)
		return 2
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "mirrord: unexpected argument %q; run 'mirrord help'\n", fs.Arg(0))
		return 2
	}

	var level slog.Level
	if err := level.UnmarshalText([]byte(o.logLevel)); err != nil {
		fmt.Fprintf(stderr, "mirrord: --log-level %q: want debug, info, warn or error\n",
			o.logLevel)
		return 2
	}
	log := logging.New(stderr, level, logging.UnderJournal())

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	if err := dispatch(ctx, cmd, o, stdout, log); err != nil {
		fmt.Fprintf(stderr, "mirrord: %v\n", err)
		return 1
	}
	return 0
}

func dispatch(ctx context.Context, cmd string, o options, stdout io.Writer,
	log *slog.Logger) error {
	switch cmd {
	case "health":
		return healthCmd(stdout, o.maxAge, time.Now())
	case "watch":
		return watchCmd(ctx, o, stdout, log)
	case "revert":
		// Revert puts back what was there; no source, metadata included,
		// has a say in it.
		cfg, cfgErr := config.Load(config.Options{Root: o.root, File: o.config})
		if cfg.Root == "" {
			return cfgErr
		}
		return revert(ctx, cfg.Root, stdout, log)
	}

	md, mdErr := readMetadata(ctx, o.root, log)
	cfg, cfgErr := config.Load(config.Options{Root: o.root, File: o.config, Mirrors: o.mirrors,
		Metadata: md.values})
	if mdErr != nil {
		cfgErr = mdErr
	}

	if cmd == "status" {
		return status(cfg, cfgErr, md, o, stdout)
	}
	if cfgErr != nil {
		return cfgErr
	}

	switch cmd {
	case "plan":
		return plan(cfg, md, stdout, log)
	case "check":
		return check(ctx, cfg, o, stdout)
	}
	logMetadataUse(log, cfg)
	return applyCmd(ctx, cfg, o, stdout, log)
}

func plan(cfg config.Config, md metaStep, stdout io.Writer, log *slog.Logger) error {
	p, err := apply.Build(cfg, log)
	if err != nil {
		return err
	}

	fmt.Fprint(stdout, p.Diff())
	newMetadataReport(md, cfg).write(stdout)
	report(stdout, p, "")
	return nil
}

// newActor returns the Actor that carries out actions on the node under root
// through systemd's D-Bus API, a func to release it, and, when actions are
// only reported, why. With no systemd reachable under root (a copy of a node,
// a chroot) actions are reported, not carried out; a systemd that is there
// but refuses mirrord makes every action fail, so that they stay pending.
func newActor(ctx context.Context, root string, noReload bool, log *slog.Logger) (
	actor apply.Actor, closeFn func(), notDone string) {
	if noReload {
		return apply.ReportOnly{}, func() {}, "--no-reload"
	}

	dialCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	m, err := systemd.New(dialCtx, systemd.Options{Root: root, Log: log})
	switch {
	case errors.Is(err, systemd.ErrNoSystemd):
		log.Debug("actions not carried out", "reason", err)
		return apply.ReportOnly{}, func() {}, "no systemd reachable under " + root
	case err != nil:
		return failActor{err}, func() {}, ""
	}
	return m, m.Close, ""
}

// failActor fails every non-empty set of actions with the error that kept
// mirrord from reaching systemd.
type failActor struct{ err error }

func (f failActor) Act(_ context.Context, actions []apply.Action) error {
	for _, a := range actions {
		if a.Verb != apply.None {
			return fmt.Errorf("%s %s: %w", a.Verb, a.Unit, f.err)
		}
	}
	return nil
}

func applyCmd(ctx context.Context, cfg config.Config, o options, stdout io.Writer,
	log *slog.Logger) error {
	actor, closeActor, notDone := newActor(ctx, cfg.Root, o.noReload, log)
	defer closeActor()

	p, err := apply.Apply(ctx, cfg, actor, log)
	if p != nil {
		report(stdout, p, notDone)
	}
	return err
}

func revert(ctx context.Context, root string, stdout io.Writer, log *slog.Logger) error {
	actor, closeActor, notDone := newActor(ctx, root, false, log)
	defer closeActor()

	p, err := apply.RevertNode(ctx, root, actor, log)
	if p != nil {
		report(stdout, p, notDone)
	}
	return err
}

// report prints what a plan changes and the action each runtime needs, and
// why an action was not carried out when notDone says so.
func report(stdout io.Writer, p *apply.Plan, notDone string) {
	for _, w := range p.Warnings {
		fmt.Fprintf(stdout, "warning: %s\n", w)
	}
	if len(p.Changes) == 0 {
		fmt.Fprintln(stdout, "no file changes")
	}
	for _, c := range p.Changes {
		fmt.Fprintf(stdout, "file %s %s\n", changeVerb(c), c.Path)
	}
	for _, a := range p.Actions {
		fmt.Fprintln(stdout, a.String())
	}
	for _, a := range p.Actions {
		if a.Verb != apply.None && notDone != "" {
			fmt.Fprintf(stdout, "  not carried out: %s %s (%s)\n", a.Verb, a.Unit, notDone)
		}
	}
}

func changeVerb(c apply.Change) string {
	switch {
	case c.Restore && c.New == nil:
		return "remove"
	case c.Restore:
		return "restore"
	case c.Old == nil:
		return "create"
	}
	return "update"
}

// statusJSON is the status --json prints: the node's Status and the
// metadata layer.
type statusJSON struct {
	*apply.Status
	Metadata metadataReport `json:"metadata"`
}

func status(cfg config.Config, cfgErr error, md metaStep, o options, stdout io.Writer) error {
	if cfg.Root == "" {
		return cfgErr
	}
	s, err := apply.ReadStatus(cfg, cfgErr)
	if err != nil {
		return err
	}
	mr := newMetadataReport(md, cfg)

	if o.json {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(statusJSON{Status: s, Metadata: mr})
	}

	// The metadata lines go under the verdict, the first line.
	head, rest, _ := strings.Cut(s.String(), "\n")
	fmt.Fprintln(stdout, head)
	mr.write(stdout)
	fmt.Fprint(stdout, rest)
	if s.Error != "" {
		return errors.New("status incomplete: " + s.Error)
	}
	return nil
}

func printVersion(w io.Writer) {
	v, c, d := version, commit, date
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, s := range info.Settings {
			switch {
			case s.Key == "vcs.revision" && c == "":
				c = s.Value
			case s.Key == "vcs.time" && d == "":
				d = s.Value
			}
		}
		if v == "" && info.Main.Version != "(devel)" {
			v = info.Main.Version
		}
	}
	fmt.Fprintf(w, "mirrord %s\ncommit %s\nbuilt %s\n", orUnknown(v), orUnknown(c),
		orUnknown(d))
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}
