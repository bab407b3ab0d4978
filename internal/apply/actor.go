package apply

import (
	"context"
	"fmt"
	"io"
)

// Actor carries out the actions of a Plan after Execute wrote its files. It
// returns an error when an action failed or the runtime did not take the
// change.
type Actor interface {
	Act(ctx context.Context, actions []Action) error
}

// ReportOnly is the Actor that carries out nothing and prints each action
// that is not None, with why it was left undone.
type ReportOnly struct {
	Out io.Writer
	Why string
}

// Act prints the actions.
func (r ReportOnly) Act(_ context.Context, actions []Action) error {
	for _, a := range actions {
		if a.Verb == None {
			continue
		}
		if _, err := fmt.Fprintf(r.Out, "  not carried out: %s %s (%s)\n", a.Verb, a.Unit,
			r.Why); err != nil {
			return err
		}
	}
	return nil
}
