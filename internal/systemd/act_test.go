package systemd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/mirrord/mirrord/internal/apply"
	"github.com/mirrord/mirrord/internal/config"
)

// fakeBus is a systemd with fixed units. Its jobs end at once with the
// result set for their unit; a unit with no result set never answers.
type fakeBus struct {
	mu    sync.Mutex
	units map[string]unitState
	// own is the unit of testPID; cgroup, the unit in our cgroup (own
	// when empty).
	own, cgroup string
	results     map[string]string
	// jobs records each job as "verb unit wait" or "verb unit nowait".
	jobs []string
}

func (f *fakeBus) unit(_ context.Context, name string) (unitState, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if st, ok := f.units[name]; ok {
		return st, nil
	}
	return unitState{Load: "not-found", Active: "inactive", Sub: "dead"}, nil
}

func (f *fakeBus) unitByPID(_ context.Context, pid int) (string, error) {
	if f.own == "" || pid != testPID {
		return "", fmt.Errorf("PID %d does not belong to any loaded unit.", pid)
	}
	return f.own, nil
}

func (f *fakeBus) enqueue(_ context.Context, verb apply.Verb, unit string,
	ch chan<- string) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	how := "wait"
	if ch == nil {
		how = "nowait"
	}
	f.jobs = append(f.jobs, fmt.Sprintf("%s %s %s", verb, unit, how))
	if r, ok := f.results[unit]; ok && ch != nil {
		ch <- r
	}
	return len(f.jobs), nil
}

func (f *fakeBus) close() {}

var (
	containerdAction = apply.Action{Runtime: config.Containerd, Unit: "containerd.service",
		Verb: apply.Restart, Reason: "config.toml changed"}
	dockerAction = apply.Action{Runtime: config.Docker, Unit: "docker.service",
		Verb: apply.Reload, Reason: "daemon.json changed"}
)

func active(after ...string) unitState {
	return unitState{Load: "loaded", Active: "active", Sub: "running", After: after}
}

const testPID = 4242

// testManager is a Manager on bus whose proofs record the runtimes they
// were asked about and fail with proofErr.
func testManager(bus *fakeBus, proofErr error, logs *bytes.Buffer) (*Manager,
	*[]config.Runtime) {
	m := newManager(Options{Log: textLogger(logs), JobTimeout: 200 * time.Millisecond}, bus)
	m.pid = testPID
	m.selfCgroup = func() ([]byte, error) {
		unit := bus.cgroup
		if unit == "" {
			unit = bus.own
		}
		if unit == "" {
			unit = "session-1.scope"
		}
		return []byte("9:name=systemd:/system.slice/" + unit + "\n0::/system.slice/" + unit +
			"\n"), nil
	}
	var proved []config.Runtime
	m.prove = func(_ context.Context, rt config.Runtime) error {
		proved = append(proved, rt)
		return proofErr
	}
	return m, &proved
}

func TestAct(t *testing.T) {
	tests := []struct {
		name       string
		bus        *fakeBus
		actions    []apply.Action
		proofErr   error
		wantJobs   []string
		wantProved []config.Runtime
		wantErr    string
		wantLog    []string
	}{
		{
			name: "done",
			bus: &fakeBus{units: map[string]unitState{"containerd.service": active()},
				results: map[string]string{"containerd.service": "done"}},
			actions:    []apply.Action{containerdAction},
			wantJobs:   []string{"restart containerd.service wait"},
			wantProved: []config.Runtime{config.Containerd},
			wantLog: []string{`msg="unit restarted" unit=containerd.service job_result=done ` +
				`duration=`},
		},
		{
			name: "reload_done",
			bus: &fakeBus{units: map[string]unitState{"docker.service": active()},
				results: map[string]string{"docker.service": "done"}},
			actions:    []apply.Action{dockerAction},
			wantJobs:   []string{"reload docker.service wait"},
			wantProved: []config.Runtime{config.Docker},
			wantLog:    []string{`msg="unit reloaded" unit=docker.service job_result=done`},
		},
		{
			name: "inactive_unit",
			bus: &fakeBus{units: map[string]unitState{"containerd.service": {Load: "loaded",
				Active: "inactive", Sub: "dead"}}},
			actions: []apply.Action{containerdAction},
			wantLog: []string{`msg="unit not active; it reads the new files when it starts" ` +
				`unit=containerd.service state=inactive`},
		},
		{
			name: "failed_unit",
			bus: &fakeBus{units: map[string]unitState{"containerd.service": {Load: "loaded",
				Active: "failed", Sub: "failed"}}},
			actions: []apply.Action{containerdAction},
			wantLog: []string{`unit=containerd.service state=failed`},
		},
		{
			name:    "missing_unit",
			bus:     &fakeBus{},
			actions: []apply.Action{dockerAction},
			wantLog: []string{`msg="unit not installed; nothing to reload" unit=docker.service ` +
				`state=not-found`},
		},
		{
			name: "inside_own_start_job",
			bus: &fakeBus{own: "mirrord.service", units: map[string]unitState{
				"mirrord.service":    {Load: "loaded", Active: "activating", Sub: "start"},
				"containerd.service": active("mirrord.service", "network.target"),
			}, results: map[string]string{"containerd.service": "done"}},
			actions:  []apply.Action{containerdAction},
			wantJobs: []string{"restart containerd.service nowait"},
			wantLog: []string{`msg="restart of containerd.service queued; not waiting ` +
				`(mirrord's own start job is running)" unit=containerd.service ` +
				`own_unit=mirrord.service`},
		},
		{
			// docker.service is not ordered after mirrord itself, but after
			// containerd.service, whose restart waits for mirrord.
			name: "inside_own_start_job_transitive",
			bus: &fakeBus{own: "mirrord.service", units: map[string]unitState{
				"mirrord.service": {Load: "loaded", Active: "activating",
					Before: []string{"containerd.service"}},
				"containerd.service": active(),
				"docker.service":     active("containerd.service"),
			}, results: map[string]string{"containerd.service": "done", "docker.service": "done"}},
			actions: []apply.Action{containerdAction, dockerAction},
			wantJobs: []string{"restart containerd.service nowait",
				"reload docker.service nowait"},
		},
		{
			name: "own_start_job_unit_not_ordered_after",
			bus: &fakeBus{own: "cloud-final.service", units: map[string]unitState{
				"cloud-final.service": {Load: "loaded", Active: "activating",
					After: []string{"multi-user.target"}},
				"containerd.service": active("network.target"),
			}, results: map[string]string{"containerd.service": "done"}},
			actions:    []apply.Action{containerdAction},
			wantJobs:   []string{"restart containerd.service wait"},
			wantProved: []config.Runtime{config.Containerd},
		},
		{
			// Our cgroup names a unit this systemd does not confirm for our
			// PID: another PID namespace.
			name: "own_unit_not_confirmed",
			bus: &fakeBus{cgroup: "mirrord.service", units: map[string]unitState{
				"mirrord.service":    {Load: "loaded", Active: "activating"},
				"containerd.service": active("mirrord.service"),
			}, results: map[string]string{"containerd.service": "done"}},
			actions:    []apply.Action{containerdAction},
			wantJobs:   []string{"restart containerd.service wait"},
			wantProved: []config.Runtime{config.Containerd},
		},
		{
			name: "own_unit_started",
			bus: &fakeBus{own: "mirrord-watch.service", units: map[string]unitState{
				"mirrord-watch.service": active(),
				"containerd.service":    active("mirrord-watch.service"),
			}, results: map[string]string{"containerd.service": "done"}},
			actions:    []apply.Action{containerdAction},
			wantJobs:   []string{"restart containerd.service wait"},
			wantProved: []config.Runtime{config.Containerd},
		},
		{
			name: "job_failed",
			bus: &fakeBus{units: map[string]unitState{"containerd.service": active()},
				results: map[string]string{"containerd.service": "failed"}},
			actions:  []apply.Action{containerdAction},
			wantJobs: []string{"restart containerd.service wait"},
			wantErr:  `restart containerd.service: job result "failed"`,
			wantLog: []string{`level=WARN msg="unit restart failed" unit=containerd.service ` +
				`job_result=failed`},
		},
		{
			name: "no_job_result",
			bus: &fakeBus{units: map[string]unitState{"containerd.service": active()},
				results: map[string]string{}},
			actions:  []apply.Action{containerdAction},
			wantJobs: []string{"restart containerd.service wait"},
			wantErr: "restart containerd.service: job 1: no result after 200ms; " +
				"the job goes on",
		},
		{
			name: "proof_failed",
			bus: &fakeBus{units: map[string]unitState{"docker.service": active()},
				results: map[string]string{"docker.service": "done"}},
			actions:    []apply.Action{dockerAction},
			proofErr:   errors.New("dockerd did not take daemon.json"),
			wantJobs:   []string{"reload docker.service wait"},
			wantProved: []config.Runtime{config.Docker},
			wantErr:    "reload docker.service: dockerd did not take daemon.json",
		},
		{
			name: "one_fails_other_goes_on",
			bus: &fakeBus{units: map[string]unitState{"containerd.service": active(),
				"docker.service": active()},
				results: map[string]string{"containerd.service": "dependency",
					"docker.service": "done"}},
			actions: []apply.Action{containerdAction, dockerAction},
			wantJobs: []string{"restart containerd.service wait",
				"reload docker.service wait"},
			wantProved: []config.Runtime{config.Docker},
			wantErr:    `restart containerd.service: job result "dependency"`,
		},
		{
			name: "none_skipped",
			bus:  &fakeBus{units: map[string]unitState{"containerd.service": active()}},
			actions: []apply.Action{{Runtime: config.Containerd, Unit: "containerd.service",
				Verb: apply.None, Reason: "nothing changed"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs bytes.Buffer
			m, proved := testManager(tt.bus, tt.proofErr, &logs)

			err := m.Act(t.Context(), tt.actions)
			if tt.wantErr == "" && err != nil {
				t.Fatal(err)
			}
			if tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("error %v, want one with %q", err, tt.wantErr)
			}
			if diff := cmp.Diff(tt.wantJobs, tt.bus.jobs); diff != "" {
				t.Errorf("jobs (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantProved, *proved); diff != "" {
				t.Errorf("proofs (-want +got):\n%s", diff)
			}
			for _, l := range tt.wantLog {
				if !strings.Contains(logs.String(), l) {
					t.Errorf("log lacks %q:\n%s", l, logs.String())
				}
			}
		})
	}
}

func TestActBudget(t *testing.T) {
	bus := &fakeBus{units: map[string]unitState{"containerd.service": active()},
		results: map[string]string{"containerd.service": "done"}}
	var logs bytes.Buffer
	m, _ := testManager(bus, nil, &logs)
	m.budget = newBudget(Budget{Max: 2, Window: 10 * time.Minute})
	now := time.Date(2026, 8, 1, 12, 0, 0, 0, time.UTC)
	m.now = func() time.Time { return now }

	for i := range 2 {
		if err := m.Act(t.Context(), []apply.Action{containerdAction}); err != nil {
			t.Fatalf("restart %d: %v", i+1, err)
		}
		now = now.Add(time.Minute)
	}
	err := m.Act(t.Context(), []apply.Action{containerdAction})
	if !errors.Is(err, ErrBudget) {
		t.Fatalf("third restart: got %v, want ErrBudget", err)
	}
	want := "restart containerd.service refused: 2 restarts in the last 10m0s (budget); " +
		"next allowed at 2026-08-01 12:10:00"
	if !strings.Contains(err.Error(), want) {
		t.Errorf("error %q lacks %q", err, want)
	}
	if len(bus.jobs) != 2 {
		t.Errorf("jobs %v: a refused action must start no job", bus.jobs)
	}
	if !strings.Contains(logs.String(), `level=WARN msg="action refused by the restart budget"`) {
		t.Errorf("no warning logged:\n%s", logs.String())
	}

	// An inactive unit gets no job and uses no budget.
	bus.units["containerd.service"] = unitState{Load: "loaded", Active: "inactive"}
	now = now.Add(time.Hour)
	for range 3 {
		if err := m.Act(t.Context(), []apply.Action{containerdAction}); err != nil {
			t.Fatal(err)
		}
	}
	bus.units["containerd.service"] = active()
	if err := m.Act(t.Context(), []apply.Action{containerdAction}); err != nil {
		t.Fatalf("after the window: %v", err)
	}
}

func TestVerify(t *testing.T) {
	tests := []struct {
		name       string
		bus        *fakeBus
		proofErr   error
		wantProved []config.Runtime
		wantErr    string
	}{
		{
			name: "active",
			bus: &fakeBus{units: map[string]unitState{"containerd.service": active(),
				"docker.service": active()}},
			wantProved: []config.Runtime{config.Containerd, config.Docker},
		},
		{
			name: "inactive_and_missing",
			bus: &fakeBus{units: map[string]unitState{"containerd.service": {Load: "loaded",
				Active: "inactive"}}},
		},
		{
			name: "failed",
			bus: &fakeBus{units: map[string]unitState{"containerd.service": {Load: "loaded",
				Active: "failed", Sub: "failed"}, "docker.service": active()}},
			wantProved: []config.Runtime{config.Docker},
			wantErr: "check containerd.service: unit failed (failed); " +
				"journalctl -u containerd.service says why",
		},
		{
			name: "proof_failed",
			bus: &fakeBus{units: map[string]unitState{"containerd.service": active(),
				"docker.service": active()}},
			proofErr:   errNoCRI,
			wantProved: []config.Runtime{config.Containerd, config.Docker},
			wantErr:    "check containerd.service: containerd is up but its CRI plugin",
		},
		{
			name: "queued_behind_own_start_job",
			bus: &fakeBus{own: "mirrord.service", units: map[string]unitState{
				"mirrord.service": {Load: "loaded", Active: "activating"},
				"containerd.service": {Load: "loaded", Active: "active",
					After: []string{"mirrord.service"}, Job: 7},
				"docker.service": active(),
			}},
			wantProved: []config.Runtime{config.Docker},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs bytes.Buffer
			m, proved := testManager(tt.bus, tt.proofErr, &logs)

			err := m.Verify(t.Context(), []config.Runtime{config.Containerd, config.Docker})
			if tt.wantErr == "" && err != nil {
				t.Fatal(err)
			}
			if tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("error %v, want one with %q", err, tt.wantErr)
			}
			if diff := cmp.Diff(tt.wantProved, *proved); diff != "" {
				t.Errorf("proofs (-want +got):\n%s", diff)
			}
		})
	}
}

func TestVerifyWaitsForJob(t *testing.T) {
	bus := &fakeBus{units: map[string]unitState{"containerd.service": {Load: "loaded",
		Active: "activating", Job: 9}}}
	var logs bytes.Buffer
	m, proved := testManager(bus, nil, &logs)
	time.AfterFunc(300*time.Millisecond, func() {
		bus.mu.Lock()
		defer bus.mu.Unlock()
		bus.units["containerd.service"] = active()
	})

	if err := m.Verify(t.Context(), []config.Runtime{config.Containerd}); err != nil {
		t.Fatal(err)
	}
	if len(*proved) != 1 {
		t.Errorf("proofs %v, want containerd once it settled", *proved)
	}
}

func TestCgroupUnit(t *testing.T) {
	tests := []struct {
		name, cgroup, want string
	}{
		{name: "unified", cgroup: "0::/system.slice/mirrord.service\n",
			want: "mirrord.service"},
		{name: "hybrid", cgroup: "9:name=systemd:/system.slice/mirrord-watch.service\n" +
			"8:pids:/\n0::/system.slice/mirrord-watch.service\n", want: "mirrord-watch.service"},
		{name: "legacy", cgroup: "1:name=systemd:/system.slice/run-u9.service\n2:cpu:/\n",
			want: "run-u9.service"},
		{name: "sub_cgroup", cgroup: "0::/system.slice/containerd.service/sub\n",
			want: "containerd.service"},
		{name: "session", cgroup: "0::/user.slice/user-0.slice/session-3.scope\n",
			want: "session-3.scope"},
		{name: "root", cgroup: "0::/\n"},
		{name: "outside_namespace", cgroup: "9:name=systemd:/..\n0::/..\n"},
		{name: "foreign_cgroup", cgroup: "9:name=systemd:/mirrord-helper\n0::/\n"},
		{name: "slice_only", cgroup: "0::/system.slice\n"},
		{name: "empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := cgroupUnit([]byte(tt.cgroup)); got != tt.want {
				t.Errorf("cgroupUnit(%q) = %q, want %q", tt.cgroup, got, tt.want)
			}
		})
	}
}
