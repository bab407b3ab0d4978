package metadata

import (
	"context"
	"math/rand/v2"
	"time"
)

// Watcher follows the metadata of one provider.
type Watcher interface {
	// Next blocks until the values differ from the last ones returned (or
	// given to NewWatcher) and returns the new ones, or until ctx ends and
	// returns ctx's error. Values with no key set mean the keys were
	// removed. A service that fails or cannot be reached is logged once at
	// Warn and retried with backoff; its failures never come back as a
	// change. Next must not be called concurrently.
	Next(ctx context.Context) (Values, error)
}

// NewWatcher returns a Watcher of the provider that gave first (as Fetch
// returned it, even next to ErrNoMetadata), or else of the provider o
// names or detects. It returns an ErrNoMetadata error when there is no
// provider to follow: metadata off, or none detected.
//
// GCE and Yandex long-poll: one request held by the service until a change
// (wait_for_change, last_etag, timeout_sec of 60 s), bounded by its context
// at 70 s rather than by any client timeout. The others poll every
// o.Interval, ±10%, each poll bounded by o.Timeout.
func NewWatcher(o Options, first Values) (Watcher, error) {
	o, err := o.normalized()
	if err != nil {
		return nil, err
	}

	name := first.Provider
	if name == "" {
		if name, err = resolve(o); err != nil {
			return nil, err
		}
	}
	p, err := newProvider(name, o)
	if err != nil {
		return nil, err
	}

	first.Provider = name
	w := &watcher{o: o, name: name, p: p, last: first, etag: "NONE"}
	if lp, ok := p.(longPoller); ok {
		w.lp = lp
	}
	return w, nil
}

// watcher implements Watcher.
type watcher struct {
	o    Options
	name string
	p    provider
	lp   longPoller // nil when the provider cannot long-poll
	last Values     // what the caller has now

	etag string // of the last long-poll answer; "NONE" answers at once

	fails     int       // failures in a row
	downSince time.Time // first of them
}

// Next implements Watcher.
func (w *watcher) Next(ctx context.Context) (Values, error) {
	if w.lp != nil {
		return w.nextLongPoll(ctx)
	}
	return w.nextPoll(ctx)
}

// nextPoll fetches every Interval, ±10%, until the values change.
func (w *watcher) nextPoll(ctx context.Context) (Values, error) {
	delay := jitter(w.o.Interval)
	for {
		if err := sleep(ctx, delay); err != nil {
			return Values{}, err
		}

		bctx, cancel := context.WithTimeoutCause(ctx, w.o.Timeout, &boundError{w.o.Timeout})
		v, err := w.p.fetch(bctx)
		cancel()
		if ctx.Err() != nil {
			return Values{}, ctx.Err()
		}
		if err != nil {
			delay = w.failed(err, w.o.Interval)
			continue
		}

		w.recovered()
		if v, changed := w.changed(v); changed {
			return v, nil
		}
		delay = jitter(w.o.Interval)
	}
}

// nextLongPoll asks the service to hold each request until a change.
func (w *watcher) nextLongPoll(ctx context.Context) (Values, error) {
	var delay time.Duration
	for {
		if err := sleep(ctx, delay); err != nil {
			return Values{}, err
		}

		// The service answers after at most hang; 10 s more, as the GCE
		// guest agent allows, covers a slow answer (FACTS.md §1.3).
		bound := w.o.hang + 10*time.Second
		bctx, cancel := context.WithTimeoutCause(ctx, bound, &boundError{bound})
		start := time.Now()
		v, etag, err := w.lp.wait(bctx, w.etag, w.o.hang)
		cancel()
		if ctx.Err() != nil {
			return Values{}, ctx.Err()
		}
		if err != nil {
			delay = w.failed(err, w.o.hang)
			continue
		}

		w.recovered()
		delay = 0
		switch {
		case etag == "":
			// Without an ETag the service cannot hold the request: poll.
			w.o.Log.Debug("metadata long poll answered without an ETag; polling",
				"provider", w.name)
			etag, delay = "NONE", jitter(w.o.Interval)
		case etag == w.etag && time.Since(start) < w.o.hang/2:
			// Answered at once with nothing new: the service ignored
			// wait_for_change. Do not spin.
			delay = w.o.backoff
		}
		w.etag = etag

		if v, changed := w.changed(v); changed {
			return v, nil
		}
	}
}

// changed records v as the last values if they differ from them.
func (w *watcher) changed(v Values) (Values, bool) {
	v.Provider = w.name
	if v.Equal(w.last) {
		return v, false
	}
	w.last = v
	w.o.Log.Info("metadata changed", "provider", w.name, "keys", len(v.Source))
	return v, true
}

// failed logs the first of a run of failures at Warn, the others at
// Debug, and returns the delay before the next attempt: o.backoff,
// doubling up to limit.
func (w *watcher) failed(err error, limit time.Duration) time.Duration {
	delay := w.o.backoff
	for i := 0; i < w.fails && delay < limit; i++ {
		delay *= 2
	}
	delay = min(delay, max(limit, w.o.backoff))

	w.fails++
	if w.fails == 1 {
		w.downSince = time.Now()
		w.o.Log.Warn("metadata unreachable; keeping the configuration in place and retrying",
			"provider", w.name, "error", err, "retry_in", delay)
	} else {
		w.o.Log.Debug("metadata still unreachable", "provider", w.name, "error", err,
			"failures", w.fails, "retry_in", delay)
	}
	return delay
}

// recovered logs the end of a run of failures.
func (w *watcher) recovered() {
	if w.fails == 0 {
		return
	}
	w.o.Log.Info("metadata reachable again", "provider", w.name, "failures", w.fails,
		"duration", time.Since(w.downSince).Round(time.Millisecond))
	w.fails = 0
}

// jitter returns d shifted at random by up to ±10%, so that a fleet's
// nodes do not poll in step.
func jitter(d time.Duration) time.Duration {
	return d + time.Duration((rand.Float64()*0.2-0.1)*float64(d))
}

// sleep waits d or until ctx ends, and returns ctx's error in the latter
// case.
func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
