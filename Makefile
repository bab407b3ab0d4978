# Shortcuts; the scripts in scripts/ are the real thing.
.PHONY: build demo check test bench

build:
	bash scripts/build.sh

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
