# The README's commands. `make test` and `make demo` install what is missing
# (Debian packages after apt-get update; a project virtual environment with
# pip's PyTorch), configure, build and run. `make test` (what CI runs) times
# each step and prints the table at the end (scripts/legs.sh):
#
#   install       .venv: pip torch 2.13 (CPU), `pip install -e .` builds in build/main
#   test-main     ctest in build/main: every suite plus the PyTorch 2.x tests
#                 (opcheck, compile, export, func); then the README's install
#                 blocks, verbatim, in a fresh venv (build/readme)
#   test-compat   Debian's torch and /usr/bin/python3, built in build/debian: C, C++, Python
#                 (the minute-long example suites run on the main leg only)
#   test-fuzz     libFuzzer on every C entry point, FUZZ_SMOKE_SECONDS each
#
# Outside make test: test-cuda-build (pip torch 2.14.1 for CUDA, the CUDA
# operators compiled and linked, suites run; no GPU here: CUDA tests skip)
# and fuzz (longer fuzzing).
PYTHON   ?= python3
VENV     ?= .venv
VPY      := $(VENV)/bin/python
DEBIAN_PYTHON ?= /usr/bin/python3
BUILD    ?= build
JOBS     ?= 2
CMAKE_FLAGS ?=
SUDO     := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
DEB_PACKAGES := cmake g++ make libtorch-dev python3-torch libgtest-dev python3-pytest \
                python3-venv dataset-fashion-mnist python3-sklearn python3-matplotlib python3-tqdm \
                clang libclang-rt-14-dev libgloo-dev
FUZZ_SECONDS ?= 60
FUZZ_SMOKE_SECONDS ?= 15
CTEST    := ctest --output-on-failure --timeout 1800 -j$(JOBS)

.PHONY: deps venv install build test test-main test-compat test-fuzz test-cuda-build demo fuzz clean

deps:
	@missing=""; for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y --no-install-recommends $$missing; \
	fi

# The project's virtual environment, rebuilt when requirements-dev.txt changes.
$(VENV)/.installed: requirements-dev.txt | deps
	[ -x $(VPY) ] || $(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -q -r requirements-dev.txt
	touch $@

venv: $(VENV)/.installed

# The package as a user installs it (editable), built in $(BUILD)/main with
# the test suites, against the venv's torch.
SKBUILD_FLAGS = -Cbuild-dir=$(BUILD)/main -Cbuild.targets=all \
  -Ccmake.define.EVOGRAD_TESTS=ON -Ccmake.define.EVOGRAD_TEST_INSTALLED=ON \
  -Ccmake.define.EVOGRAD_PYTHON=$(CURDIR)/$(VPY)

install: venv
	$(VPY) -m pip install -q --no-build-isolation -e . $(SKBUILD_FLAGS)

build: install

# make test: the set-up, then each leg, timed (scripts/legs.sh prints the
# table at the end, in $(BUILD)/test-times.txt too). CI runs this.
TEST_LEGS := test-main test-compat test-fuzz
test:
	@scripts/legs.sh $(BUILD)/test-times.txt deps venv install $(TEST_LEGS)

test-main: install
	cd $(BUILD)/main && $(CTEST)
	$(VPY) tests/install/readme_commands.py $(BUILD)/readme

test-compat: deps
	cmake -S . -B $(BUILD)/debian -DCMAKE_BUILD_TYPE=Release -DEVOGRAD_PYTHON=$(DEBIAN_PYTHON) \
	  -DEVOGRAD_SANITIZE_OPS=OFF -DEVOGRAD_TEST_LONG_EXAMPLES=OFF $(CMAKE_FLAGS)
	cmake --build $(BUILD)/debian -j$(JOBS)
	cd $(BUILD)/debian && $(CTEST)

test-fuzz: deps
	FUZZ_SEED=1 scripts/fuzz.sh $(FUZZ_SMOKE_SECONDS) $(BUILD)/fuzz

# libFuzzer on every C entry point (ASan + UBSan), FUZZ_SECONDS per target.
fuzz: deps
	scripts/fuzz.sh $(FUZZ_SECONDS) $(BUILD)/fuzz

demo: install
	$(VPY) examples/demo.py

test-cuda-build: deps
	scripts/cuda_build.sh

clean:
	rm -rf $(BUILD)
