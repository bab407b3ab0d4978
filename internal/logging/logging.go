// Package logging builds mirrord's slog logger.
//
// Under journald (JOURNAL_STREAM set, as systemd does for a unit's stderr)
// each line starts with the sd-daemon priority prefix ("<6>") and carries no
// time, since the journal stamps it; elsewhere lines carry the time and the
// level. Keys stay the same either way, so a line can be grepped or parsed
// wherever it was written: path, registry, unit, runtime, source, action,
// duration.
package logging

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"sync"
)

// New returns a logger writing to w at the given level. journal selects the
// journald form; see UnderJournal.
func New(w io.Writer, level slog.Leveler, journal bool) *slog.Logger {
	if !journal {
		return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
	}
	return slog.New(&journalHandler{out: &lockedWriter{w: w}, level: level})
}

// UnderJournal reports whether stderr is connected to the journal, which
// systemd signals with JOURNAL_STREAM.
func UnderJournal() bool {
	return os.Getenv("JOURNAL_STREAM") != ""
}

// Discard returns a logger that drops everything, for tests and callers
// that have nothing to say.
func Discard() *slog.Logger {
	return slog.New(slog.DiscardHandler)
}

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

// journalHandler writes "<N>message key=value ..." lines. It formats the
// attributes with slog's text handler, so quoting matches the plain form.
type journalHandler struct {
	out    *lockedWriter
	level  slog.Leveler
	attrs  []slog.Attr
	groups []string
}

func (h *journalHandler) Enabled(_ context.Context, l slog.Level) bool {
	return l >= h.level.Level()
}

func (h *journalHandler) Handle(ctx context.Context, r slog.Record) error {
	var buf bytes.Buffer
	drop := func(groups []string, a slog.Attr) slog.Attr {
		if len(groups) == 0 {
			switch a.Key {
			case slog.TimeKey, slog.LevelKey, slog.MessageKey:
				return slog.Attr{}
			}
		}
		return a
	}
	var inner slog.Handler = slog.NewTextHandler(&buf, &slog.HandlerOptions{ReplaceAttr: drop})
	inner = inner.WithAttrs(h.attrs)
	for _, g := range h.groups {
		inner = inner.WithGroup(g)
	}
	if err := inner.Handle(ctx, r); err != nil {
		return err
	}

	line := append([]byte(priority(r.Level)+r.Message), ' ')
	line = append(line, buf.Bytes()...)
	line = bytes.TrimRight(line, " \n")
	line = append(line, '\n')

	h.out.mu.Lock()
	defer h.out.mu.Unlock()
	_, err := h.out.w.Write(line)
	return err
}

func (h *journalHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	c := *h
	c.attrs = append(append([]slog.Attr(nil), h.attrs...), attrs...)
	return &c
}

func (h *journalHandler) WithGroup(name string) slog.Handler {
	c := *h
	c.groups = append(append([]string(nil), h.groups...), name)
	return &c
}

// priority maps a slog level to the sd-daemon(3) prefix: error 3, warning 4,
// info 6, debug 7.
func priority(l slog.Level) string {
	switch {
	case l >= slog.LevelError:
		return "<3>"
	case l >= slog.LevelWarn:
		return "<4>"
	case l >= slog.LevelInfo:
		return "<6>"
	}
	return "<7>"
}
