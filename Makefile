# The two commands of the README. Each creates .venv and installs what is missing on first use.
#   make demo   - evaluate the shipped example patients (the main job)
#   make test   - run the whole test suite (what CI runs: .ci/run calls `make test`); it first installs the
#                 system packages the tests need when missing (PostgreSQL, Chromium: tests/system_setup.sh)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test bench clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; v = sys.version_info[:2]; sys.exit(0 if (3, 11) <= v < (3, 13) else "imt-cds needs Python 3.11 or 3.12 (durable-rules does not import on 3.13); set PYTHON=python3.12 or similar")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

demo: $(STAMP)
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
	rm -rf $(VENV) build dist .pytest_cache .hypothesis
