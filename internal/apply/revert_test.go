package apply

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/mirrord/mirrord/internal/config"
	"github.com/mirrord/mirrord/internal/logging"
)

// daemonJSONActor records, for each call, the docker verb it was given and
// the daemon.json dockerd would read at that moment.
type daemonJSONActor struct {
	root  string
	calls []string
}

func (a *daemonJSONActor) Act(_ context.Context, actions []Action) error {
	for _, act := range actions {
		if act.Runtime != config.Docker {
			continue
		}
		data, err := os.ReadFile(filepath.Join(a.root, "etc/docker/daemon.json"))
		if err != nil {
			data = []byte("(no file)")
		}
		a.calls = append(a.calls, string(act.Verb)+" "+string(data))
	}
	return nil
}

func TestRevertEmptiesDockerMirrorsFirst(t *testing.T) {
	const original = "{\n  \"log-level\": \"warn\"\n}\n"
	root := testNode(t, map[string]string{"etc/docker/daemon.json": original})
	cfg := testConfig(t, root, "docker.io=http://127.0.0.1:5000", config.Docker)
	if _, err := Apply(context.Background(), cfg, ReportOnly{}, logging.Discard()); err != nil {
		t.Fatal(err)
	}

	actor := &daemonJSONActor{root: root}
	p, err := RevertNode(context.Background(), root, actor, logging.Discard())
	if err != nil {
		t.Fatal(err)
	}

	// A reload while daemon.json has the keys, empty, then the original,
	// whose missing keys leave dockerd on those empty lists.
	want := []string{
		"reload {\n  \"log-level\": \"warn\",\n  \"registry-mirrors\": [],\n" +
			"  \"insecure-registries\": []\n}\n",
		"reload " + original,
	}
	if diff := cmp.Diff(want, actor.calls); diff != "" {
		t.Errorf("daemon.json at each docker action (-want +got):\n%s", diff)
	}
	if got, _ := os.ReadFile(filepath.Join(root, "etc/docker/daemon.json")); string(got) !=
		original {
		t.Errorf("daemon.json after revert:\n%s\nwant the original:\n%s", got, original)
	}
	var passes []bool
	for _, c := range p.Changes {
		if c.Path == "/etc/docker/daemon.json" {
			passes = append(passes, c.Restore)
		}
	}
	if diff := cmp.Diff([]bool{false, true}, passes); diff != "" {
		t.Errorf("daemon.json changes in the revert plan, want an edit then a restore "+
			"(-want +got):\n%s", diff)
	}
}

func TestRevertWithoutDockerIsOnePass(t *testing.T) {
	root := testNode(t, map[string]string{"etc/containerd/config.toml": "version = 2\n"})
	cfg := testConfig(t, root, "docker.io=https://m.example.net", config.Containerd)
	if _, err := Apply(context.Background(), cfg, ReportOnly{}, logging.Discard()); err != nil {
		t.Fatal(err)
	}

	actor := &failingActor{}
	if _, err := RevertNode(context.Background(), root, actor, logging.Discard()); err == nil {
		t.Fatal("revert succeeded with a failing actor")
	}
	if len(actor.calls) != 1 {
		t.Errorf("actor called %d times, want once: %v", len(actor.calls), actor.calls)
	}
}
