package logging

import (
	"bytes"
	"log/slog"
	"testing"
)

func TestJournalForm(t *testing.T) {
	var buf bytes.Buffer
	log := New(&buf, slog.LevelDebug, true)

	log.Info("file written", "path", "/etc/docker/daemon.json")
	log.With("unit", "containerd.service").Warn("unit not active", "state", "inactive")
	log.Debug("idle")
	log.Error("apply failed", "err", "parse daemon.json: line 3")

	want := "<6>file written path=/etc/docker/daemon.json\n" +
		"<4>unit not active unit=containerd.service state=inactive\n" +
		"<7>idle\n" +
		"<3>apply failed err=\"parse daemon.json: line 3\"\n"
	if got := buf.String(); got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}

func TestPlainFormKeepsTime(t *testing.T) {
	var buf bytes.Buffer
	New(&buf, slog.LevelInfo, false).Info("hello", "k", 1)

	if !bytes.Contains(buf.Bytes(), []byte("time=")) || !bytes.Contains(buf.Bytes(), []byte("k=1")) {
		t.Errorf("plain line lacks time or attrs: %q", buf.String())
	}
}
