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

# Mutation testing of the core modules (slow; never part of `make test` or CI). mutmut mutates files in place, so
# it runs on a copy of the committed tree in MUTATION_DIR. One module at a time, each with the tests that guard it:
#   make mutation                               every core module below, one after the other (hours on 2 cores)
#   make mutation MUTATE=imt_cds/conditions.py  one module
# Then `cd $(MUTATION_DIR) && mutmut results` / `mutmut show ID`. Equivalent survivors: tests/mutation-survivors.md.
.PHONY: mutation
MUTATION_DIR ?= /tmp/imt-cds-mutation
MUTATION_TESTS_imt_cds/validation.py  := tests/test_facts.py tests/test_untrusted_input.py
MUTATION_TESTS_imt_cds/conditions.py  := tests/test_rulebook_loading.py tests/test_compiler.py
MUTATION_TESTS_imt_cds/compiler.py    := tests/test_compiler.py tests/test_engine.py tests/test_rule_examples.py
MUTATION_TESTS_imt_cds/assessment.py  := tests/test_assessment.py
MUTATION_TESTS_imt_cds/assessment_json.py := tests/test_assessment.py
MUTATION_TESTS_imt_cds/rule_loader.py := tests/test_rulebook_loading.py
# Being rewritten elsewhere at the time of writing; configured, run them by name with MUTATE=...
MUTATION_TESTS_imt_cds/audit          := tests/test_audit_store.py tests/test_audit_replay.py
MUTATION_TESTS_imt_cds/service        := tests/test_service_auth.py tests/test_service_http.py
MUTATION_TESTS_imt_cds/fhir.py        := tests/test_fhir_input.py
MUTATION_TESTS_imt_cds/fhir_output.py := tests/test_fhir_output.py
MUTATE ?= imt_cds/validation.py imt_cds/conditions.py imt_cds/compiler.py imt_cds/assessment.py \
          imt_cds/assessment_json.py imt_cds/rule_loader.py

# One module's run: a fresh copy of the committed tree in $(MUTATION_DIR)/<module>, then its results.
define mutate_one
	rm -rf $(MUTATION_DIR)/$(notdir $(1)) && mkdir -p $(MUTATION_DIR)/$(notdir $(1))
	git archive HEAD | tar -x -C $(MUTATION_DIR)/$(notdir $(1))
	cd $(MUTATION_DIR)/$(notdir $(1)) && { $(abspath $(VENV))/bin/mutmut run --paths-to-mutate $(1) --tests-dir tests \
	    --runner "$(abspath $(PY)) -m pytest -x -q -p no:cacheprovider -m 'not slow' $(MUTATION_TESTS_$(1))" || true; \
	    $(abspath $(VENV))/bin/mutmut results; }

endef

mutation: $(STAMP)
	$(foreach module,$(MUTATE),$(call mutate_one,$(module)))
