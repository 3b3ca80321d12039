# Two entry points for a fresh machine (Debian 12, Python 3.11, no GPU): `make demo`, `make test`.
# Everything installs into .venv; torch is pinned to the CPU wheel this machine carries
# (override TORCH_SPEC, e.g. TORCH_SPEC='torch>=2.2', for a CUDA machine).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0

.PHONY: demo test lint benchmark benchmark-node clean

$(VENV)/.installed: setup.py pyproject.toml requirements-ros-wheels.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet '$(TORCH_SPEC)'
	$(PY) -m pip install --quiet -e '.[dev,train]'
	$(PY) -m pip install --quiet -r requirements-ros-wheels.txt
	touch $@

demo: $(VENV)/.installed
	$(PY) training/demo.py --out outputs/demo

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: lint
	$(PY) -m pytest -q

benchmark: $(VENV)/.installed
	$(PY) training/benchmark_inference.py

benchmark-node: $(VENV)/.installed
	$(PY) training/benchmark_node.py

clean:
	rm -rf $(VENV) outputs build *.egg-info .pytest_cache .ruff_cache
