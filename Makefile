# Rad4XCNN: `make demo` runs the pipeline on the built-in synthetic cohort, `make test` runs ruff and pytest.
# Both create the virtual environment in .venv once, and reinstall only when pyproject.toml changes.
# `make test312` runs the Slicer-side tests and the engine's core tests under Python 3.12 (3D Slicer 5.10's
# Python) in a second, light environment (.venv312: the core dependencies, slicer-core, pytest, ruff; no
# torch, PyRadiomics or scikit-learn: tests that need them skip). It also fills the local package index of
# the install-plan resolver test once (.wheelhouse/py312, ~240 MB from PyPI), so that test runs offline.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEPS_HASH := $(shell cat pyproject.toml | sha256sum | cut -c1-16)
STAMP := $(VENV)/.installed-$(DEPS_HASH)
DEMO_OUT ?= demo_run
PYTEST_ARGS ?=
PYTHON312 ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/3.12*/bin/python3.12) $(shell command -v python3.12))
VENV312 ?= .venv312
BIN312 := $(VENV312)/bin
STAMP312 := $(VENV312)/.installed-$(DEPS_HASH)
WHEELHOUSE312 ?= .wheelhouse/py312
CORE_TESTS ?= Testing/cohort Testing/explain Testing/infra Testing/run/test_config.py \
	Testing/run/test_run_results.py Testing/slicer_side

.PHONY: demo test test312 wheelhouse lint format venv venv312 clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; v = sys.version_info[:2]; assert (3, 10) <= v <= (3, 12), \
	  f"Rad4XCNN needs Python 3.10 to 3.12, found {v[0]}.{v[1]}: make PYTHON=python3.11 ..."'
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[all]'
	touch $(STAMP)

venv312: $(STAMP312)

$(STAMP312): pyproject.toml
	@test -n "$(PYTHON312)" || { echo "Python 3.12 not found: make test312 PYTHON312=/path/to/python3.12"; exit 1; }
	@start=$$(date +%s); set -e; \
	rm -rf $(VENV312); \
	$(PYTHON312) -m venv $(VENV312); \
	$(BIN312)/python -m pip install --quiet --upgrade pip; \
	$(BIN312)/python -m pip install --quiet -e '.[slicer,test]'; \
	echo "Python 3.12 environment installed in $$(( $$(date +%s) - start )) s"
	touch $(STAMP312)

wheelhouse: $(WHEELHOUSE312)/COMPLETE

$(WHEELHOUSE312)/COMPLETE: $(STAMP312) Testing/slicer_side/resolver_wheelhouse.py Rad4XCNN/Rad4XCNNLib/dependencies.py
	rm -rf $(WHEELHOUSE312)
	$(BIN312)/python Testing/slicer_side/resolver_wheelhouse.py $(WHEELHOUSE312)

test312: $(STAMP312) $(WHEELHOUSE312)/COMPLETE
	@start=$$(date +%s); \
	RAD4XCNN_WHEELHOUSE=$(WHEELHOUSE312) $(BIN312)/python -m pytest $(CORE_TESTS) $(PYTEST_ARGS); status=$$?; \
	echo "Python 3.12 tests ran in $$(( $$(date +%s) - start )) s"; exit $$status

demo: $(STAMP)
	$(BIN)/rad4xcnn demo --out $(DEMO_OUT)

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest $(PYTEST_ARGS)

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) $(VENV312) .wheelhouse $(DEMO_OUT) .pytest_cache .ruff_cache
