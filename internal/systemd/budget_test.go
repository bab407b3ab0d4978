package systemd

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/mirrord/mirrord/internal/apply"
)

func TestBudget(t *testing.T) {
	t0 := time.Date(2026, 8, 1, 12, 0, 0, 0, time.UTC)
	type step struct {
		at      time.Duration
		verb    apply.Verb
		refused string // "" when allowed; else a part of the error
	}
	tests := []struct {
		name   string
		budget Budget
		steps  []step
	}{
		{
			name:   "three_then_refused",
			budget: Budget{Max: 3, Window: 10 * time.Minute},
			steps: []step{
				{at: 0, verb: apply.Restart},
				{at: time.Minute, verb: apply.Restart},
				{at: 2 * time.Minute, verb: apply.Restart},
				{at: 3 * time.Minute, verb: apply.Restart, refused: "restart containerd.service " +
					"refused: 3 restarts in the last 10m0s (budget); next allowed at " +
					"2026-08-01 12:10:00"},
			},
		},
		{
			name:   "frees_up_after_window",
			budget: Budget{Max: 2, Window: 10 * time.Minute},
			steps: []step{
				{at: 0, verb: apply.Restart},
				{at: 5 * time.Minute, verb: apply.Restart},
				{at: 9 * time.Minute, verb: apply.Restart, refused: "next allowed at " +
					"2026-08-01 12:10:00"},
				{at: 10 * time.Minute, verb: apply.Restart},
				{at: 11 * time.Minute, verb: apply.Restart, refused: "next allowed at " +
					"2026-08-01 12:15:00"},
			},
		},
		{
			name:   "mixed_verbs",
			budget: Budget{Max: 2, Window: time.Hour},
			steps: []step{
				{at: 0, verb: apply.Reload},
				{at: time.Second, verb: apply.Restart},
				{at: 2 * time.Second, verb: apply.Reload, refused: "2 restarts and reloads"},
			},
		},
		{
			name:   "unlimited",
			budget: Budget{Max: -1, Window: time.Hour},
			steps: []step{
				{at: 0, verb: apply.Restart},
				{at: 0, verb: apply.Restart},
				{at: 0, verb: apply.Restart},
				{at: 0, verb: apply.Restart},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newBudget(tt.budget)
			for i, s := range tt.steps {
				now := t0.Add(s.at)
				err := b.allow("containerd.service", s.verb, now)
				if s.refused == "" {
					if err != nil {
						t.Fatalf("step %d: %v", i, err)
					}
					b.record("containerd.service", s.verb, now)
					continue
				}
				if !errors.Is(err, ErrBudget) {
					t.Fatalf("step %d: got %v, want an ErrBudget", i, err)
				}
				if !strings.Contains(err.Error(), s.refused) {
					t.Errorf("step %d: error %q lacks %q", i, err, s.refused)
				}
			}
		})
	}
}

func TestBudgetPerUnit(t *testing.T) {
	b := newBudget(Budget{Max: 1, Window: time.Hour})
	now := time.Now()
	b.record("containerd.service", apply.Restart, now)
	if err := b.allow("docker.service", apply.Reload, now); err != nil {
		t.Errorf("docker.service: %v; want its own budget", err)
	}
	if err := b.allow("containerd.service", apply.Restart, now); !errors.Is(err, ErrBudget) {
		t.Errorf("containerd.service: got %v, want ErrBudget", err)
	}
}

func TestOptionsDefaults(t *testing.T) {
	o := Options{Budget: Budget{Window: time.Minute}}.withDefaults()
	if o.Root != "/" || o.JobTimeout != DefaultJobTimeout ||
		o.CheckTimeout != DefaultCheckTimeout || o.Log == nil {
		t.Errorf("defaults not applied: %+v", o)
	}
	if want := (Budget{Max: DefaultBudget.Max, Window: time.Minute}); o.Budget != want {
		t.Errorf("Budget = %+v, want %+v", o.Budget, want)
	}
}
