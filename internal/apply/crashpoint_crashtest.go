//go:build crashtest

package apply

import (
	"fmt"
	"os"
	"strconv"
	"sync"
	"syscall"
)

// crashAt is the 1-based number of the crash point at which the process
// kills itself, from MIRRORD_CRASH_AT; 0 means never.
var (
	crashOnce sync.Once
	crashAt   int
	crashSeen int
	crashMu   sync.Mutex
)

// crashPoint counts the crash points passed and, at the one numbered
// MIRRORD_CRASH_AT, names it on stderr and sends the process SIGKILL, as a
// power cut or the OOM killer would end it: no deferred function runs.
func crashPoint(moment, path string) {
	crashOnce.Do(func() {
		crashAt, _ = strconv.Atoi(os.Getenv("MIRRORD_CRASH_AT"))
	})

	crashMu.Lock()
	defer crashMu.Unlock()

	crashSeen++
	if crashAt == 0 || crashSeen != crashAt {
		return
	}
	fmt.Fprintf(os.Stderr, "crashpoint %d: %s: %s\n", crashSeen, moment, path)
	syscall.Kill(os.Getpid(), syscall.SIGKILL)
	select {} // SIGKILL cannot be caught; wait for it to land
}
