# Shortcuts; the scripts in scripts/ are the real thing.
.PHONY: build deb demo check test bench

build:
	bash scripts/build.sh

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
