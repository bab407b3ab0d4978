package health

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/mirrord/mirrord/internal/probe"
	"github.com/mirrord/mirrord/internal/spec"
)

func report(statuses map[string]probe.Status) probe.Report {
	r := probe.Registry{Host: "docker.io"}
	for _, u := range []string{"https://a.example.net", "https://b.example.net",
		"https://c.example.net"} {
		if st, ok := statuses[u]; ok {
			r.Mirrors = append(r.Mirrors, probe.Result{URL: u, Status: st, Error: "down"})
		}
	}
	return probe.Report{Registries: []probe.Registry{r}}
}

func TestTrackerThresholds(t *testing.T) {
	tr := NewTracker(State{})
	now := time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)
	a := "https://a.example.net"
	failing := report(map[string]probe.Status{a: probe.Fail, "https://b.example.net": probe.OK})
	passing := report(map[string]probe.Status{a: probe.OK, "https://b.example.net": probe.OK})

	for i := 1; i < DefaultDown; i++ {
		if ch := tr.Observe(failing, now); len(ch) != 0 {
			t.Fatalf("failure %d moved %+v", i, ch)
		}
		if !tr.Unsettled() {
			t.Errorf("failure %d: not unsettled", i)
		}
	}
	ch := tr.Observe(failing, now)
	want := []Change{{Registry: "docker.io", Mirror: a, Demoted: true, Failures: DefaultDown,
		Err: "down"}}
	if diff := cmp.Diff(want, ch); diff != "" {
		t.Fatalf("demotion (-want +got):\n%s", diff)
	}
	if tr.Unsettled() || !tr.State(now).IsDemoted("docker.io", a) {
		t.Errorf("after demotion: unsettled %v, state %+v", tr.Unsettled(), tr.State(now))
	}

	// Unknown counts for nothing; a single success is not enough.
	tr.Observe(report(map[string]probe.Status{a: probe.Unknown}), now)
	if ch := tr.Observe(passing, now.Add(time.Minute)); len(ch) != 0 || !tr.Unsettled() {
		t.Fatalf("first success: moved %+v, unsettled %v", ch, tr.Unsettled())
	}
	ch = tr.Observe(passing, now.Add(2*time.Minute))
	if len(ch) != 1 || ch[0].Demoted || ch[0].DownFor != 2*time.Minute {
		t.Fatalf("return: %+v", ch)
	}

	// A mirror gone from the spec is forgotten.
	for range DefaultDown {
		tr.Observe(failing, now)
	}
	tr.Observe(report(map[string]probe.Status{"https://b.example.net": probe.OK}), now)
	if len(tr.State(now).Demoted) != 0 {
		t.Errorf("forgotten mirror still demoted: %+v", tr.State(now))
	}
}

func TestOrder(t *testing.T) {
	s, err := spec.ParseCompact("docker.io=https://a.example.net,https://b.example.net,"+
		"https://c.example.net;quay.io=https://a.example.net", spec.Source{Layer: spec.LayerEnv})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	st := State{Updated: now, Demoted: []Entry{
		{Registry: "docker.io", Mirror: "https://a.example.net"},
		{Registry: "docker.io", Mirror: "https://b.example.net"},
	}}

	got := st.Order(s, now)
	var urls []string
	for _, m := range got.Registries[0].Mirrors {
		urls = append(urls, m.URL)
	}
	want := []string{"https://c.example.net", "https://a.example.net", "https://b.example.net"}
	if diff := cmp.Diff(want, urls); diff != "" {
		t.Errorf("order (-want +got):\n%s", diff)
	}
	if got.Registries[1].Mirrors[0].URL != "https://a.example.net" {
		t.Errorf("quay.io reordered: %+v", got.Registries[1])
	}
	if s.Registries[0].Mirrors[0].URL != "https://a.example.net" {
		t.Error("Order changed its argument")
	}

	stale := st
	stale.Updated = now.Add(-MaxAge - time.Second)
	if got := stale.Order(s, now); got.Registries[0].Mirrors[0].URL != "https://a.example.net" {
		t.Error("a stale state reordered")
	}
}
