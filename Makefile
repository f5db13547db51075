# The two commands of the README. Each creates .venv and installs what is missing on first use.
#   make demo   - evaluate the shipped example patients (the main job); installs the runtime only
#   make test   - run the whole test suite (what CI runs: .ci/run calls `make test`); adds the test extra, and first
#                 installs the system packages the tests need when missing (PostgreSQL, Chromium:
#                 tests/system_setup.sh, which never stops the run: what it cannot install is reported and skipped;
#                 under IMT_CDS_STRICT=1, as in CI, such a skip is a failure)
# Stamps: .venv/.interpreter (which Python built .venv: another PYTHON rebuilds it), .venv/.runtime (the package),
# .venv/.installed (the package with its test extra).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
INTERPRETER := $(VENV)/.interpreter
RUNTIME     := $(VENV)/.runtime
STAMP       := $(VENV)/.installed
# The real interpreter behind PYTHON (through any venv's symlink) and its version: what the interpreter stamp holds.
PYTHON_ID = $(shell $(PYTHON) -c 'import os, sys; print(os.path.realpath(sys.executable), *sys.version_info[:3])' 2>/dev/null)

.PHONY: demo test bench clean FORCE

# Always checked, rewritten only when PYTHON names another interpreter than the one that built .venv; the stamps
# below depend on it, so a rewrite rebuilds everything.
$(INTERPRETER): FORCE
	@$(PYTHON) -c 'import sys; v = sys.version_info[:2]; sys.exit(0 if (3, 11) <= v < (3, 13) else "imt-cds needs Python 3.11 or 3.12 (durable-rules does not import on 3.13); set PYTHON=python3.12 or similar")'
	@if [ "$$(cat $@ 2>/dev/null)" != "$(PYTHON_ID)" ]; then \
	    echo "creating $(VENV) with $(PYTHON_ID)"; \
	    rm -rf $(VENV) && $(PYTHON) -m venv $(VENV) && $(PY) -m pip install --quiet --upgrade pip \
	    && echo "$(PYTHON_ID)" > $@; \
	fi

$(RUNTIME): $(INTERPRETER) pyproject.toml
	$(PY) -m pip install --quiet -e .
	@touch $@

$(STAMP): $(RUNTIME)
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $@

demo: $(RUNTIME)
	@for f in examples/*.json; do \
	    echo "=================================================================== $$f"; \
	    $(VENV)/bin/imt-cds evaluate "$$f" || exit $$?; \
	done

test: $(STAMP)
	bash tests/system_setup.sh
	HYPOTHESIS_PROFILE=ci $(PY) -m pytest

bench: $(STAMP)
	$(PY) tests/benchmarks/bench.py

clean:
	rm -rf $(VENV) build dist .pytest_cache .hypothesis readme-output
