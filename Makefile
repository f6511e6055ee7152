# equisae: `make book` reproduces everything and builds the book; `make test` runs the tests.
MODE ?= full
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv lint unit reproduce book test test-portable envelope check publish publish-reference bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# The CPU wheel first and explicitly: an unpinned torch would pull a multi-GB CUDA build.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

unit: venv
	$(BIN)/python -m pytest -m "not notebooks and not book"

reproduce: venv
	$(BIN)/equisae reproduce --mode $(MODE)

book: reproduce

check: venv
	$(BIN)/equisae check --mode $(MODE)

# The full book as a self-contained static site in _build/site (every asset local, MathJax
# included): upload that folder to any static host (.github/workflows/publish.yml: GitHub Pages).
publish: venv
	$(BIN)/equisae reproduce --mode full
	rm -rf _build/site
	cp -r _build/html _build/site
	touch _build/site/.nojekyll
	$(BIN)/python book/_ext/check_site.py _build/site

# Copy results/$(MODE) over the committed reference (maintainers, after a trusted full run).
publish-reference: venv
	$(BIN)/equisae check --mode $(MODE) --publish

test: lint unit
	$(BIN)/equisae reproduce --mode quick
	$(BIN)/python -m pytest -m "notebooks or book"
	$(BIN)/equisae check --mode quick

# A second machine, emulated: the quick reproduction again with oneMKL limited to AVX2 and
# PyTorch's kernels without vector extensions (the pair that moves the numbers most), into its
# own results and artifacts, and `equisae check` must pass on it too (the envelope's job).
PORTABLE := $(CURDIR)/_build/portable
EMULATED_ENV := MKL_ENABLE_INSTRUCTIONS=AVX2 ATEN_CPU_CAPABILITY=default

test-portable: venv
	rm -rf $(PORTABLE)
	env $(EMULATED_ENV) EQUISAE_RESULTS=$(PORTABLE)/results EQUISAE_ARTIFACTS=$(PORTABLE)/artifacts \
		$(BIN)/equisae reproduce --mode quick --no-book
	$(BIN)/equisae check --mode quick --results $(PORTABLE)/results/quick

# Rerun the quick reproduction under every numeric environment, publish the native run as
# reference/quick and write reference/quick/envelope.json (maintainers, with the reference).
envelope: venv
	$(BIN)/equisae envelope --mode quick --publish

bench: venv
	$(BIN)/python benchmarks/bench_data.py
	$(BIN)/python benchmarks/bench_sae.py
	$(BIN)/python benchmarks/bench_equivariant.py
	$(BIN)/python benchmarks/bench_sweep.py

clean:
	rm -rf _build book/notebooks results artifacts
