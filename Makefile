# Two commands set up a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: env demo test test-all bench clean

env: $(STAMP)

# torch first, pinned to the locally served CPU build, so that pip never pulls a CUDA build
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test,test-gui,onnx,em,bioimageio,ome]'
	touch $(STAMP)

demo: env
	$(BIN)/mixscale demo --out runs/demo

test: env
	$(BIN)/python -m pytest -q -rs

test-all: env
	$(BIN)/python -m pytest -q -m ''

clean:
	rm -rf $(VENV) runs
