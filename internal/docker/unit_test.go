package docker

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// Debian 12's docker.io unit, cut to what matters here.
const debianUnit = `[Unit]
Description=Docker Application Container Engine
After=network-online.target docker.socket firewalld.service containerd.service
Requires=docker.socket

[Service]
Type=notify
EnvironmentFile=-/etc/default/docker
ExecStart=/usr/sbin/dockerd -H fd:// $DOCKER_OPTS
ExecReload=/bin/kill -s HUP $MAINPID

[Install]
WantedBy=multi-user.target
`

// Docker CE's unit, cut likewise.
const ceUnit = `[Service]
Type=notify
# the default is not to use systemd for cgroups
ExecStart=/usr/bin/dockerd -H fd:// --containerd=/run/containerd/containerd.sock
ExecReload=/bin/kill -s HUP $MAINPID
`

func TestCheckUnitFlags(t *testing.T) {
	const lib = "lib/systemd/system/docker.service"
	const etc = "etc/systemd/system/docker.service"
	const dropin = "etc/systemd/system/docker.service.d/"
	tests := []struct {
		name  string
		files map[string]string
		links map[string]string
		uses  []FlagUse // paths relative to the root
	}{
		{name: "no_unit"},
		{name: "ce_clean", files: map[string]string{lib: ceUnit}},
		{name: "debian_no_env_file", files: map[string]string{lib: debianUnit}},
		{
			name: "debian_env_commented",
			files: map[string]string{lib: debianUnit,
				"etc/default/docker": "#DOCKER_OPTS=\"--registry-mirror=https://m\"\n"},
		},
		{
			name: "debian_env_file",
			files: map[string]string{lib: debianUnit, "etc/default/docker": "# Docker options\n" +
				"DOCKER_OPTS=\"--dns 8.8.8.8 --registry-mirror=https://m.example.net\"\n"},
			uses: []FlagUse{{Flag: FlagMirror, Path: lib, Var: "DOCKER_OPTS",
				VarFrom: "etc/default/docker"}},
		},
		{
			name: "exec_start_flags",
			files: map[string]string{lib: strings.Replace(ceUnit, "-H fd://",
				"-H fd:// --insecure-registry 10.0.0.7:5000 \\\n  --registry-mirror=https://m", 1)},
			uses: []FlagUse{{Flag: FlagMirror, Path: lib}, {Flag: FlagInsecure, Path: lib}},
		},
		{
			name: "dropin_adds_flag",
			files: map[string]string{lib: ceUnit, dropin + "10-mirror.conf": "[Service]\n" +
				"ExecStart=\nExecStart=/usr/bin/dockerd --registry-mirror https://m\n"},
			uses: []FlagUse{{Flag: FlagMirror, Path: dropin + "10-mirror.conf"}},
		},
		{
			name: "dropin_resets_flag",
			files: map[string]string{
				lib: strings.Replace(ceUnit, "-H fd://", "--registry-mirror=https://m", 1),
				dropin + "override.conf": "[Service]\nExecStart=\n" +
					"ExecStart=/usr/bin/dockerd -H fd://\n",
			},
		},
		{
			name: "later_dropin_wins",
			files: map[string]string{
				lib: "[Service]\nExecStart=/usr/bin/dockerd\n",
				dropin + "10.conf": "[Service]\nExecStart=\n" +
					"ExecStart=/usr/bin/dockerd --insecure-registry=a:1\n",
				dropin + "20.conf": "[Service]\nExecStart=\nExecStart=/usr/bin/dockerd -H fd://\n",
			},
		},
		{
			name: "flag_outside_service_section",
			files: map[string]string{lib: ceUnit + "[Install]\n" +
				"ExecStart=/usr/bin/dockerd --registry-mirror=https://m\n"},
		},
		{
			name: "etc_unit_overrides_lib",
			files: map[string]string{
				lib: strings.Replace(ceUnit, "-H fd://", "--registry-mirror=https://m", 1),
				etc: ceUnit,
			},
		},
		{
			name: "environment_line",
			files: map[string]string{lib: debianUnit, dropin + "env.conf": "[Service]\n" +
				"Environment=\"DOCKER_OPTS=--insecure-registry=10.0.0.7:5000\" OTHER=1\n"},
			uses: []FlagUse{{Flag: FlagInsecure, Path: lib, Var: "DOCKER_OPTS",
				VarFrom: dropin + "env.conf"}},
		},
		{
			name: "masked",
			files: map[string]string{
				lib: strings.Replace(ceUnit, "-H fd://", "--registry-mirror=m", 1),
			},
			links: map[string]string{etc: "/dev/null"},
		},
		{
			name: "absolute_symlink_stays_in_root",
			files: map[string]string{
				"opt/docker.service": "[Service]\nExecStart=dockerd --registry-mirror=m\n",
			},
			links: map[string]string{etc: "/opt/docker.service"},
			uses:  []FlagUse{{Flag: FlagMirror, Path: etc}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			for p, body := range tt.files {
				writeFile(t, filepath.Join(root, p), body)
			}
			for p, target := range tt.links {
				if err := os.MkdirAll(filepath.Dir(filepath.Join(root, p)), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.Symlink(target, filepath.Join(root, p)); err != nil {
					t.Fatal(err)
				}
			}

			err := CheckUnitFlags(root)
			if tt.uses == nil {
				if err != nil {
					t.Fatalf("CheckUnitFlags = %v, want nil", err)
				}
				return
			}
			var fe *UnitFlagError
			if !errors.As(err, &fe) {
				t.Fatalf("CheckUnitFlags = %v, want a *UnitFlagError", err)
			}
			for i := range tt.uses {
				u := &tt.uses[i]
				u.Path = filepath.Join(root, u.Path)
				if u.VarFrom != "" {
					u.VarFrom = filepath.Join(root, u.VarFrom)
				}
			}
			if diff := cmp.Diff(tt.uses, fe.Uses); diff != "" {
				t.Errorf("uses (-want +got):\n%s", diff)
			}
		})
	}
}

func TestUnitFlagErrorText(t *testing.T) {
	err := &UnitFlagError{Uses: []FlagUse{
		{Flag: FlagMirror, Path: "/etc/systemd/system/docker.service.d/mirror.conf"},
		{Flag: FlagInsecure, Path: "/lib/systemd/system/docker.service", Var: "DOCKER_OPTS",
			VarFrom: "/etc/default/docker"},
	}}
	want := "docker.service sets --registry-mirror in ExecStart of " +
		"/etc/systemd/system/docker.service.d/mirror.conf, --insecure-registry in $DOCKER_OPTS, " +
		"set in /etc/default/docker and used by ExecStart of /lib/systemd/system/docker.service; " +
		"dockerd refuses to start when a setting is given both as a flag and in daemon.json: " +
		"move the values into /etc/docker/daemon.json or drop them, remove the flags and run " +
		"systemctl daemon-reload"
	if got := err.Error(); got != want {
		t.Errorf("Error():\n got %s\nwant %s", got, want)
	}
	if !err.Has(FlagInsecure) || !err.Has(FlagMirror) {
		t.Errorf("Has reports a flag missing")
	}
}

func writeFile(t *testing.T, path, body string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
}
