# The two README commands: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.resdeploy-installed
# torch is a range in pyproject (Jetson users bring NVIDIA's wheels); here we pick the build
# this machine serves from disk. Override with `make TORCH_SPEC= ...` to keep your own.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
FASHION_DIR := /usr/share/datasets/fashion-mnist
# mypy over the TensorRT modules runs against tensorrt-stubs in a venv of its own (TENSORRT.md).
STUBS_VENV ?= .venv-trt-stubs

.PHONY: setup data demo test lint typecheck typecheck-trt clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PIP) install --quiet --upgrade pip
	@if ! $(PY) -c "import torch, torchvision" 2>/dev/null; then \
		echo "installing $(TORCH_SPEC)"; $(PIP) install --quiet $(TORCH_SPEC); fi
	$(PIP) install --quiet -e '.[dev]'
	touch $(STAMP)

# Fashion-MNIST from Debian's dataset-fashion-mnist, where apt is available and the files are missing.
data:
	@if [ ! -f $(FASHION_DIR)/t10k-images-idx3-ubyte.gz ] && [ -z "$$RESDEPLOY_DATA" ]; then \
		if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
			(apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) >/dev/null \
			|| echo "warning: apt-get install dataset-fashion-mnist failed; set RESDEPLOY_DATA"; \
		else echo "note: Fashion-MNIST not in $(FASHION_DIR); install dataset-fashion-mnist or set RESDEPLOY_DATA"; fi; \
	fi

setup: $(STAMP) data

demo: setup
	$(VENV)/bin/resdeploy run

test: setup typecheck-trt
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/mypy src/resdeploy

$(STUBS_VENV)/.ready:
	$(PYTHON) -m venv $(STUBS_VENV)
	$(STUBS_VENV)/bin/pip install --quiet mypy numpy
	$(STUBS_VENV)/bin/pip install --quiet --no-deps tensorrt-stubs
	$(STUBS_VENV)/bin/python tools/fix_tensorrt_stubs.py
	touch $@

typecheck-trt: $(STUBS_VENV)/.ready
	@if [ -f tools/trt_typecheck_targets.txt ]; then \
		$(STUBS_VENV)/bin/mypy --python-executable $(STUBS_VENV)/bin/python --ignore-missing-imports \
			--no-incremental --follow-imports=silent --enable-error-code possibly-undefined $$(cat tools/trt_typecheck_targets.txt); fi

clean:
	rm -rf $(VENV) $(STUBS_VENV) runs .pytest_cache .mypy_cache
