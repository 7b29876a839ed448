# The two README commands: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.resdeploy-installed
# torch is a range in pyproject (Jetson users bring NVIDIA's wheels); here we pick the build
# this machine serves from disk. Override with `make TORCH_SPEC= ...` to keep your own.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
comma := ,
# The rtx extra (TensorRT for RTX, whose builder runs without a GPU) where NVIDIA publishes wheels: x86_64.
EXTRAS := dev,openvino$(if $(filter x86_64 amd64 AMD64,$(shell uname -m)),$(comma)rtx)
FASHION_DIR := /usr/share/datasets/fashion-mnist
# mypy over the TensorRT modules (tools/trt_typecheck_targets.txt) runs against tensorrt-stubs in a venv
# of its own: `make typecheck-trt`.
STUBS_VENV ?= .venv-trt-stubs
# The oldest supported stack (JetPack 6.0: Python 3.10, torch 2.3) in a venv of its own, with
# every dependency at pyproject's lower bound; its wheels are kept between runs.
OLDEST_PYTHON ?= $(shell for p in python3.10 $$(ls -d $$HOME/.pyenv/versions/3.10*/bin/python3.10 /usr/bin/python3.10 2>/dev/null); do \
	$$p -c 'import sys; sys.exit(sys.version_info[:2] != (3, 10))' 2>/dev/null && { echo $$p; break; }; done)
OLDEST_VENV ?= .venv-oldest
WHEELHOUSE ?= $(HOME)/.cache/resdeploy/wheels-py310

# Peer tools for the benchmarks (NVIDIA ModelOpt without its onnx extra, which pins onnxruntime-gpu;
# NNCF; ONNX Runtime), in a venv of their own: never in .venv.
PEERS_VENV ?= .venv-peers
PEERS := nvidia-modelopt==0.47.0 'onnx~=1.21.0' onnx-graphsurgeon polygraphy 'onnxconverter-common~=1.16.0' \
	onnxslim ml_dtypes lief cppimport onnxscript 'onnxruntime~=1.24.2' nncf openvino

.PHONY: setup data demo test test-oldest lint bad-inputs typecheck-trt peers-venv clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PIP) install --quiet --upgrade pip
	@if ! $(PY) -c "import torch, torchvision" 2>/dev/null; then \
		echo "installing $(TORCH_SPEC)"; $(PIP) install --quiet $(TORCH_SPEC); fi
	$(PIP) install --quiet -e '.[$(EXTRAS)]'
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

$(OLDEST_VENV)/.ready: pyproject.toml tools/oldest_constraints.py | $(PY)
	@test -n "$(OLDEST_PYTHON)" || { echo "error: no Python 3.10 found; set OLDEST_PYTHON=/path/to/python3.10" >&2; exit 2; }
	rm -rf $(OLDEST_VENV)
	$(OLDEST_PYTHON) -m venv $(OLDEST_VENV)
	$(PY) tools/oldest_constraints.py $(subst $(comma), ,$(EXTRAS)) > $(OLDEST_VENV)/constraints.txt
	$(OLDEST_VENV)/bin/python -m pip install --quiet --upgrade pip
	mkdir -p $(WHEELHOUSE)
	@ls $(WHEELHOUSE)/torch-2.3.0-*.whl >/dev/null 2>&1 || $(OLDEST_VENV)/bin/python -m pip wheel --quiet \
		--wheel-dir $(WHEELHOUSE) -c $(OLDEST_VENV)/constraints.txt '.[$(EXTRAS)]'
	$(OLDEST_VENV)/bin/python -m pip install --quiet --find-links $(WHEELHOUSE) -c $(OLDEST_VENV)/constraints.txt \
		-e '.[$(EXTRAS)]'
	$(OLDEST_VENV)/bin/python -c "import sys, torch, numpy, onnx, onnxruntime; print('oldest stack: Python', \
		sys.version.split()[0], 'torch', torch.__version__, 'numpy', numpy.__version__, 'onnx', onnx.__version__, \
		'onnxruntime', onnxruntime.__version__)"
	touch $@

# The suite on pyproject's lower bounds (CI runs it after `make test`).
test-oldest: $(OLDEST_VENV)/.ready data
	$(OLDEST_VENV)/bin/python -m pytest -q -p no:cacheprovider

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks tools
	$(VENV)/bin/mypy src/resdeploy
	$(VENV)/bin/vermin -t=3.10- --violations --no-tips --eval-annotations src/resdeploy tests benchmarks tools

bad-inputs: setup
	$(PY) tools/bad_inputs.py

$(PEERS_VENV)/.ready:
	$(PYTHON) -m venv $(PEERS_VENV)
	$(PEERS_VENV)/bin/pip install --quiet $(TORCH_SPEC)
	$(PEERS_VENV)/bin/pip install --quiet $(PEERS)
	touch $@

peers-venv: $(PEERS_VENV)/.ready

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
	rm -rf $(VENV) $(STUBS_VENV) $(OLDEST_VENV) $(PEERS_VENV) runs .pytest_cache .mypy_cache
