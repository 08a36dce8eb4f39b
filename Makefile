# nh-crossbasin developer commands. `make demo` and `make test` each set up everything they need on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_VERSION ?= 2.13.0
PYTEST_ARGS ?=

.PHONY: install demo test bench clean-venv

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Pin torch first: a bare `torch` requirement can pull a multi-GB CUDA build.
$(VENV)/.torch-$(TORCH_VERSION): | $(BIN)/python
	$(BIN)/python -m pip install --quiet torch==$(TORCH_VERSION)
	touch $@

# A regular (non-editable) install, so that the start-up hook files land in site-packages.
install: $(VENV)/.torch-$(TORCH_VERSION)
	$(BIN)/python -m pip install --quiet ".[test]"

demo: install
	$(BIN)/python -m nh_crossbasin.demo

test: install
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

bench: install
	$(BIN)/python benchmarks/startup_time.py

clean-venv:
	rm -rf $(VENV)
