# lnlens — the two set-up commands are `make demo` and `make test`.
SWIFT ?= swift
BIN := .build/release/lnlens
DB ?= results/lnlens.sqlite

.PHONY: setup build test demo bench fuzz clean

# System libraries: OpenBLAS (cblas) and SQLite headers, installed with apt when missing.
setup:
	@missing=""; \
	for pkg in libopenblas-dev libsqlite3-dev; do \
	  dpkg -s $$pkg >/dev/null 2>&1 || missing="$$missing $$pkg"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

build: setup
	$(SWIFT) build -c release --product lnlens

test: setup
	$(SWIFT) build --build-tests
	$(SWIFT) test --skip-build

# The main job on the embedded models: DLA vs exact direct effect for the LayerNorm model and its
# LN-free twin over the IOI prompts, stored in $(DB), then the two runs diffed from the database.
demo: build
	$(BIN) dla --model gpt2-tiny --model gpt2-tiny-lnfree --prompts prompts/ioi.jsonl --db $(DB)
	@ids=$$($(BIN) query --db $(DB) --csv --sql "SELECT id FROM runs WHERE command = 'dla' AND status = 'completed' ORDER BY id DESC LIMIT 2" | tail -n +2 | sort -n | tr '\n' ' '); \
	echo "== lnlens diff $$ids(read back from $(DB))"; \
	$(BIN) diff $$ids --db $(DB)

bench: setup
	$(SWIFT) build -c release --product lnlens-bench
	.build/release/lnlens-bench

# Fuzz targets for the file parsers (fuzz/README.md): libFuzzer + AddressSanitizer, built apart in
# .build-fuzz, each run for FUZZ_SECONDS. CI runs a short smoke: FUZZ_SECONDS=6 FUZZ_CONFIG=debug.
FUZZ_SECONDS ?= 300
FUZZ_CONFIG ?= release
FUZZ_TARGETS ?=
fuzz: setup
	$(SWIFT) build -c $(FUZZ_CONFIG) --product lnlens-fuzz --scratch-path .build-fuzz \
	  -Xswiftc -sanitize=fuzzer,address -Xswiftc -use-ld=lld
	FUZZ_SECONDS=$(FUZZ_SECONDS) FUZZ_BIN=.build-fuzz/$(FUZZ_CONFIG)/lnlens-fuzz fuzz/run $(FUZZ_TARGETS)

clean:
	rm -rf .build .build-fuzz
