# Named tasks of the Efficient LVLM Inference Atlas. Every target installs what it needs into .venv first, at the
# exact versions of the lock in requirements/ (`make lock` regenerates it from pyproject.toml).
#   make serve   - the main job: install, validate, generate and serve the website on http://127.0.0.1:8000
#   make test    - install everything (CPU torch first) and run the whole test suite
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check -q
HOST   ?= 127.0.0.1
PORT   ?= 8000
SITE_DIR ?= _site

# The lock: site.txt (catalogue tooling + website), all.txt (every extra), transformers-gpu.txt (what the GPU
# machines' transformers release needs on top of all.txt, for the adapter tests).
SITE_LOCK := requirements/site.txt
ALL_LOCK  := requirements/all.txt
GPU_LOCK  := requirements/transformers-gpu.txt
TORCH_VERSION    ?= $(shell sed -n 's/^torch==//p' $(ALL_LOCK))
GPU_TRANSFORMERS ?= $(shell sed -n 's/^transformers==//p' $(GPU_LOCK))
GPU_OVERLAY := $(VENV)/transformers-gpu
UV_VERSION  := 0.13.9
LOCK_FLAGS  := --python-version 3.11 --python-platform x86_64-unknown-linux-gnu --quiet $(LOCK_ARGS)

.DEFAULT_GOAL := help
.PHONY: help serve site test test-catalogue test-impls test-hf-hosts-gpu-transformers gpu-test validate schema bib \
        readme generate lint bench-catalogue browser-deps lock clean

help:  ## list the tasks
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*##/\t/' | expand -t 18

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.site: pyproject.toml $(SITE_LOCK) | $(VENV)/bin/python  ## catalogue tooling + website (no torch)
	$(PIP) install -r $(SITE_LOCK)
	$(PIP) install --no-deps -e .
	touch $@

# The lock holds no CUDA package: the CPU build of torch goes first, then pip finds torch satisfied.
$(VENV)/.dev: pyproject.toml $(ALL_LOCK) | $(VENV)/bin/python
	$(PIP) install torch==$(TORCH_VERSION)            # CPU build first, or pip pulls a multi-GB CUDA build
	$(PIP) install -r $(ALL_LOCK)
	$(PIP) install --no-deps -e .
	touch $@ $(VENV)/.site

# transformers as on the GPU machines, with the few packages it needs in other versions, shadowing .venv's copies
# through PYTHONPATH (torch and the rest come from .venv).
$(GPU_OVERLAY)/.installed: $(GPU_LOCK) | $(VENV)/.dev
	rm -rf $(GPU_OVERLAY)
	$(PIP) install --no-deps --target $(GPU_OVERLAY) -r $(GPU_LOCK)
	touch $@

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

lint: $(VENV)/.dev  ## ruff: lint and formatting (`ruff format .` fixes the formatting)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: $(VENV)/.dev $(GPU_OVERLAY)/.installed browser-deps  ## lint, the whole suite, then the Hugging Face hosts on the GPU machines' transformers
	$(MAKE) --no-print-directory lint
	$(PY) -m pytest -q
	$(MAKE) --no-print-directory test-hf-hosts-gpu-transformers

test-hf-hosts-gpu-transformers: $(GPU_OVERLAY)/.installed  ## the Hugging Face host tests on transformers $(GPU_TRANSFORMERS) (GPU machines)
	PYTHONPATH=$(GPU_OVERLAY) $(PY) -c 'import sys, transformers as t; v = t.__version__; print("transformers", v); \
	  sys.exit(v != "$(GPU_TRANSFORMERS)")'
	PYTHONPATH=$(GPU_OVERLAY) $(PY) -m pytest -q -p no:cacheprovider tests/reference_impls/test_hosts_hf.py tests/reference_impls/test_hosts_hf_vision.py tests/reference_impls/test_registry_sweep.py tests/reference_impls/test_cli.py

test-catalogue: $(VENV)/.dev  ## catalogue tooling tests only
	$(PY) -m pytest -q tests/tools

test-impls: $(VENV)/.dev  ## reference implementation tests only
	$(PY) -m pytest -q tests/reference_impls

gpu-test:  ## on a GPU machine with torch+triton installed (no pydantic needed)
	PYTHONPATH=. python -m pytest -q -m gpu tests/reference_impls

bench-catalogue: $(VENV)/.dev  ## validator benchmark on a synthetic 10,000-entry catalogue
	$(PY) -m benchmarks.bench_validate

# uv pip compile keeps the current pins where pyproject.toml still allows them (LOCK_ARGS=--upgrade moves them all);
# the CUDA packages of PyPI's Linux torch wheel are excluded (found by a first pass), so the lock stays CPU-only.
lock: | $(VENV)/bin/python  ## regenerate requirements/*.txt from pyproject.toml (needs PyPI)
	$(PIP) install uv==$(UV_VERSION)
	@mkdir -p $(VENV)/lock && echo "torch==$(TORCH_VERSION)" > $(VENV)/lock/torch.txt
	$(VENV)/bin/uv pip compile pyproject.toml --all-extras -c $(VENV)/lock/torch.txt $(LOCK_FLAGS) --no-header \
	  --no-annotate | { grep -oE '^(nvidia|cuda)-[^=]+' || true; } > $(VENV)/lock/cuda.txt
	$(VENV)/bin/uv pip compile pyproject.toml --all-extras -c $(VENV)/lock/torch.txt \
	  --excludes $(VENV)/lock/cuda.txt $(LOCK_FLAGS) --custom-compile-command "make lock" -o $(ALL_LOCK)
	$(VENV)/bin/uv pip compile pyproject.toml --extra site -c $(ALL_LOCK) $(LOCK_FLAGS) \
	  --custom-compile-command "make lock" -o $(SITE_LOCK)
	grep -vE '^(transformers|huggingface-hub)==' $(ALL_LOCK) > $(VENV)/lock/shared.txt
	echo "transformers==$(GPU_TRANSFORMERS)" > $(VENV)/lock/gpu.in
	{ echo "# transformers $(GPU_TRANSFORMERS) (the GPU machines' release) and what it needs in other versions"; \
	  echo "# than $(ALL_LOCK); installed beside .venv by make test. Generated by make lock: do not edit."; \
	  $(VENV)/bin/uv pip compile $(VENV)/lock/gpu.in -c $(VENV)/lock/shared.txt $(LOCK_FLAGS) --no-header \
	    --no-annotate | grep -vxF -f $(ALL_LOCK); } > $(GPU_LOCK)
	! grep -iE '^(nvidia|cuda)-' $(ALL_LOCK) $(SITE_LOCK) $(GPU_LOCK)

clean:  ## remove the virtual environment and build outputs
	rm -rf $(VENV) $(SITE_DIR) site/_generated .pytest_cache
