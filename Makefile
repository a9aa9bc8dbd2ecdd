# Named tasks of the Efficient LVLM Inference Atlas. Every target installs what it needs into .venv first.
#   make serve   - the main job: install, validate, generate and serve the website on http://127.0.0.1:8000
#   make test    - install everything (CPU torch first) and run the whole test suite
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check -q
HOST   ?= 127.0.0.1
PORT   ?= 8000
SITE_DIR ?= _site

.DEFAULT_GOAL := help
.PHONY: help serve site test test-catalogue test-impls gpu-test validate schema bib readme generate fresh \
        bench-catalogue browser-deps clean

help:  ## list the tasks
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*##/\t/' | expand -t 18

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.site: pyproject.toml | $(VENV)/bin/python  ## catalogue tooling + website (no torch)
	$(PIP) install -e '.[site]'
	touch $@

$(VENV)/.dev: pyproject.toml | $(VENV)/bin/python
	$(PIP) install torch==2.13.0            # CPU build first, or pip pulls a multi-GB CUDA build
	$(PIP) install -e '.[site,kernels,adapters,dev]'
	touch $@ $(VENV)/.site

browser-deps:  ## headless Chromium from Debian for the browser test (needs root; skipped when present)
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	    else echo "chromium missing: install Debian's chromium to run the browser test"; fi; }

validate: $(VENV)/.site  ## check taxonomy.yaml and every paper
	$(PY) -m tools validate

schema: $(VENV)/.site  ## regenerate schema/paper.schema.json
	$(PY) -m tools schema

bib: $(VENV)/.site  ## regenerate the catalogue's .bib
	$(PY) -m tools bib

readme: $(VENV)/.site  ## regenerate the README's generated section
	$(PY) -m tools readme

generate: schema bib readme  ## every committed generated file

site: validate  ## build the website into $(SITE_DIR)/
	$(PY) -m tools site --build --output $(SITE_DIR)

serve: validate  ## the main job: build and serve the website on http://$(HOST):$(PORT)
	$(PY) -m tools site --serve --host $(HOST) --port $(PORT)

test: $(VENV)/.dev browser-deps  ## the whole test suite (CPU; GPU tests skip without CUDA)
	$(PY) -m pytest -q

test-catalogue: $(VENV)/.dev  ## catalogue tests only
	$(PY) -m pytest -q tests/catalogue

test-impls: $(VENV)/.dev  ## reference implementation tests only
	$(PY) -m pytest -q tests/reference_impls

gpu-test:  ## on a GPU machine with torch+triton installed (no pydantic needed)
	PYTHONPATH=. python -m pytest -q -m gpu tests/reference_impls

bench-catalogue: $(VENV)/.dev  ## validator benchmark on a synthetic 10,000-entry catalogue
	$(PY) -m benchmarks.bench_validate

clean:  ## remove the virtual environment and build outputs
	rm -rf $(VENV) $(SITE_DIR) site/_generated .pytest_cache
