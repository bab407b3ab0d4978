package watch

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// rig runs Run in the background and records what it does.
type rig struct {
	passes chan string // reasons, in order
	notes  chan string // sd_notify states, in order

	mu  sync.Mutex
	log bytes.Buffer
}

func (r *rig) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.log.Write(p)
}

func (r *rig) logs() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.log.String()
}

// start runs Run with o, filling in Pass (when nil: record and change
// nothing), Notify and Log; the watchdog comes from the environment unless
// o sets it. It stops Run at the end of the test and checks
// that Run returned nil. cancel stops it earlier.
func start(t *testing.T, o Options, reload <-chan struct{}) (r *rig, cancel func()) {
	t.Helper()
	r = &rig{passes: make(chan string, 1000), notes: make(chan string, 1000)}

	pass := o.Pass
	o.Pass = func(ctx context.Context, reason string) ([]string, error) {
		r.passes <- reason
		if pass == nil {
			return nil, nil
		}
		return pass(ctx, reason)
	}
	o.Notify = func(s string) { r.notes <- s }
	o.Log = slog.New(slog.NewTextHandler(r, &slog.HandlerOptions{Level: slog.LevelDebug}))

	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, o, reload) }()

	var once sync.Once
	cancel = func() {
		once.Do(func() {
			stop()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(5 * time.Second):
				t.Errorf("Run did not return 5s after cancel")
			}
		})
	}
	t.Cleanup(func() {
		cancel()
		if t.Failed() {
			t.Logf("log:\n%s", r.logs())
		}
	})
	return r, cancel
}

// waitNote waits for the sd_notify state want and returns the states sent
// before it.
func (r *rig) waitNote(t *testing.T, want string) []string {
	t.Helper()
	var before []string
	timeout := time.After(5 * time.Second)
	for {
		select {
		case s := <-r.notes:
			if s == want {
				return before
			}
			before = append(before, s)
		case <-timeout:
			t.Fatalf("no %q within 5s; got %q", want, before)
		}
	}
}

// waitPass waits for a pass whose reason contains want and returns the
// reasons of the passes before it.
func (r *rig) waitPass(t *testing.T, want string) []string {
	t.Helper()
	var before []string
	timeout := time.After(5 * time.Second)
	for {
		select {
		case s := <-r.passes:
			if strings.Contains(s, want) {
				return before
			}
			before = append(before, s)
		case <-timeout:
			t.Fatalf("no pass for %q within 5s; passes: %q", want, before)
		}
	}
}

// noPass fails if a pass runs within d.
func (r *rig) noPass(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case s := <-r.passes:
		t.Errorf("unexpected pass %q", s)
	case <-time.After(d):
	}
}

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestForeignWriteGivesOnePass(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "hosts.toml")
	writeFile(t, file, "mirrord's\n")
	r, _ := start(t, Options{Dirs: func() []string { return []string{dir} }}, nil)
	r.waitPass(t, ReasonStart)
	r.waitNote(t, "READY=1")

	began := time.Now()
	writeFile(t, file, "someone else's\n")
	r.waitPass(t, "change: ")
	t.Logf("event to pass: %v", time.Since(began))
	// bench/watch.sh measures the latency; this only catches a pass that
	// waits for the resync instead of the event.
	if took := time.Since(began); took > 3*time.Second {
		t.Errorf("pass came %v after the write; want it on the event", took)
	}
	r.noPass(t, 300*time.Millisecond)

	t.Run("ignored", func(t *testing.T) {
		other := filepath.Join(dir, "daemon.json")
		writeFile(t, other, "{}\n")
		r.waitPass(t, "change: ")
		if err := os.Chmod(other, 0o600); err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(dir, ".hosts.toml.mirrord-123"), "temporary\n")
		r.noPass(t, 300*time.Millisecond)
	})

	// A hosts.toml with credentials must stay 0600: its chmod is drift.
	t.Run("hosts_toml_chmod", func(t *testing.T) {
		if err := os.Chmod(file, 0o644); err != nil {
			t.Fatal(err)
		}
		r.waitPass(t, "change: CHMOD ")
	})
}

func TestBurstGivesOnePass(t *testing.T) {
	dir := t.TempDir()
	r, _ := start(t, Options{Dirs: func() []string { return []string{dir} },
		Debounce: 50 * time.Millisecond}, nil)
	r.waitNote(t, "READY=1")
	r.waitPass(t, ReasonStart)

	for i := range 30 {
		writeFile(t, filepath.Join(dir, "f"+string(rune('a'+i))), "x")
	}
	r.waitPass(t, "more event(s)")
	r.noPass(t, 400*time.Millisecond)
}

func TestNewDirectoriesGetWatched(t *testing.T) {
	dir := t.TempDir()
	wanted := filepath.Join(dir, "certs.d", "docker.io")
	r, _ := start(t, Options{Dirs: func() []string { return []string{wanted} }}, nil)
	r.waitNote(t, "READY=1")
	r.waitPass(t, ReasonStart)

	// The ancestor is watched only for the path to the wanted directory.
	writeFile(t, filepath.Join(dir, "unrelated.conf"), "x")
	r.noPass(t, 300*time.Millisecond)

	if err := os.MkdirAll(wanted, 0o755); err != nil {
		t.Fatal(err)
	}
	r.waitPass(t, "CREATE "+filepath.Join(dir, "certs.d"))
	r.settle(t)

	writeFile(t, filepath.Join(wanted, "hosts.toml"), "x")
	r.waitPass(t, "CREATE "+filepath.Join(wanted, "hosts.toml"))
	writeFile(t, filepath.Join(dir, "unrelated.conf"), "y")
	r.noPass(t, 300*time.Millisecond)
}

// settle waits until no pass has run for 300ms.
func (r *rig) settle(t *testing.T) {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case <-r.passes:
		case <-time.After(300 * time.Millisecond):
			return
		case <-deadline:
			t.Fatal("passes still running after 5s")
		}
	}
}

func TestResyncWithoutEvents(t *testing.T) {
	r, _ := start(t, Options{Resync: 50 * time.Millisecond}, nil)
	r.waitPass(t, ReasonStart)
	r.waitPass(t, ReasonResync)
	r.waitPass(t, ReasonResync)
}

func TestPassErrorIsLoggedAndTheLoopGoesOn(t *testing.T) {
	dir := t.TempDir()
	var mu sync.Mutex
	fail := true
	r, _ := start(t, Options{Dirs: func() []string { return []string{dir} },
		Resync: 100 * time.Millisecond,
		Pass: func(context.Context, string) ([]string, error) {
			mu.Lock()
			defer mu.Unlock()
			if fail {
				return nil, errors.New("config file mirrord.toml line 3: bad URL")
			}
			return nil, nil
		}}, nil)

	r.waitNote(t, "READY=1")
	r.waitPass(t, ReasonResync)
	r.waitPass(t, ReasonResync)
	mu.Lock()
	fail = false
	mu.Unlock()
	writeFile(t, filepath.Join(dir, "mirrord.toml"), "fixed")
	r.waitPass(t, "change: ")
	r.waitPass(t, ReasonResync)

	logs := r.logs()
	if n := strings.Count(logs, "level=ERROR msg=\"pass failed"); n != 1 {
		t.Errorf("%d error lines for one repeated error; want 1", n)
	}
	if !strings.Contains(logs, "pass failed again, same error") {
		t.Errorf("the repeated error is not logged at debug")
	}
	if !strings.Contains(logs, "pass succeeded after failing") {
		t.Errorf("the recovery is not logged")
	}
}

func TestNotifySequence(t *testing.T) {
	t.Setenv("WATCHDOG_USEC", "60000") // as systemd sets it: ping every 30ms
	t.Setenv("WATCHDOG_PID", "")
	var mu sync.Mutex
	n := 0
	reload := make(chan struct{})
	r, cancel := start(t, Options{
		Watchdog: 0, // from the environment
		Status: func() string {
			mu.Lock()
			defer mu.Unlock()
			n++
			return "in sync; status " + string(rune('0'+n))
		},
	}, reload)

	var got []string
	record := func(want string) {
		t.Helper()
		for _, s := range r.waitNote(t, want) {
			if s != "WATCHDOG=1" {
				got = append(got, s)
			}
		}
		got = append(got, want)
	}
	record("READY=1")
	record("WATCHDOG=1")
	record("WATCHDOG=1")
	reload <- struct{}{}
	record("READY=1")
	cancel()
	record("STOPPING=1")

	want := []string{"STATUS=in sync; status 1", "READY=1", "RELOADING=1",
		"STATUS=in sync; status 2", "READY=1", "STOPPING=1"}
	got = slices.DeleteFunc(got, func(s string) bool { return s == "WATCHDOG=1" })
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("notify sequence (-want +got):\n%s", diff)
	}
}

func TestWatchdogStopsWhileAPassHangs(t *testing.T) {
	release := make(chan struct{})
	r, _ := start(t, Options{Watchdog: 40 * time.Millisecond,
		PassTimeout: 100 * time.Millisecond,
		Pass: func(context.Context, string) ([]string, error) {
			<-release // ignores its ctx: hung
			return nil, nil
		}}, nil)
	r.waitPass(t, ReasonStart)
	r.waitNote(t, "WATCHDOG=1")

	time.Sleep(300 * time.Millisecond)
	for len(r.notes) > 0 {
		<-r.notes
	}
	time.Sleep(200 * time.Millisecond)
	if n := len(r.notes); n > 0 {
		t.Errorf("%d notifications while the pass hung; want no WATCHDOG=1", n)
	}
	if !strings.Contains(r.logs(), "pass hung") {
		t.Errorf("the hung pass is not logged")
	}

	close(release)
	r.waitNote(t, "READY=1")
	r.waitNote(t, "WATCHDOG=1")
}

func TestCancelDuringPass(t *testing.T) {
	passCtx := make(chan context.Context, 1)
	r, cancel := start(t, Options{Pass: func(ctx context.Context, _ string) ([]string, error) {
		passCtx <- ctx
		<-ctx.Done()
		return nil, ctx.Err()
	}}, nil)
	r.waitPass(t, ReasonStart)
	<-passCtx
	cancel() // fails the test unless Run returns nil
}

// TestBackoffUnderFlippingWriter has a writer put its version of a file
// back every 5ms while passes repair it. Without backoff that is a repair
// per write; with it a handful, and the log says who fights.
func TestBackoffUnderFlippingWriter(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "hosts.toml")
	writeFile(t, file, "mirrord\n")

	var mu sync.Mutex
	repairs := 0
	r, _ := start(t, Options{
		Dirs:        func() []string { return []string{dir} },
		Debounce:    2 * time.Millisecond,
		FightLimit:  3,
		FightWindow: time.Second,
		BackoffMin:  100 * time.Millisecond,
		BackoffMax:  400 * time.Millisecond,
		Status:      func() string { return "node" },
		Pass: func(context.Context, string) ([]string, error) {
			data, err := os.ReadFile(file)
			if err != nil || string(data) == "mirrord\n" {
				return nil, nil
			}
			tmp := filepath.Join(dir, ".hosts.toml.mirrord-1")
			if err := os.WriteFile(tmp, []byte("mirrord\n"), 0o644); err != nil {
				return nil, err
			}
			mu.Lock()
			repairs++
			mu.Unlock()
			return []string{file}, os.Rename(tmp, file)
		},
	}, nil)
	r.waitNote(t, "READY=1")

	const flips = 300 // 1.5s
	for range flips {
		writeFile(t, file, "other tool\n")
		time.Sleep(5 * time.Millisecond)
	}
	r.waitNote(t, "STATUS=node") // the fight is over: backoff gone from STATUS

	mu.Lock()
	defer mu.Unlock()
	t.Logf("%d repairs for %d foreign writes", repairs, flips)
	if repairs > 20 {
		t.Errorf("%d repairs for %d foreign writes; the backoff did not engage", repairs, flips)
	}
	logs := r.logs()
	if !strings.Contains(logs, "backing off") || !strings.Contains(logs, file+" (") {
		t.Errorf("no warning naming %s", file)
	}
	if data, _ := os.ReadFile(file); string(data) != "mirrord\n" {
		t.Errorf("file is %q after the fight; want mirrord's", data)
	}
}

func TestFight(t *testing.T) {
	at := func(ms int) time.Time { return time.Unix(0, 0).Add(time.Duration(ms) * time.Millisecond) }
	ms := time.Millisecond
	tests := []struct {
		name    string
		repairs []int // times of repairing passes, ms
		want    []time.Duration
	}{
		{"drift", []int{0}, []time.Duration{0}},
		{"under_limit", []int{0, 100, 200}, []time.Duration{0, 0, 0}},
		{"limit_spread_out", []int{0, 600, 1200, 1800, 2400}, []time.Duration{0, 0, 0, 0, 0}},
		{"engages_and_doubles", []int{0, 10, 20, 30, 130, 330, 730, 1130},
			[]time.Duration{0, 0, 0, 100 * ms, 200 * ms, 400 * ms, 400 * ms, 400 * ms}},
		{"ends_after_quiet", []int{0, 10, 20, 30, 130, 2000, 2010},
			[]time.Duration{0, 0, 0, 100 * ms, 200 * ms, 0, 0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fight{limit: 3, window: time.Second, min: 100 * ms, max: 400 * ms}
			var got []time.Duration
			for _, ms := range tt.repairs {
				got = append(got, f.repaired(at(ms), []string{"/etc/a"}))
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("holds (-want +got):\n%s", diff)
			}
		})
	}
}

func TestFightSummary(t *testing.T) {
	f := &fight{limit: 1, window: time.Second, min: time.Second, max: time.Second}
	now := time.Unix(0, 0)
	f.repaired(now, []string{"/b", "/a"})
	f.repaired(now, []string{"/a", "/c", "/d", "/e"})
	want := "/a (2x), /b (1x), /c (1x), 2 more"
	if got := f.summary(); got != want {
		t.Errorf("summary %q; want %q", got, want)
	}
}
