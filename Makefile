# nh-crossbasin developer commands. `make demo` and `make test` each set up everything they need on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_VERSION ?= 2.13.0
# Tests run on one thread each (tests/conftest.py), so two workers use both cores of the CI machine.
TEST_WORKERS ?= 2
PYTEST_ARGS ?= --durations=15 -n $(TEST_WORKERS) --dist loadfile

.PHONY: install demo test bench clean-venv gpu-prepare

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

# The GPU check (benchmarks/gpu_check.sh) runs on a lent GPU with what this target puts into two ignored folders:
# wheels of the packages the GPU image lacks (Python 3.12) and a copy of the 119 dev basins.
SHARED_DATA ?= ../shared/data/camels_us_caravan
gpu-prepare:
	mkdir -p .whl .devdata/camels_us_caravan/time_series .devdata/camels_us_caravan/attributes
	for pkg in neuralhydrology==1.13.0 ruamel.yaml ruamel.yaml.clib netCDF4 cftime; do \
	  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
	    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
	    --platform manylinux1_x86_64 -d .whl $$pkg; done
	cp $(SHARED_DATA)/basins_dev.txt $(SHARED_DATA)/basins_ci.txt .devdata/camels_us_caravan/
	cp $(SHARED_DATA)/attributes/*.csv .devdata/camels_us_caravan/attributes/
	for b in $$(cat $(SHARED_DATA)/basins_dev.txt); do cp $(SHARED_DATA)/time_series/$$b.nc .devdata/camels_us_caravan/time_series/; done
