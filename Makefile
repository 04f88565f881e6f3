# The README's two commands:  `make book`  and  `make test`.
PYTHON  ?= python3.11
VENV    ?= .venv
PROFILE ?= cpu
SEED    ?= 0
# several seeds: `make book SEEDS="0 1 2"` (chapters 1-5 once per seed, chapters 6-7 pool them)
SEEDS   ?= $(SEED)
DATA_ROOT ?=
DATASET ?= embedded
# CPU torch from the registry (or this machine's wheel cache); override for CUDA, e.g.
#   make setup TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
TORCH_SPEC ?= torch==2.13.0

comma := ,
# The data arguments of `make book` / `make notebooks`: each is passed whenever it is set, so the
# pipeline itself refuses a dataset without its folder (or a folder without its format) up front.
DATA_ARGS = $(if $(DATA_ROOT),--data-root "$(DATA_ROOT)") $(if $(filter-out embedded,$(DATASET)),--dataset $(DATASET))
# `jupyter lab` refuses to run as root (containers, many cloud notebooks) without --allow-root.
LAB_ROOT_FLAG = $$(test "$$(id -u)" -eq 0 && echo --allow-root)
BIN   := $(VENV)/bin
STAMP := $(VENV)/.installed
export PATH := $(abspath $(BIN)):$(PATH)
export PYDEVD_DISABLE_FILE_VALIDATION := 1
# No "new pip available" notices in the setup output.
export PIP_DISABLE_PIP_VERSION_CHECK := 1
# `make bench`: quick CPU-sized runs; override for a real measurement, e.g.
#   make bench BENCH_PROFILES=gpu BENCH_STEPS=50
BENCH_PROFILES ?= smoke,cpu
BENCH_STEPS    ?= 5
BENCH_SUBJECTS ?= 2

.PHONY: setup book notebooks html results test test-fast lint lab bench clean device-check

setup: $(STAMP)

# setuptools is pinned because the editable install uses this environment's (no build
# isolation); -qq on that step hides setuptools' notice about editable installs.
$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip setuptools==84.2.1
	$(BIN)/python -m pip install -q $(TORCH_SPEC)
	$(BIN)/python -m pip install -q --no-deps fastmri==0.3.0
	$(BIN)/python -m pip install -q --no-deps -r requirements.lock
	$(BIN)/python -m pip install -qq --no-deps --no-build-isolation -e .
	$(BIN)/python -c "import mrilib, fastmri, torch; print('mrilib ready: torch', torch.__version__)"
	touch $(STAMP)

## Execute every notebook in order at PROFILE with papermill, then build the HTML book.
book: $(STAMP)
	$(BIN)/python -m mrilib.book --profile $(PROFILE) --seeds $(SEEDS) $(DATA_ARGS)

## Only execute the notebooks (no HTML).
notebooks: $(STAMP)
	$(BIN)/python -m mrilib.book --profile $(PROFILE) --seeds $(SEEDS) --no-html $(DATA_ARGS)

## Only rebuild the HTML from the already executed notebooks.
html: $(STAMP)
	$(BIN)/python -m mrilib.book --profile $(PROFILE) --html-only

## Regenerate the README's results section (table + figure) from the PROFILE run.
results: $(STAMP)
	MPLBACKEND=Agg $(BIN)/python -m mrilib.book.report --profile $(PROFILE)

## Everything, as CI runs it (executes the whole book at the smoke profile once).
test: $(STAMP)
	$(BIN)/python -m pytest -q

## Unit tests only: no notebook execution, nothing marked slow (about half a minute on 2 cores).
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not notebook and not slow"

## ruff on the package, the tests, the benchmarks and the notebooks (rules: pyproject.toml).
lint: $(STAMP)
	$(BIN)/ruff check mrilib tests bench notebooks

## JupyterLab on the notebooks (adds --allow-root when run as root).
lab: $(STAMP)
	$(BIN)/jupyter lab $(LAB_ROOT_FLAG) notebooks/

bench: $(STAMP)
	MPLBACKEND=Agg $(BIN)/python bench/simulate.py --profiles $(subst $(comma), ,$(BENCH_PROFILES)) \
	    --subjects $(BENCH_SUBJECTS)
	MPLBACKEND=Agg $(BIN)/python bench/train_throughput.py --profiles $(BENCH_PROFILES) --steps $(BENCH_STEPS)

clean:
	rm -rf _build book/executed runs

## On one CUDA GPU: throughput (fp32, bf16, compile), one chapter-2 epoch and the projected gpu book time;
## without CUDA it stops at once with how to install a CUDA build of torch (TORCH_SPEC).
device-check: $(STAMP)
	$(BIN)/python bench/device_check.py
