# Two commands on a fresh machine: `make demo` (set up + run the demo), `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
BENCH_VENV ?= .venv-bench
# The CPU build of torch is installed first: an unpinned torch would pull a multi-GB CUDA build.
TORCH ?= torch==2.13.0

.PHONY: setup demo test lint format schemas bench examples clean

$(BIN)/deconv: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "$(TORCH)"
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[test]"
	touch $@

setup: $(BIN)/deconv

demo: setup
	$(BIN)/deconv demo

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

schemas: setup
	$(BIN)/python -m deconv.schemas --write

test: lint
	$(BIN)/python -m deconv.schemas --check
	$(BIN)/python -m pytest

# What a package looks like, committed for readers: rdf.yaml, README.md and cover.png of the
# shipped 3D RLN's bioimage.io package.
examples: setup
	$(BIN)/deconv package rln3d.widefield-synthetic -o examples/rln3d.widefield-synthetic.zip -q
	cd examples && rm -rf rln3d.widefield-synthetic && mkdir rln3d.widefield-synthetic && \
		unzip -q -o rln3d.widefield-synthetic.zip rdf.yaml README.md cover.png \
		-d rln3d.widefield-synthetic && rm rln3d.widefield-synthetic.zip

# Peers (scikit-image, RedLionfish's CPU path) live only in the benchmark environment.
# RedLionfish's GPU extras (pyopencl, reikna) are not needed for its CPU path.
$(BENCH_VENV)/bin/deconv: pyproject.toml
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install --quiet --disable-pip-version-check "$(TORCH)"
	$(BENCH_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -e ".[bench]"
	$(BENCH_VENV)/bin/python -m pip install --quiet --disable-pip-version-check --no-deps \
		"redlionfish==0.10"
	touch $@

bench: $(BENCH_VENV)/bin/deconv
	$(BENCH_VENV)/bin/python benchmarks/bench_rl_cpu.py

clean:
	rm -rf $(VENV) $(BENCH_VENV) build *.egg-info deconv-demo
