# The README's two commands:  `make book`  and  `make test`.
PYTHON  ?= python3.11
VENV    ?= .venv
PROFILE ?= cpu
SEED    ?= 0
DATA_ROOT ?=
DATASET ?= embedded
# CPU torch from the registry (or this machine's wheel cache); override for CUDA, e.g.
#   make setup TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
TORCH_SPEC ?= torch==2.13.0

BIN   := $(VENV)/bin
STAMP := $(VENV)/.installed
export PATH := $(abspath $(BIN)):$(PATH)
export PYDEVD_DISABLE_FILE_VALIDATION := 1

.PHONY: setup book notebooks html results test test-fast lab bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH_SPEC)
	$(BIN)/python -m pip install -q --no-deps fastmri==0.3.0
	$(BIN)/python -m pip install -q --no-deps -r requirements.lock
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	$(BIN)/python -c "import mrilib, fastmri, torch; print('mrilib ready: torch', torch.__version__)"
	touch $(STAMP)

## Execute every notebook in order at PROFILE with papermill, then build the HTML book.
book: $(STAMP)
	$(BIN)/python -m mrilib.book --profile $(PROFILE) --seed $(SEED) \
	    $(if $(DATA_ROOT),--data-root $(DATA_ROOT) --dataset $(DATASET),)

## Only rebuild the HTML from the already executed notebooks.
html: $(STAMP)
	$(BIN)/python -m mrilib.book --profile $(PROFILE) --html-only

## Regenerate the README's results section (table + figure) from the PROFILE run.
results: $(STAMP)
	MPLBACKEND=Agg $(BIN)/python -m mrilib.evaluate.report --profile $(PROFILE)

test: $(STAMP)
	$(BIN)/python -m pytest -q

lab: $(STAMP)
	$(BIN)/jupyter lab notebooks/

bench: $(STAMP)
	MPLBACKEND=Agg $(BIN)/python bench/simulate.py

clean:
	rm -rf _build book/executed runs
