# Two commands on a fresh machine: `make demo` (the main job) and `make test` (the test suite).
# Both create .venv/ in the repository root and install what they need on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The local venv's torch (from this workplace's disk); pyproject.toml admits 2.11 to 2.14, so e.g.
# make install TORCH="torch==2.11.0 torchvision==0.26.0" gives the GPU machines' versions.
TORCH ?= torch==2.14.1 torchvision==0.29.1

.PHONY: demo test test-kernels lint install clean gpu-check wheels

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check $(TORCH)
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[dev,hf]'
	touch $(STAMP)

install: $(STAMP)

# The demo's task uses Debian's Fashion-MNIST images; without them it falls back to scikit-learn's digits.
demo: $(STAMP)
	@if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] && [ "$$(id -u)" = 0 ] \
	    && command -v apt-get >/dev/null; then \
	  echo "installing Debian's dataset-fashion-mnist (real images for the demo)"; \
	  (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) >/dev/null 2>&1 || \
	    echo "could not install dataset-fashion-mnist: the demo uses scikit-learn's digits instead"; \
	fi
	$(BIN)/reprogram demo

test: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/python -m pytest -q -n auto --dist worksteal  # one worker per core (pytest-xdist); each test process uses one thread

# The tests marked `numeric` again on other kernel paths, so that a test passing on one only fails
# here before it fails on another machine: two threads per process, then MKL's and ATen's AVX2
# kernels (environment set before torch is imported; the default path on AVX2-only processors).
test-kernels: $(STAMP)
	REPROGRAM_TEST_THREADS=2 $(BIN)/python -m pytest -q -p no:xdist -m numeric
	MKL_ENABLE_INSTRUCTIONS=AVX2 ATEN_CPU_CAPABILITY=avx2 \
	  $(BIN)/python -m pytest -q -n auto --dist worksteal -m numeric

lint: $(STAMP)
	$(BIN)/ruff check src tests

# never deletes runs/: those are the user's results
clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache

# The GPU check of docs/benchmarks.md (on a CUDA machine, with its own python3 and torch; OUT=folder
# for the record). `make wheels` first, where there is network: .whl/ holds this project and only
# what the lent machines' image lacks (scripts/gpu-image-packages.txt), under 20 MB.
gpu-check:
	bash scripts/gpu-check.sh

wheels: $(STAMP)
	PYTHON=$(BIN)/python bash scripts/gpu-check.sh --build-wheels
