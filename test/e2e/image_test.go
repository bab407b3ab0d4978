package e2e

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"time"
)

// OCI media types of the image layout writeImageLayout makes.
const (
	mediaManifest = "application/vnd.oci.image.manifest.v1+json"
	mediaConfig   = "application/vnd.oci.image.config.v1+json"
	mediaLayer    = "application/vnd.oci.image.layer.v1.tar+gzip"
)

// imageEpoch is the time stamped into the image, so that the same binary
// always gives the same digests.
var imageEpoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// descriptor is an OCI content descriptor.
type descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

// writeImageLayout writes an OCI image layout into dir holding one image,
// tagged tag, whose only layer is the static binary bin as /hello and whose
// command is /hello. The image is for this machine's architecture.
func writeImageLayout(dir, tag, bin string) error {
	prog, err := os.ReadFile(bin)
	if err != nil {
		return err
	}

	layerTar, err := tarFile("hello", prog)
	if err != nil {
		return fmt.Errorf("tar layer: %w", err)
	}
	layer, err := gzipBytes(layerTar)
	if err != nil {
		return fmt.Errorf("gzip layer: %w", err)
	}

	config, err := json.Marshal(map[string]any{
		"created":      imageEpoch,
		"architecture": runtime.GOARCH,
		"os":           "linux",
		"config": map[string]any{
			"Cmd": []string{"/hello"},
			"Env": []string{"PATH=/"},
		},
		"rootfs": map[string]any{
			"type":     "layers",
			"diff_ids": []string{digest(layerTar)},
		},
	})
	if err != nil {
		return err
	}

	manifest, err := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     mediaManifest,
		"config":        describe(mediaConfig, config),
		"layers":        []descriptor{describe(mediaLayer, layer)},
	})
	if err != nil {
		return err
	}

	m := describe(mediaManifest, manifest)
	m.Annotations = map[string]string{"org.opencontainers.image.ref.name": tag}
	index, err := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"manifests":     []descriptor{m},
	})
	if err != nil {
		return err
	}

	for _, blob := range [][]byte{layer, config, manifest} {
		p := filepath.Join(dir, "blobs", "sha256", digest(blob)[len("sha256:"):])
		if err := writeFile(p, blob); err != nil {
			return err
		}
	}
	if err := writeFile(filepath.Join(dir, "index.json"), index); err != nil {
		return err
	}
	return writeFile(filepath.Join(dir, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`))
}

// tarFile returns a tar stream holding one executable file.
func tarFile(name string, data []byte) ([]byte, error) {
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	hdr := &tar.Header{
		Typeflag: tar.TypeReg,
		Name:     name,
		Mode:     0o755,
		Size:     int64(len(data)),
		ModTime:  imageEpoch,
		Format:   tar.FormatPAX,
	}
	if err := tw.WriteHeader(hdr); err != nil {
		return nil, err
	}
	if _, err := tw.Write(data); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// gzipBytes compresses data with a header that holds no name or time.
func gzipBytes(data []byte) ([]byte, error) {
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	if _, err := zw.Write(data); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// digest is data's OCI digest, "sha256:<hex>".
func digest(data []byte) string {
	sum := sha256.Sum256(data)
	return "sha256:" + hex.EncodeToString(sum[:])
}

func describe(mediaType string, data []byte) descriptor {
	return descriptor{MediaType: mediaType, Digest: digest(data), Size: int64(len(data))}
}

// writeFile writes data to path, making its directory.
func writeFile(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, data, 0o644)
}
