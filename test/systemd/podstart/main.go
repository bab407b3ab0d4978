// Command podstart starts a process the way a container runtime starts a
// pod's container, for test/systemd's DaemonSet test: it makes the mounts a
// pod spec asks for in the pod's root filesystem, makes that root
// read-only, enters it, gives up every capability, sets no_new_privs and
// executes the container's command. It is a test helper, not a runtime:
// there is no seccomp filter, no cgroup and no user namespace.
//
// Run it as root in a new mount namespace (its mounts must not leak) and,
// like a pod, in a new PID namespace, with a JSON spec:
//
//	unshare --mount --propagation slave --pid --fork podstart SPEC.json
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// Spec is the container to start, as the test derives it from the
// DaemonSet manifest.
type Spec struct {
	// Root is the container's root filesystem: the image's layers unpacked.
	Root string `json:"root"`

	// Mounts are made in order under Root.
	Mounts []Mount `json:"mounts"`

	// Argv is the command, the image's entrypoint with the container's
	// args; Env its whole environment.
	Argv []string `json:"argv"`
	Env  []string `json:"env"`
}

// Mount is a hostPath or ConfigMap volume (a bind mount of Source) or an
// emptyDir (a tmpfs) at Target, a path in the container.
type Mount struct {
	Source   string `json:"source,omitempty"`
	Target   string `json:"target"`
	ReadOnly bool   `json:"readOnly,omitempty"`
	Tmpfs    bool   `json:"tmpfs,omitempty"`
}

func main() {
	// Capabilities and no_new_privs are per thread: set them and exec on
	// one thread.
	runtime.LockOSThread()

	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: podstart SPEC.json")
		os.Exit(2)
	}
	if err := start(os.Args[1]); err != nil {
		fmt.Fprintf(os.Stderr, "podstart: %v\n", err)
		os.Exit(1)
	}
}

func start(specFile string) error {
	data, err := os.ReadFile(specFile)
	if err != nil {
		return err
	}
	var s Spec
	if err := json.Unmarshal(data, &s); err != nil {
		return fmt.Errorf("spec %s: %w", specFile, err)
	}
	if len(s.Argv) == 0 {
		return fmt.Errorf("spec %s: no argv", specFile)
	}

	lastCap, err := readLastCap()
	if err != nil {
		return err
	}
	if err := mountAll(s); err != nil {
		return err
	}

	if err := unix.Chdir(s.Root); err != nil {
		return fmt.Errorf("enter root: %w", err)
	}
	if err := unix.Chroot("."); err != nil {
		return fmt.Errorf("enter root: %w", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return fmt.Errorf("enter root: %w", err)
	}

	if err := dropCapabilities(lastCap); err != nil {
		return err
	}
	return syscall.Exec(s.Argv[0], s.Argv, s.Env)
}

// mountAll makes the root a mount of its own, the volumes in it, /proc of
// the new PID namespace and /dev/null, then makes the root read-only.
func mountAll(s Spec) error {
	if err := unix.Mount(s.Root, s.Root, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind root %s: %w", s.Root, err)
	}

	for _, m := range s.Mounts {
		target := filepath.Join(s.Root, m.Target)
		if err := os.MkdirAll(target, 0o755); err != nil {
			return fmt.Errorf("mount point %s: %w", m.Target, err)
		}
		if m.Tmpfs {
			err := unix.Mount("tmpfs", target, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV,
				"size=1m,mode=0755")
			if err != nil {
				return fmt.Errorf("tmpfs at %s: %w", m.Target, err)
			}
			continue
		}
		if err := unix.Mount(m.Source, target, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("bind %s at %s: %w", m.Source, m.Target, err)
		}
		if m.ReadOnly {
			// Only the top mount, as Kubernetes does without recursiveReadOnly.
			err := unix.Mount("", target, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, "")
			if err != nil {
				return fmt.Errorf("read-only %s: %w", m.Target, err)
			}
		}
	}

	proc := filepath.Join(s.Root, "proc")
	if err := os.MkdirAll(proc, 0o555); err != nil {
		return fmt.Errorf("mount point /proc: %w", err)
	}
	err := unix.Mount("proc", proc, "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "")
	if err != nil {
		return fmt.Errorf("mount /proc: %w", err)
	}
	null := filepath.Join(s.Root, "dev/null")
	if err := os.MkdirAll(filepath.Dir(null), 0o755); err != nil {
		return fmt.Errorf("mount point /dev/null: %w", err)
	}
	if err := os.WriteFile(null, nil, 0o666); err != nil {
		return fmt.Errorf("mount point /dev/null: %w", err)
	}
	if err := unix.Mount("/dev/null", null, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind /dev/null: %w", err)
	}

	err = unix.Mount("", s.Root, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, "")
	if err != nil {
		return fmt.Errorf("read-only root: %w", err)
	}
	return nil
}

func readLastCap() (int, error) {
	b, err := os.ReadFile("/proc/sys/kernel/cap_last_cap")
	if err != nil {
		return 0, err
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0, fmt.Errorf("cap_last_cap %q: %w", b, err)
	}
	return n, nil
}

// dropCapabilities empties the bounding, ambient, inheritable, permitted
// and effective sets and sets no_new_privs, as "capabilities: drop: [ALL]"
// with "allowPrivilegeEscalation: false" does for a container running as
// UID 0: after exec, the process has no capability at all.
func dropCapabilities(lastCap int) error {
	if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); err != nil {
		return fmt.Errorf("clear ambient capabilities: %w", err)
	}
	for c := 0; c <= lastCap; c++ {
		if err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(c), 0, 0, 0); err != nil {
			return fmt.Errorf("drop capability %d from the bounding set: %w", c, err)
		}
	}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("set no_new_privs: %w", err)
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capset(&hdr, &data[0]); err != nil {
		return fmt.Errorf("clear capabilities: %w", err)
	}
	return nil
}
