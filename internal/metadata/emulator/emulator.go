// Package emulator serves stand-ins for the instance metadata services that
// package metadata reads, faithful to the parts of each protocol mirrord
// depends on: the required headers and their refusals, IMDSv2 tokens and
// their expiry, 404 for absent keys, ETags and held wait_for_change
// requests, Azure's api-version. Each emulator is an http.Handler to serve
// with httptest.NewServer (or any http.Server) on loopback.
//
// Every emulator also takes injected trouble: a delay before each answer
// (SetDelay), error statuses (FailNext), and a "down" mode that drops each
// connection without an answer (SetDown). Requests counts what reached it.
//
// What each one enforces, and how it answers, is listed on its type. The
// statuses follow the providers' documentation (FACTS.md §1); bodies are
// short stand-ins, not copies.
package emulator

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"net/http"
	"sync"
	"time"
)

// control holds the trouble injected into an emulator. Its methods are
// promoted to every emulator.
type control struct {
	mu       sync.Mutex
	delay    time.Duration
	down     bool
	failLeft int
	failCode int
	requests int
}

// SetDelay makes every later answer wait d first (0: none). A request
// whose client goes away while it waits gets no answer.
func (c *control) SetDelay(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.delay = d
}

// SetDown makes every later request end with its connection closed and no
// answer, as from a service that crashed (false: answer again).
func (c *control) SetDown(down bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.down = down
}

// FailNext makes the next n requests answer status with no other effect.
func (c *control) FailNext(n, status int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.failLeft, c.failCode = n, status
}

// Requests returns how many requests reached the emulator.
func (c *control) Requests() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.requests
}

// gate counts r and applies the injected trouble; it reports whether the
// emulator should go on and answer.
func (c *control) gate(w http.ResponseWriter, r *http.Request) bool {
	c.mu.Lock()
	c.requests++
	delay, down := c.delay, c.down
	fail := 0
	if c.failLeft > 0 {
		c.failLeft--
		fail = c.failCode
	}
	c.mu.Unlock()

	if down {
		if hj, ok := w.(http.Hijacker); ok {
			if conn, _, err := hj.Hijack(); err == nil {
				conn.Close()
				return false
			}
		}
		panic(http.ErrAbortHandler)
	}

	if delay > 0 {
		t := time.NewTimer(delay)
		defer t.Stop()
		select {
		case <-r.Context().Done():
			return false
		case <-t.C:
		}
	}

	if fail != 0 {
		http.Error(w, http.StatusText(fail), fail)
		return false
	}
	return true
}

// etagOf returns an ETag for body: 16 hex digits of its SHA-256, the form
// GCE's look like.
func etagOf(body []byte) string {
	sum := sha256.Sum256(body)
	return hex.EncodeToString(sum[:8])
}

// randomToken returns an opaque token of 32 random bytes.
func randomToken() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}
