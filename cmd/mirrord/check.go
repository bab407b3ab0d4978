package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/mirrord/mirrord/internal/config"
	"github.com/mirrord/mirrord/internal/containerd"
	"github.com/mirrord/mirrord/internal/probe"
	"github.com/mirrord/mirrord/internal/spec"
)

// checkUserAgent is what mirrord's probes call themselves in a registry's
// access log.
const checkUserAgent = "mirrord-probe"

// check probes every mirror of cfg's spec as containerd would use it and
// prints a table (or JSON with --json): per registry a verdict, per mirror
// the result, the latency of GET /v2/ and what it found or why it failed.
// It fails when a registry has no working mirror.
func check(ctx context.Context, cfg config.Config, o options, stdout io.Writer) error {
	if len(cfg.Spec.Registries) == 0 {
		fmt.Fprintln(stdout, "no mirrors configured; nothing to check")
		return nil
	}

	po := probe.Options{Root: cfg.Root, Timeout: o.timeout, UserAgent: userAgent()}
	if hasCredentials(cfg.Spec) {
		po.ContainerdMajor, _ = containerd.DetectMajor(cfg.Root)
	}
	rep := probe.Check(ctx, cfg.Spec, po)

	if o.json {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return fmt.Errorf("check: encode report: %w", err)
		}
	} else {
		writeReport(stdout, rep)
	}

	if failing := rep.Failing(); len(failing) > 0 {
		return fmt.Errorf("check: no working mirror for %s", strings.Join(failing, ", "))
	}
	return nil
}

func userAgent() string {
	if version != "" {
		return checkUserAgent + "/" + version
	}
	return checkUserAgent
}

func hasCredentials(s spec.Spec) bool {
	for _, r := range s.Registries {
		for _, m := range r.Mirrors {
			if m.Auth != nil {
				return true
			}
		}
	}
	return false
}

// writeReport prints rep for a person, e.g.
//
//	docker.io: OK, 2 of 3 mirrors work (canary library/busybox:latest; file /etc/...)
//	  ok     3ms  http://10.0.0.5:5000     sha256:3f1c2a4b5d6e
//	  FAIL   1ms  https://cache.example    connect: connection refused
func writeReport(w io.Writer, rep probe.Report) {
	for i, r := range rep.Registries {
		if i > 0 {
			fmt.Fprintln(w)
		}
		verdict := "OK"
		if !r.OK {
			verdict = "FAIL"
		}
		canary := "no canary: /v2/ only"
		if r.Canary != "" {
			canary = "canary " + r.Canary
		}
		fmt.Fprintf(w, "%s: %s, %d of %d %s (%s; %s)\n", r.Host, verdict, r.Working,
			len(r.Mirrors), plural(len(r.Mirrors), "mirror works", "mirrors work"), canary,
			r.Source)

		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		for _, m := range r.Mirrors {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", strings.ToUpper(string(m.Status)),
				latency(m), m.URL, detail(m))
		}
		tw.Flush()
		for _, m := range r.Mirrors {
			for _, n := range m.Notes {
				fmt.Fprintf(w, "  note: %s: %s\n", m.URL, n)
			}
		}
		if r.Resolved != "" {
			fmt.Fprintf(w, "  pull-only mirrors: tags resolved by %s\n", r.Resolved)
		}
	}
	fmt.Fprintf(w, "\nchecked in %s\n", rep.Took.Round(time.Millisecond))
}

// latency is the GET /v2/ round trip, rounded for a table.
func latency(m probe.Result) string {
	switch {
	case m.Latency == 0:
		return "-"
	case m.Latency < time.Millisecond:
		return m.Latency.Round(10 * time.Microsecond).String()
	}
	return m.Latency.Round(time.Millisecond).String()
}

// detail is the last column: what the mirror served, or why it failed.
func detail(m probe.Result) string {
	if m.Status != probe.OK {
		return m.Step + ": " + m.Error
	}
	var parts []string
	if m.Digest != "" {
		parts = append(parts, shortDigest(m.Digest))
	} else {
		parts = append(parts, "/v2/ answers")
	}
	if m.Auth != "none" {
		parts = append(parts, m.Auth+" auth")
	}
	if m.PullOnly {
		parts = append(parts, "pull only")
	}
	return strings.Join(parts, ", ")
}

func shortDigest(d string) string {
	if len(d) > len("sha256:")+12 {
		return d[:len("sha256:")+12]
	}
	return d
}
