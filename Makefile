# The README's commands. `make test` and `make demo` install what is missing
# (Debian packages, after apt-get update), configure, build and run.
PYTHON  ?= /usr/bin/python3
BUILD   ?= build
JOBS    ?= 2
CMAKE_FLAGS ?=
SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
DEB_PACKAGES := cmake g++ make libtorch-dev python3-torch libgtest-dev python3-pytest \
                dataset-fashion-mnist python3-sklearn python3-matplotlib python3-tqdm \
                clang libclang-rt-14-dev
FUZZ_SECONDS ?= 60
FUZZ_SMOKE_SECONDS ?= 15
RUN_PY  := PYTHONPATH=$(CURDIR)/torch_ops EVOGRAD_LIBRARY=$(CURDIR)/$(BUILD)/libevograd_ops.so $(PYTHON)

.PHONY: deps configure build test demo fuzz gpu-rehearsal clean

deps:
	@missing=""; for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y --no-install-recommends $$missing; \
	fi

configure: deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release -DEVOGRAD_PYTHON=$(PYTHON) $(CMAKE_FLAGS)

build: configure
	cmake --build $(BUILD) -j$(JOBS)

test: build
	cd $(BUILD) && ctest --output-on-failure --timeout 1800
	FUZZ_SEED=1 scripts/fuzz.sh $(FUZZ_SMOKE_SECONDS) $(BUILD)-fuzz

# libFuzzer on every C entry point (ASan + UBSan), FUZZ_SECONDS per target.
fuzz: deps
	scripts/fuzz.sh $(FUZZ_SECONDS) $(BUILD)-fuzz

demo: build
	$(RUN_PY) examples/demo.py

# scripts/gpu_check.sh without a GPU, against a pip-installed CUDA torch 2.x
# (downloads ~4.6 GB once): the CUDA operators build and link, suites pass.
gpu-rehearsal: deps
	scripts/torch2_rehearsal.sh

clean:
	rm -rf $(BUILD) $(BUILD)-fuzz build-torch2
