// Command imagebuild makes mirrord's container image without a container
// engine, and checks one. It is a build tool (scripts/build-image.sh runs it);
// the mirrord binary does not import it, so go-containerregistry stays out
// of mirrord's dependencies.
//
//	imagebuild build -out DIR -version V -revision R -source URL -epoch S \
//		-bin linux/amd64=PATH -bin linux/arm64=PATH
//	imagebuild verify DIR
//
// build writes an OCI image layout to DIR/oci and the same layout as one
// tar, an oci-archive, to DIR/mirrord.oci.tar. Each platform's image is one
// layer on an empty base holding one file, /mirrord (root, 0755), with
// /mirrord as the entrypoint and the OCI labels naming source, version and
// revision. The platform images form an image index, which index.json
// names by the version. Every timestamp is the epoch given (the last
// commit's time, as SOURCE_DATE_EPOCH), so the same binaries give the same
// bytes, digests included.
//
// verify reads DIR/oci and prints, per platform, the image's digest, size,
// entrypoint, labels and the files of its layers; it fails unless each
// image holds exactly one file, /mirrord, a static executable for the
// image's architecture.
package main

import (
	"archive/tar"
	"bytes"
	"debug/elf"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// binPath is the path of the binary in the image, and its entrypoint.
const binPath = "/mirrord"

// machines maps an OCI architecture to the ELF machine its binary must be.
var machines = map[string]elf.Machine{
	"amd64": elf.EM_X86_64,
	"arm64": elf.EM_AARCH64,
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: imagebuild build|verify ...")
		os.Exit(2)
	}

	var err error
	switch os.Args[1] {
	case "build":
		err = buildCmd(os.Args[2:])
	case "verify":
		if len(os.Args) != 3 {
			fmt.Fprintln(os.Stderr, "usage: imagebuild verify DIR")
			os.Exit(2)
		}
		err = verify(filepath.Join(os.Args[2], "oci"), os.Stdout)
	default:
		err = fmt.Errorf("unknown command %q; want build or verify", os.Args[1])
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "imagebuild: %v\n", err)
		os.Exit(1)
	}
}

// binFlag collects -bin OS/ARCH=PATH flags.
type binFlag map[string]string

func (b binFlag) String() string { return fmt.Sprint(map[string]string(b)) }

func (b binFlag) Set(v string) error {
	plat, path, ok := strings.Cut(v, "=")
	if !ok || !strings.HasPrefix(plat, "linux/") || path == "" {
		return fmt.Errorf("%q: want linux/ARCH=PATH", v)
	}
	if _, known := machines[strings.TrimPrefix(plat, "linux/")]; !known {
		return fmt.Errorf("%q: architecture not one of amd64, arm64", v)
	}
	b[plat] = path
	return nil
}

// meta is what the labels and annotations say.
type meta struct {
	version, revision, source string
	created                   time.Time
}

func buildCmd(args []string) error {
	fs := flag.NewFlagSet("imagebuild build", flag.ContinueOnError)
	out := fs.String("out", "", "output directory")
	bins := binFlag{}
	fs.Var(bins, "bin", "linux/ARCH=PATH of a static mirrord binary (repeat per platform)")
	var m meta
	fs.StringVar(&m.version, "version", "", "version label and index.json ref name")
	fs.StringVar(&m.revision, "revision", "", "commit the binaries were built from")
	fs.StringVar(&m.source, "source", "", "URL of the source repository")
	epoch := fs.Int64("epoch", -1, "every timestamp, in seconds since 1970 (SOURCE_DATE_EPOCH)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *out == "" || len(bins) == 0 || m.version == "" || *epoch < 0 {
		return errors.New("build needs -out, -version, -epoch and at least one -bin")
	}
	m.created = time.Unix(*epoch, 0).UTC()

	idx, err := index(bins, m)
	if err != nil {
		return err
	}

	dir := filepath.Join(*out, "oci")
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("clear %s: %w", dir, err)
	}
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return fmt.Errorf("write layout %s: %w", dir, err)
	}
	err = p.AppendIndex(idx, layout.WithAnnotations(map[string]string{
		"org.opencontainers.image.ref.name": m.version,
	}))
	if err != nil {
		return fmt.Errorf("write image index to %s: %w", dir, err)
	}

	archive := filepath.Join(*out, "mirrord.oci.tar")
	if err := tarDir(dir, archive, m.created); err != nil {
		return fmt.Errorf("write oci-archive %s: %w", archive, err)
	}
	d, err := idx.Digest()
	if err != nil {
		return fmt.Errorf("digest of image index: %w", err)
	}
	fmt.Printf("%s\n%s\nindex %s\n", dir, archive, d)
	return nil
}

// index builds one image per platform and the index over them, in a fixed
// platform order.
func index(bins binFlag, m meta) (v1.ImageIndex, error) {
	plats := make([]string, 0, len(bins))
	for p := range bins {
		plats = append(plats, p)
	}
	sort.Strings(plats)

	labels := map[string]string{
		"org.opencontainers.image.title": "mirrord",
		"org.opencontainers.image.description": "registry mirrors for every container " +
			"runtime on a node",
		"org.opencontainers.image.version":  m.version,
		"org.opencontainers.image.revision": m.revision,
		"org.opencontainers.image.source":   m.source,
		"org.opencontainers.image.created":  m.created.Format(time.RFC3339),
	}

	var idx v1.ImageIndex = empty.Index
	idx = mutate.IndexMediaType(idx, types.OCIImageIndex)
	for _, plat := range plats {
		arch := strings.TrimPrefix(plat, "linux/")
		img, err := image(bins[plat], arch, labels, m.created)
		if err != nil {
			return nil, fmt.Errorf("image for %s: %w", plat, err)
		}
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{
			Add: img,
			Descriptor: v1.Descriptor{
				Platform: &v1.Platform{OS: "linux", Architecture: arch},
			},
		})
	}
	return mutate.Annotations(idx, labels).(v1.ImageIndex), nil
}

// image is one platform's image: the binary in one layer on an empty base.
func image(bin, arch string, labels map[string]string, created time.Time) (v1.Image, error) {
	data, err := os.ReadFile(bin)
	if err != nil {
		return nil, fmt.Errorf("read binary: %w", err)
	}
	if err := checkBinary(data, arch); err != nil {
		return nil, fmt.Errorf("binary %s: %w", bin, err)
	}

	layerTar, err := layerOf(data, created)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, fmt.Errorf("make layer: %w", err)
	}

	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.AppendLayers(img, layer)
	if err != nil {
		return nil, fmt.Errorf("add layer: %w", err)
	}

	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", arch
	cf.Created = v1.Time{Time: created}
	cf.History = []v1.History{{Created: v1.Time{Time: created},
		CreatedBy: "hack/imagebuild: " + binPath, Comment: "the static mirrord binary"}}
	cf.Config = v1.Config{
		Entrypoint: []string{binPath},
		Cmd:        []string{"version"},
		Labels:     labels,
		// No shell, no passwd: the user is given by number.
		User:       "0:0",
		WorkingDir: "/",
	}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, fmt.Errorf("set config: %w", err)
	}
	return mutate.Annotations(img, labels).(v1.Image), nil
}

// layerOf is the layer's tar: one regular file, no directories (the root
// exists in every container), owned by root, stamped with created.
func layerOf(bin []byte, created time.Time) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	hdr := &tar.Header{
		Typeflag: tar.TypeReg,
		Name:     strings.TrimPrefix(binPath, "/"),
		Mode:     0o755,
		Size:     int64(len(bin)),
		ModTime:  created,
		Format:   tar.FormatPAX,
	}
	if err := tw.WriteHeader(hdr); err != nil {
		return nil, fmt.Errorf("layer tar: %w", err)
	}
	if _, err := tw.Write(bin); err != nil {
		return nil, fmt.Errorf("layer tar: %w", err)
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("layer tar: %w", err)
	}
	return buf.Bytes(), nil
}

// checkBinary fails unless data is an ELF executable for arch with no
// program interpreter: a static binary, which an empty image can run.
func checkBinary(data []byte, arch string) error {
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		return fmt.Errorf("not an ELF file: %w", err)
	}
	defer f.Close()

	if want := machines[arch]; f.Machine != want {
		return fmt.Errorf("ELF machine %s, want %s for %s", f.Machine, want, arch)
	}
	if f.Type != elf.ET_EXEC && f.Type != elf.ET_DYN {
		return fmt.Errorf("ELF type %s, want an executable", f.Type)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return errors.New("dynamically linked (has a program interpreter); " +
				"build with CGO_ENABLED=0")
		}
	}
	return nil
}

// tarDir writes the files under dir into a tar at out, in lexical order,
// owned by root and stamped with mtime, so that the same layout gives the
// same archive.
func tarDir(dir, out string, mtime time.Time) error {
	var paths []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		paths = append(paths, p)
		return nil
	})
	if err != nil {
		return err
	}
	slices.Sort(paths)

	f, err := os.Create(out)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(f)
	for _, p := range paths {
		if err := addFile(tw, dir, p, mtime); err != nil {
			f.Close()
			return err
		}
	}
	if err := tw.Close(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func addFile(tw *tar.Writer, dir, p string, mtime time.Time) error {
	fi, err := os.Lstat(p)
	if err != nil {
		return err
	}
	rel, err := filepath.Rel(dir, p)
	if err != nil {
		return err
	}

	hdr := &tar.Header{Name: filepath.ToSlash(rel), ModTime: mtime, Format: tar.FormatPAX}
	switch {
	case fi.IsDir():
		hdr.Typeflag, hdr.Name, hdr.Mode = tar.TypeDir, hdr.Name+"/", 0o755
		return tw.WriteHeader(hdr)
	case fi.Mode().IsRegular():
		hdr.Typeflag, hdr.Mode, hdr.Size = tar.TypeReg, 0o644, fi.Size()
	default:
		return fmt.Errorf("%s: not a file or directory", p)
	}
	if err := tw.WriteHeader(hdr); err != nil {
		return err
	}
	src, err := os.Open(p)
	if err != nil {
		return err
	}
	defer src.Close()
	_, err = io.Copy(tw, src)
	return err
}

// verify lists the image index in the layout at dir and checks each image
// holds only the static binary, as the package doc says.
func verify(dir string, w io.Writer) error {
	root, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		return fmt.Errorf("read layout %s: %w", dir, err)
	}
	rm, err := root.IndexManifest()
	if err != nil {
		return fmt.Errorf("read %s/index.json: %w", dir, err)
	}
	if len(rm.Manifests) != 1 || !rm.Manifests[0].MediaType.IsIndex() {
		return fmt.Errorf("%s/index.json: want one image index, have %d entries", dir,
			len(rm.Manifests))
	}
	top := rm.Manifests[0]
	fmt.Fprintf(w, "index %s (%s) ref %s\n", top.Digest, top.MediaType,
		top.Annotations["org.opencontainers.image.ref.name"])

	idx, err := root.ImageIndex(top.Digest)
	if err != nil {
		return fmt.Errorf("read image index %s: %w", top.Digest, err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return fmt.Errorf("read image index %s: %w", top.Digest, err)
	}

	var errs []error
	var archs []string
	for _, d := range im.Manifests {
		if d.Platform == nil {
			errs = append(errs, fmt.Errorf("manifest %s: no platform", d.Digest))
			continue
		}
		archs = append(archs, d.Platform.Architecture)
		img, err := idx.Image(d.Digest)
		if err != nil {
			errs = append(errs, fmt.Errorf("image %s: %w", d.Digest, err))
			continue
		}
		if err := verifyImage(img, d, w); err != nil {
			errs = append(errs, fmt.Errorf("image %s (%s): %w", d.Digest, d.Platform, err))
		}
	}
	slices.Sort(archs)
	if !slices.Equal(archs, []string{"amd64", "arm64"}) {
		errs = append(errs, fmt.Errorf("platforms %v, want amd64 and arm64", archs))
	}
	return errors.Join(errs...)
}

func verifyImage(img v1.Image, d v1.Descriptor, w io.Writer) error {
	cf, err := img.ConfigFile()
	if err != nil {
		return fmt.Errorf("read config: %w", err)
	}
	layers, err := img.Layers()
	if err != nil {
		return fmt.Errorf("read layers: %w", err)
	}
	var compressed int64
	for _, l := range layers {
		n, err := l.Size()
		if err != nil {
			return fmt.Errorf("layer size: %w", err)
		}
		compressed += n
	}
	fmt.Fprintf(w, "\n%s/%s %s\n  layers %d, %d bytes compressed\n  entrypoint %q cmd %q "+
		"user %q\n", cf.OS, cf.Architecture, d.Digest, len(layers), compressed,
		cf.Config.Entrypoint, cf.Config.Cmd, cf.Config.User)
	keys := make([]string, 0, len(cf.Config.Labels))
	for k := range cf.Config.Labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(w, "  label %s=%s\n", k, cf.Config.Labels[k])
	}
	if cf.Architecture != d.Platform.Architecture || cf.OS != "linux" {
		return fmt.Errorf("config says %s/%s, index says %s", cf.OS, cf.Architecture,
			d.Platform)
	}
	if !slices.Equal(cf.Config.Entrypoint, []string{binPath}) {
		return fmt.Errorf("entrypoint %q, want [%q]", cf.Config.Entrypoint, binPath)
	}

	var files []string
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("read filesystem: %w", err)
		}
		name := "/" + strings.TrimPrefix(hdr.Name, "./")
		fmt.Fprintf(w, "  file %s %s %d bytes uid %d\n", fs.FileMode(hdr.Mode).String(), name,
			hdr.Size, hdr.Uid)
		files = append(files, name)
		if name != binPath {
			continue
		}
		if hdr.Typeflag != tar.TypeReg || hdr.Mode&0o111 == 0 {
			return fmt.Errorf("%s is not an executable regular file", binPath)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			return fmt.Errorf("read %s: %w", binPath, err)
		}
		if err := checkBinary(data, cf.Architecture); err != nil {
			return fmt.Errorf("%s: %w", binPath, err)
		}
	}
	if !slices.Equal(files, []string{binPath}) {
		return fmt.Errorf("files %q, want only %s (no shell, nothing else)", files, binPath)
	}
	return nil
}
