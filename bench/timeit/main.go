// Command timeit measures the wall time of a command against a baseline
// program, running the two in alternation so that the noise of a shared
// machine falls on both alike. It prints the median and the 90th percentile
// of each and their ratios, and exits non-zero only when a run fails or the
// arguments are wrong: judging the figures is left to the reader.
//
// Usage:
//
//	timeit [-n RUNS] [-warmup RUNS] -base PROGRAM [-label NAME] -- COMMAND [ARG...]
//
// PROGRAM runs without arguments. Both inherit the environment; their
// standard output is discarded, and the standard error of a failed run is
// printed with the error.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
	"time"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "timeit: %v\n", err)
		os.Exit(1)
	}
}

// run parses args, times both commands and prints the summary to out.
func run(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("timeit", flag.ContinueOnError)
	runs := fs.Int("n", 200, "timed runs of each command")
	warmup := fs.Int("warmup", 5, "untimed runs of each command first")
	base := fs.String("base", "", "the baseline program, run without arguments")
	label := fs.String("label", "", "name of the command in the output (default: its first word)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cmd := fs.Args()
	switch {
	case *base == "" || len(cmd) == 0:
		return errors.New("usage: timeit [-n RUNS] [-warmup RUNS] -base PROGRAM -- COMMAND [ARG...]")
	case *runs < 1 || *warmup < 0:
		return fmt.Errorf("-n %d, -warmup %d: want -n at least 1 and -warmup at least 0",
			*runs, *warmup)
	}
	if *label == "" {
		*label = cmd[0]
	}

	a, err := newRunner([]string{*base})
	if err != nil {
		return err
	}
	defer a.close()
	b, err := newRunner(cmd)
	if err != nil {
		return err
	}
	defer b.close()

	baseTimes, cmdTimes, err := alternate(a, b, *warmup, *runs)
	if err != nil {
		return err
	}
	report(out, *runs, "baseline", baseTimes, *label, cmdTimes)
	return nil
}

// alternate runs a and b in turn, swapping which goes first on every round,
// and returns the timed durations of each.
func alternate(a, b *runner, warmup, runs int) (ta, tb []time.Duration, err error) {
	for i := range warmup + runs {
		first, second := a, b
		if i%2 == 1 {
			first, second = b, a
		}
		d1, err := first.run()
		if err != nil {
			return nil, nil, err
		}
		d2, err := second.run()
		if err != nil {
			return nil, nil, err
		}
		if i < warmup {
			continue
		}
		if first == a {
			ta, tb = append(ta, d1), append(tb, d2)
		} else {
			ta, tb = append(ta, d2), append(tb, d1)
		}
	}
	return ta, tb, nil
}

// runner runs one command line repeatedly, its standard error kept in a
// temporary file so that a failure can be shown without a pipe per run.
type runner struct {
	argv   []string
	stderr *os.File
}

func newRunner(argv []string) (*runner, error) {
	f, err := os.CreateTemp("", "timeit-stderr-*")
	if err != nil {
		return nil, fmt.Errorf("create stderr file: %w", err)
	}
	return &runner{argv: argv, stderr: f}, nil
}

func (r *runner) close() {
	r.stderr.Close()
	os.Remove(r.stderr.Name())
}

// run executes the command once and returns its wall time, from just
// before the fork to just after the wait.
func (r *runner) run() (time.Duration, error) {
	if err := r.stderr.Truncate(0); err != nil {
		return 0, fmt.Errorf("reset stderr file: %w", err)
	}
	if _, err := r.stderr.Seek(0, io.SeekStart); err != nil {
		return 0, fmt.Errorf("reset stderr file: %w", err)
	}
	cmd := exec.Command(r.argv[0], r.argv[1:]...)
	cmd.Stderr = r.stderr

	start := time.Now()
	err := cmd.Run()
	d := time.Since(start)

	if err != nil {
		msg, _ := os.ReadFile(r.stderr.Name())
		return 0, fmt.Errorf("run %s: %w\n%s", strings.Join(r.argv, " "), err, msg)
	}
	return d, nil
}

// report prints the figures of both commands and their ratios.
func report(out io.Writer, runs int, nameA string, ta []time.Duration, nameB string,
	tb []time.Duration) {
	ma, pa := percentile(ta, 50), percentile(ta, 90)
	mb, pb := percentile(tb, 50), percentile(tb, 90)
	width := max(len(nameA), len(nameB))
	fmt.Fprintf(out, "runs: %d of each, in alternation\n", runs)
	fmt.Fprintf(out, "%-*s  median %8.3f ms  p90 %8.3f ms\n", width, nameA, ms(ma), ms(pa))
	fmt.Fprintf(out, "%-*s  median %8.3f ms  p90 %8.3f ms\n", width, nameB, ms(mb), ms(pb))
	fmt.Fprintf(out, "ratio: median %.2fx  p90 %.2fx\n", float64(mb)/float64(ma),
		float64(pb)/float64(pa))
}

// percentile returns the p-th percentile of ds by nearest rank.
func percentile(ds []time.Duration, p int) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	rank := (p*len(s) + 99) / 100 // ceil(p/100 * n)
	return s[max(rank, 1)-1]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
