# Shortcuts; the scripts in scripts/ are the real thing.
.PHONY: build image deb demo check test bench

build:
	bash scripts/build.sh

# The container image for amd64 and arm64, as an OCI layout and oci-archive in build/image.
image:
	bash scripts/build-image.sh

# dist/mirrord_<version>_<arch>.deb for amd64 and arm64 (ARCHES, VERSION).
deb:
	bash scripts/build-deb.sh

demo:
	bash scripts/demo.sh

check:
	gofmt -l $$(git ls-files '*.go') | (! grep .)
	go vet ./...
	go tool staticcheck ./...
	go test -race ./...

test:
	bash scripts/test.sh

bench:
	bash bench/run.sh
