# lnlens — the two set-up commands are `make demo` and `make test`.
SWIFT ?= swift
BIN := .build/release/lnlens
DB ?= results/lnlens.sqlite

.PHONY: setup build test demo bench fuzz install clean models

PREFIX ?= /usr/local

# MPI (data-parallel train/remove-ln over mpirun or srun; README, Scale-out): `setup` installs
# Open MPI and the build uses it when mpicc (Open MPI's, whose --showme gives the flags) is found,
# evaluated as each recipe runs (after `setup`). `MPI=0 make …` builds without it.
MPI ?=
MPI_FLAGS = $(if $(filter 0,$(MPI)),,$(if $(shell command -v mpicc 2>/dev/null),-Xcc -DLNLENS_MPI \
  $(addprefix -Xcc ,$(filter -I%,$(shell mpicc --showme:compile))) \
  $(addprefix -Xlinker ,$(filter -L%,$(shell mpicc --showme:link))) -Xlinker -lmpi))

# System libraries: OpenBLAS (cblas), SQLite headers and Open MPI, installed with apt when missing.
setup:
	@missing=""; \
	for pkg in libopenblas-dev libsqlite3-dev $(if $(filter 0,$(MPI)),,libopenmpi-dev openmpi-bin); do \
	  dpkg -s $$pkg >/dev/null 2>&1 || missing="$$missing $$pkg"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

build: setup
	$(SWIFT) build -c release --product lnlens $(MPI_FLAGS)

test: setup
	$(SWIFT) build --build-tests $(MPI_FLAGS)
	$(SWIFT) test --skip-build

# The main jobs on the embedded trained pair (scripts/demo.sh): DLA vs exact direct effect and
# activation vs attribution patching for gpt2-tiny and its LN-free twin over the IOI prompts, the
# held-out loss table, each pair diffed from $(DB), and all of it drawn into results/demo-report.html.
demo: build
	DB=$(DB) scripts/demo.sh $(BIN)

# Rebuilds the three embedded models with lnlens itself (train, remove-ln, remove-ln --keep-ln),
# seeded, then prints the held-out loss table and DLA errors (models/README.md quotes them).
models: build
	scripts/models/make_models.sh $(BIN)

bench: setup
	$(SWIFT) build -c release --product lnlens-bench $(MPI_FLAGS)
	.build/release/lnlens-bench

# The binary and what it ships (models, prompt sets), found relative to the binary's real path:
# PREFIX/bin/lnlens and PREFIX/share/lnlens/{models,prompts,corpus}. LNLENS_HOME still overrides.
install: build
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/lnlens
	install -m 755 $(BIN) $(DESTDIR)$(PREFIX)/bin/lnlens
	rm -rf $(DESTDIR)$(PREFIX)/share/lnlens/models $(DESTDIR)$(PREFIX)/share/lnlens/prompts $(DESTDIR)$(PREFIX)/share/lnlens/corpus
	cp -R models prompts corpus $(DESTDIR)$(PREFIX)/share/lnlens/
	@echo "installed $(DESTDIR)$(PREFIX)/bin/lnlens (models, prompts and corpus in $(DESTDIR)$(PREFIX)/share/lnlens)"

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
