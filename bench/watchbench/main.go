// Command watchbench is bench/watch.sh's helper: it plays the foreign writer
// that makes a file drift and times how long the watcher takes to put it
// back, and it provides the baselines the script compares mirrord with.
//
//	watchbench drift -file F [-n 100] [-gap 100ms] [-timeout 5s]
//	    n times: overwrite F in place with foreign bytes, then wait until F
//	    holds its original bytes again; print the median, the 90th
//	    percentile and the maximum of the delays, and the repairs that
//	    timed out.
//	watchbench repairer -file F
//	    the least a watcher can do: on every inotify event in F's
//	    directory, put F's original bytes back (temporary file and
//	    rename), with no debounce and no parsing; runs until killed.
//	watchbench sleep
//	    an idle Go program, for resident memory and wakeups; runs until
//	    killed.
package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: watchbench drift|repairer|sleep [flags]")
		os.Exit(2)
	}
	fs := flag.NewFlagSet("watchbench "+os.Args[1], flag.ExitOnError)
	file := fs.String("file", "", "the watched file")
	n := fs.Int("n", 100, "foreign writes")
	gap := fs.Duration("gap", 100*time.Millisecond, "pause after each repair")
	timeout := fs.Duration("timeout", 5*time.Second, "longest wait for a repair")
	_ = fs.Parse(os.Args[2:])

	var err error
	switch os.Args[1] {
	case "drift":
		err = drift(*file, *n, *gap, *timeout)
	case "repairer":
		err = repairer(*file)
	case "sleep":
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
		<-sig
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "watchbench: %v\n", err)
		os.Exit(1)
	}
}

func drift(file string, n int, gap, timeout time.Duration) error {
	want, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return err
	}
	defer w.Close()
	if err := w.Add(filepath.Dir(file)); err != nil {
		return err
	}

	var delays []time.Duration
	timeouts := 0
	for i := range n {
		foreign := fmt.Appendf(nil, "# foreign write %d\n%s", i, want)
		if err := os.WriteFile(file, foreign, 0o644); err != nil {
			return err
		}
		began := time.Now()

		if restored(w, file, want, timeout) {
			delays = append(delays, time.Since(began))
		} else {
			timeouts++
			if err := os.WriteFile(file, want, 0o644); err != nil {
				return err
			}
		}
		time.Sleep(gap)
		drain(w)
	}

	if len(delays) == 0 {
		return fmt.Errorf("no repair of %s in %d foreign writes", file, n)
	}
	slices.Sort(delays)
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	fmt.Printf("repairs %d timeouts %d median %.2f p90 %.2f max %.2f\n", len(delays),
		timeouts, ms(delays[len(delays)/2]), ms(delays[len(delays)*9/10]),
		ms(delays[len(delays)-1]))
	return nil
}

// restored waits until file holds want, checking on each event of its
// directory and every 50ms in case an event was missed.
func restored(w *fsnotify.Watcher, file string, want []byte, timeout time.Duration) bool {
	deadline := time.After(timeout)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-w.Events:
		case <-tick.C:
		case <-deadline:
			return false
		}
		if data, err := os.ReadFile(file); err == nil && bytes.Equal(data, want) {
			return true
		}
	}
}

func drain(w *fsnotify.Watcher) {
	for {
		select {
		case <-w.Events:
		default:
			return
		}
	}
}

func repairer(file string) error {
	want, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return err
	}
	defer w.Close()
	if err := w.Add(filepath.Dir(file)); err != nil {
		return err
	}

	tmp := filepath.Join(filepath.Dir(file), ".repairer.tmp")
	for {
		select {
		case ev, ok := <-w.Events:
			if !ok {
				return errors.New("inotify watcher stopped")
			}
			if ev.Name == tmp {
				continue
			}
			if data, err := os.ReadFile(file); err == nil && bytes.Equal(data, want) {
				continue
			}
			if err := os.WriteFile(tmp, want, 0o644); err != nil {
				return err
			}
			if err := os.Rename(tmp, file); err != nil {
				return err
			}
		case err := <-w.Errors:
			return err
		}
	}
}
