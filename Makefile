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
# The same floors as pip resolves them for a user: every floor pinned but NumPy, which pip picks within
# pyproject's range (NumPy 2 wherever pyproject allows it). Another Python: make test-resolved
# RESOLVED_PYTHON=python3.11 (its wheels go to wheels-py311).
RESOLVED_PYTHON ?= $(OLDEST_PYTHON)
RESOLVED_VENV ?= .venv-resolved
RESOLVED_EXTRAS ?= openvino
RESOLVED_WHEELHOUSE ?= $(HOME)/.cache/resdeploy/wheels-py$(shell $(RESOLVED_PYTHON) -c 'import sys; print("%d%d" % sys.version_info[:2])' 2>/dev/null)

# Peer tools for the benchmarks (NVIDIA ModelOpt without its onnx extra, which pins onnxruntime-gpu;
# NNCF; ONNX Runtime), in a venv of their own: never in .venv.
PEERS_VENV ?= .venv-peers
PEERS := nvidia-modelopt==0.47.0 'onnx~=1.21.0' onnx-graphsurgeon polygraphy 'onnxconverter-common~=1.16.0' \
	onnxslim ml_dtypes lief cppimport onnxscript 'onnxruntime~=1.24.2' nncf openvino

.PHONY: setup data demo test test-oldest test-resolved lint bad-inputs typecheck-trt peers-venv clean

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

# $(call floors_venv,VENV,PYTHON,WHEELHOUSE,EXTRAS,CONSTRAINT OPTIONS): VENV made with PYTHON, holding the
# project with EXTRAS and its dependencies as tools/oldest_constraints.py pins them. pip resolves against
# the index (as for a user) and downloads into WHEELHOUSE only the wheels it lacks; the venv is then
# installed from WHEELHOUSE alone.
define floors_venv
	@test -n "$(2)" || { echo "error: no Python 3.10 found for $(1); set OLDEST_PYTHON=/path/to/python3.10" >&2; exit 2; }
	rm -rf $(1)
	$(2) -m venv $(1)
	$(PY) tools/oldest_constraints.py $(5) $(subst $(comma), ,$(4)) > $(1)/constraints.txt
	$(1)/bin/python -m pip install --quiet --upgrade pip
	mkdir -p $(3)
	$(1)/bin/python -m pip wheel --quiet --wheel-dir $(3) -c $(1)/constraints.txt setuptools '.[$(4)]'
	$(1)/bin/python -m pip install --quiet --no-index --find-links $(3) -c $(1)/constraints.txt -e '.[$(4)]'
	$(1)/bin/python -c "import sys, torch, numpy, onnx, onnxruntime; print('$(1): Python', \
		sys.version.split()[0], 'torch', torch.__version__, 'numpy', numpy.__version__, 'onnx', onnx.__version__, \
		'onnxruntime', onnxruntime.__version__)"
endef

$(OLDEST_VENV)/.ready: pyproject.toml tools/oldest_constraints.py | $(PY)
	$(call floors_venv,$(OLDEST_VENV),$(OLDEST_PYTHON),$(WHEELHOUSE),$(EXTRAS),)
	touch $@

# The suite on pyproject's lower bounds (CI runs it after `make test`).
test-oldest: $(OLDEST_VENV)/.ready data
	$(OLDEST_VENV)/bin/python -m pytest -q -p no:cacheprovider

$(RESOLVED_VENV)/.ready: pyproject.toml tools/oldest_constraints.py | $(PY)
	$(call floors_venv,$(RESOLVED_VENV),$(RESOLVED_PYTHON),$(RESOLVED_WHEELHOUSE),$(RESOLVED_EXTRAS),--unpin numpy)
	touch $@

# The floors with NumPy as pip picks it (CI runs it after test-oldest): export, INT8 quantize, eval on
# ONNX Runtime and OpenVINO, and the report's plotting import, each of which must exit 0.
test-resolved: $(RESOLVED_VENV)/.ready data
	@set -e; d=$$(mktemp -d); trap 'rm -rf "$$d"' EXIT; export RESDEPLOY_CACHE=$$d/cache; \
	r=$(RESOLVED_VENV)/bin/resdeploy; set -x; \
	$$r export resnet18 --num-classes 10 --input-size 32 -o $$d/m.onnx; \
	$$r quantize $$d/m.onnx --precision int8 --calib fashion-mnist:train --calib-size 64 -o $$d/m_int8.onnx; \
	$$r eval $$d/m.onnx $$d/m_int8.onnx --data fashion-mnist:test --limit 200 --backend ort-cpu; \
	$$r eval $$d/m.onnx $$d/m_int8.onnx --data fashion-mnist:test --limit 200 --backend ov-cpu; \
	$(RESOLVED_VENV)/bin/python -c "from resdeploy.pipeline.plots import _pyplot; _pyplot()"

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
	rm -rf $(VENV) $(STUBS_VENV) $(OLDEST_VENV) $(RESOLVED_VENV) $(PEERS_VENV) runs .pytest_cache .mypy_cache
