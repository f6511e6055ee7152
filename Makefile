# equisae: `make book` reproduces everything and builds the book; `make test` runs the tests.
MODE ?= full
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv lint unit reproduce book test check publish publish-reference bench clean

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

bench: venv
	$(BIN)/python benchmarks/bench_data.py
	$(BIN)/python benchmarks/bench_sae.py
	$(BIN)/python benchmarks/bench_equivariant.py
	$(BIN)/python benchmarks/bench_sweep.py

clean:
	rm -rf _build book/notebooks results artifacts
