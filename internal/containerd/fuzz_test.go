package containerd

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// FuzzEditConfig checks, for any input, that EditConfig either fails or
// returns a file that decodes to the input document with only config_path
// and the legacy mirrors changed, and that editing that file again changes
// nothing. It is seeded with every golden input.
func FuzzEditConfig(f *testing.F) {
	for _, dir := range []string{"testdata/config", "testdata/config_errors"} {
		entries, err := os.ReadDir(dir)
		if err != nil {
			f.Fatal(err)
		}
		for _, e := range entries {
			data, err := os.ReadFile(filepath.Join(dir, e.Name(), "in.toml"))
			if err != nil {
				f.Fatal(err)
			}
			for _, major := range []uint8{0, 1, 2} {
				f.Add(data, major)
			}
		}
	}

	f.Fuzz(func(t *testing.T, src []byte, major uint8) {
		m := int(major % 3)
		ed, err := EditConfig(src, m)
		if err != nil {
			return
		}
		if ed.CRIDisabled && !bytes.Equal(ed.Data, src) {
			t.Fatalf("CRIDisabled, yet the data changed")
		}
		checkSameDocument(t, src, ed)
		checkIdempotent(t, ed, m)
	})
}
