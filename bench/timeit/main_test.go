package main

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	ms := func(ns ...int) []time.Duration {
		var ds []time.Duration
		for _, n := range ns {
			ds = append(ds, time.Duration(n)*time.Millisecond)
		}
		return ds
	}
	tests := []struct {
		name string
		ds   []time.Duration
		p    int
		want time.Duration
	}{
		{"one", ms(7), 50, 7 * time.Millisecond},
		{"median_odd", ms(5, 1, 3), 50, 3 * time.Millisecond},
		{"median_even_lower", ms(4, 1, 3, 2), 50, 2 * time.Millisecond},
		{"p90_of_ten", ms(10, 9, 8, 7, 6, 5, 4, 3, 2, 1), 90, 9 * time.Millisecond},
		{"p90_of_eleven", ms(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11), 90, 10 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := percentile(tt.ds, tt.p); got != tt.want {
				t.Errorf("percentile(%v, %d) = %v, want %v", tt.ds, tt.p, got, tt.want)
			}
		})
	}
}

func TestRun(t *testing.T) {
	var out bytes.Buffer
	if err := run([]string{"-n", "3", "-warmup", "1", "-base", "/bin/true", "--", "/bin/true"},
		&out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "runs: 3 of each") || !strings.Contains(out.String(), "ratio:") {
		t.Errorf("output lacks the summary:\n%s", out.String())
	}

	err := run([]string{"-n", "1", "-base", "/bin/true", "--", "/bin/sh", "-c", "echo boom >&2; exit 3"},
		&out)
	if err == nil || !strings.Contains(err.Error(), "exit status 3") ||
		!strings.Contains(err.Error(), "boom") {
		t.Errorf("failing command: err = %v, want exit status 3 and its stderr", err)
	}
}
