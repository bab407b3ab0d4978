package apply

import "context"

// Actor carries out the actions of a Plan after Execute wrote its files. It
// returns an error when an action failed or the runtime did not take the
// change.
type Actor interface {
	Act(ctx context.Context, actions []Action) error
}

// ReportOnly is the Actor that carries out nothing; the caller reports the
// actions as not carried out, and why.
type ReportOnly struct{}

// Act does nothing.
func (ReportOnly) Act(context.Context, []Action) error { return nil }
