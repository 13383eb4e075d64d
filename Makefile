# Two commands do all the set-up: `make run` and `make test`.
# Each (re)creates .venv when it is missing or older than pyproject.toml.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
CONFIG ?= configs/mnist1d_imp.yaml
RUN_DIR ?= runs/mnist1d_imp
ARGS ?=
# torch/BLAS threads of `make run`: 1 is fastest for the default MLP on shared cores
THREADS ?= 1
# pytest-xdist workers of `make test` (each test runs one torch thread: tests/conftest.py)
TEST_WORKERS ?= 2

.PHONY: run test test-slow bench docs venv clean

$(STAMP): pyproject.toml
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	OMP_NUM_THREADS=$(THREADS) OPENBLAS_NUM_THREADS=$(THREADS) MKL_NUM_THREADS=$(THREADS) \
		$(VENV)/bin/ltc imp --config $(CONFIG) --run_dir $(RUN_DIR) $(ARGS)
	OMP_NUM_THREADS=$(THREADS) OPENBLAS_NUM_THREADS=$(THREADS) MKL_NUM_THREADS=$(THREADS) \
		$(VENV)/bin/ltc report --run_dir $(RUN_DIR)

test: $(STAMP)
	OMP_NUM_THREADS=1 $(VENV)/bin/python -m pytest -n $(TEST_WORKERS) $(ARGS)

test-slow: $(STAMP)
	$(VENV)/bin/python -m pytest -m slow $(ARGS)

bench: $(STAMP)
	$(VENV)/bin/ltc bench --quick $(ARGS)

# the documentation site into site/ (strict: a broken link or a missing page fails)
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict $(ARGS)

clean:
	rm -rf $(VENV) runs site
