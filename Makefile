# The two commands of the README. Each creates .venv and installs what is missing on first use.
#   make demo   - evaluate the shipped example patients (the main job); installs the runtime only
#   make test   - run the whole test suite (what CI runs: .ci/run calls `make test`); adds the test extra, and first
#                 installs the system packages the tests need when missing (PostgreSQL, Chromium:
#                 tests/system_setup.sh, which never stops the run: what it cannot install is reported and skipped;
#                 under IMT_CDS_STRICT=1, as in CI, such a skip is a failure)
# Stamps: .venv/.interpreter (which Python built .venv: another PYTHON rebuilds it), .venv/.runtime (the package),
# .venv/.installed (the package with its test extra).
# Versions: both install the versions of .ci/constraints.txt, the set the suite last passed with, so that a release
# of a dependency cannot change a run unannounced; `make constraints` refreshes that file on purpose.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
INTERPRETER := $(VENV)/.interpreter
RUNTIME     := $(VENV)/.runtime
STAMP       := $(VENV)/.installed
CONSTRAINTS := .ci/constraints.txt
# The real interpreter behind PYTHON (through any venv's symlink) and its version: what the interpreter stamp holds.
PYTHON_ID = $(shell $(PYTHON) -c 'import os, sys; print(os.path.realpath(sys.executable), *sys.version_info[:3])' 2>/dev/null)

.PHONY: demo test bench clean constraints FORCE

# Always checked, rewritten only when PYTHON names another interpreter than the one that built .venv; the stamps
# below depend on it, so a rewrite rebuilds everything.
$(INTERPRETER): FORCE
	@$(PYTHON) -c 'import sys; v = sys.version_info[:2]; sys.exit(0 if (3, 11) <= v < (3, 13) else "imt-cds needs Python 3.11 or 3.12 (durable-rules does not import on 3.13); set PYTHON=python3.12 or similar")'
	@if [ "$$(cat $@ 2>/dev/null)" != "$(PYTHON_ID)" ]; then \
	    echo "creating $(VENV) with $(PYTHON_ID)"; \
	    rm -rf $(VENV) && $(PYTHON) -m venv $(VENV) && $(PY) -m pip install --quiet --upgrade pip \
	    && echo "$(PYTHON_ID)" > $@; \
	fi

$(RUNTIME): $(INTERPRETER) pyproject.toml $(CONSTRAINTS)
	$(PY) -m pip install --quiet -c $(CONSTRAINTS) -e .
	@touch $@

$(STAMP): $(RUNTIME)
	$(PY) -m pip install --quiet -c $(CONSTRAINTS) -e '.[test]'
	@touch $@

# The newest versions pyproject.toml's ranges allow, installed in a fresh environment and written to .ci/constraints.txt
# (its comment kept). Run `make test` afterwards: the next .venv install uses them.
CONSTRAINTS_VENV ?= /tmp/imt-cds-constraints-venv
constraints:
	rm -rf $(CONSTRAINTS_VENV) && $(PYTHON) -m venv $(CONSTRAINTS_VENV)
	$(CONSTRAINTS_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(CONSTRAINTS_VENV)/bin/python -m pip install --quiet -e '.[test]'
	grep '^#' $(CONSTRAINTS) > $(CONSTRAINTS).new
	$(CONSTRAINTS_VENV)/bin/python -m pip freeze --exclude-editable >> $(CONSTRAINTS).new
	mv $(CONSTRAINTS).new $(CONSTRAINTS) && rm -rf $(CONSTRAINTS_VENV)

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

# Mutation testing (slow; never part of `make test` or CI): tests/mutate.py makes mutmut 2.5.1's mutants of one module
# at a time, in a copy of the committed tree in MUTATION_DIR, and runs the tests that guard it against each (first
# those that execute the mutated statement, then, for a survivor, all of them). Each verdict is printed and appended to
# $(MUTATION_DIR)/results.jsonl; the summary is printed at the end.
#   make mutation                                       every module below, one after the other (hours on 2 cores)
#   make mutation MUTATE=imt_cds/core/conditions.py     one module;   MUTATION_IDS=3,8-12   only those mutants
# Equivalent survivors, and why: tests/mutation-survivors.md. Each module names the tests that guard it (whatever
# their tier); PYTHONPATH makes subprocesses the tests start (the imt-cds command, the service) use the mutated copy.
.PHONY: mutation
MUTATION_DIR ?= /tmp/imt-cds-mutation
MUTATION_TESTS_imt_cds/core/validation.py  := tests/test_validation_mutants.py tests/test_facts.py tests/test_untrusted_input.py \
    tests/test_cards_golden.py tests/test_lone_surrogates.py
MUTATION_TESTS_imt_cds/core/conditions.py  := tests/test_conditions_mutants.py tests/test_conditions.py tests/test_rulebook_loading.py tests/test_compiler.py
MUTATION_TESTS_imt_cds/core/compiler.py    := tests/test_compiler_mutants.py tests/test_compiler.py tests/test_engine.py \
    tests/test_rule_examples.py
MUTATION_TESTS_imt_cds/core/assessment.py  := tests/test_assessment.py tests/test_assessment_mutants.py \
    tests/test_audit_first_release.py tests/test_audit_release_stores.py tests/test_cards_from_rationale.py
MUTATION_TESTS_imt_cds/core/engine.py      := tests/test_engine.py tests/test_isolation.py tests/test_engine_mutants.py
MUTATION_TESTS_imt_cds/core/assessment_json.py := tests/test_assessment_json_mutants.py tests/test_assessment.py \
    tests/test_audit_first_release.py tests/test_audit_release_stores.py
MUTATION_TESTS_imt_cds/core/rule_loader.py := tests/test_rule_loader_mutants.py tests/test_rulebook_loading.py \
    tests/test_rulebook_structure.py tests/test_rule_metadata.py tests/test_audit_first_release.py \
    tests/test_audit_release_stores.py
MUTATION_TESTS_imt_cds/core/rule_schema.py := tests/test_rule_schema_mutants.py tests/test_rulebook_loading.py \
    tests/test_rulebook_structure.py tests/test_rule_metadata.py tests/test_audit_first_release.py \
    tests/test_audit_release_stores.py
MUTATION_TESTS_imt_cds/core/evidence.py    := tests/test_evidence_mutants.py tests/test_evidence.py
MUTATION_TESTS_imt_cds/core/_yaml.py       := tests/test_yaml_mutants.py tests/test_rulebook_loading.py \
    tests/test_rulebook_structure.py
MUTATION_TESTS_imt_cds/core/memo.py        := tests/test_memo_mutants.py tests/test_engine.py tests/test_api_hygiene.py -k cache
MUTATION_TESTS_imt_cds/core/wording.py     := tests/test_wording_mutants.py tests/test_wording.py tests/test_note_wording.py
MUTATION_TESTS_imt_cds/core/facts.py       := tests/test_facts_mutants.py tests/test_facts.py tests/test_untrusted_input.py
MUTATION_TESTS_imt_cds/core/terminology.py := tests/test_terminology_mutants.py tests/test_rulebook_structure.py \
    tests/test_fhir_input.py
MUTATION_TESTS_imt_cds/core/fact_fields.py := tests/test_fact_fields_mutants.py tests/test_facts.py \
    tests/test_untrusted_input.py tests/test_conditions.py tests/test_compiler.py
MUTATION_TESTS_imt_cds/core/rulebook.py   := tests/test_rulebook_mutants.py tests/test_rulebook_loading.py \
    tests/test_api_hygiene.py tests/test_rule_metadata.py
MUTATION_TESTS_imt_cds/core/errors.py     := tests/test_errors_mutants.py tests/test_api_hygiene.py \
    tests/test_engine_mutants.py tests/test_rule_metadata.py tests/test_fhir_safety.py tests/test_untrusted_input.py
MUTATION_TESTS_imt_cds/core/_resources.py := tests/test_resources_mutants.py tests/test_evidence.py \
    tests/test_rulebook_loading.py tests/test_api_hygiene.py
MUTATION_TESTS_imt_cds/audit/record.py := tests/test_record_mutants.py tests/test_audit_store.py \
    tests/test_audit_integrity.py -k 'not postgres'
MUTATION_TESTS_imt_cds/audit/checkpoint.py := tests/test_checkpoint_mutants.py tests/test_audit_checkpoints.py \
    -k 'not command_line and not exit_2 and not never_signed and not usage_error'
MUTATION_TESTS_imt_cds/fhir/reader.py        := tests/test_fhir_reader_mutants.py tests/test_fhir_input.py tests/test_fhir_safety.py \
    tests/test_fhir_invariants.py tests/test_fhir_codesystems.py tests/test_fhir_corpus.py tests/test_fhir_fuzz.py \
    tests/test_evaluate_fhir.py tests/test_fhir_order.py tests/test_fhir_equivalence.py
MUTATION_TESTS_imt_cds/render/fhir_output.py := tests/test_fhir_output_mutants.py tests/test_fhir_output.py \
    tests/test_audit_first_release.py tests/test_audit_release_stores.py
# The replica and restart tests exercise the replay cache's store, not auth.py, and take half a minute; the one
# test of test_service_audit_busy.py is the one that sees the replay cache's database calls kept off the event loop.
MUTATION_TESTS_imt_cds/service/auth.py := tests/test_auth_mutants.py tests/test_service_jwks.py tests/test_service_auth.py \
    tests/test_security_tokens.py \
    tests/test_service_audit_busy.py::test_with_authentication_the_token_check_waits_no_longer_than_the_store_timeout \
    -k 'not replicas and not restart'
# SQLite only (PostgreSQL runs the same archive and replay code), without the record-tampering tests of record.py.
MUTATION_TESTS_imt_cds/audit/archive.py := tests/test_archive_mutants.py tests/test_audit_archive.py tests/test_audit_replay.py \
    tests/test_audit_first_release.py tests/test_audit_release_stores.py tests/test_review_audit_hardening.py \
    tests/test_audit_integrity.py tests/test_audit_store.py \
    -k 'not postgres and not editing_any_column and not forged_record_of_any_shape and (replay or archive or compar \
    or rulebook or comment or renamed or edited_file or working_copies or altered_file or difference or withheld \
    or by_position)'
MUTATION_TESTS_imt_cds/audit/replay.py := tests/test_replay_mutants.py $(MUTATION_TESTS_imt_cds/audit/archive.py)
# The audit store: SQLite for the modules both backends share (PostgreSQL runs the same SQL through sql.py), and the
# PostgreSQL variants of the same tests for postgres.py (they start the real server, as in `make test`).
AUDIT_STORE_TESTS := tests/test_audit_store.py tests/test_audit_integrity.py tests/test_audit_reliability.py \
    tests/test_feedback_store.py
# store.py's record lookup and verify(checkpoints=...) are tested in the hardening and checkpoint files too (their
# command-line tests left out: they are slow and go through the same calls).
MUTATION_TESTS_imt_cds/audit/store.py    := tests/test_store_mutants.py $(AUDIT_STORE_TESTS) \
    tests/test_review_audit_hardening.py tests/test_audit_checkpoints.py \
    -k 'not postgres and not command_line and not exit_2 and not never_signed and not usage_error'
MUTATION_TESTS_imt_cds/audit/sql.py      := tests/test_sql_mutants.py tests/test_store_mutants.py $(AUDIT_STORE_TESTS) \
    -k 'not postgres'
MUTATION_TESTS_imt_cds/service/recorder.py := tests/test_service_recorder.py \
    tests/test_service_workers.py::test_with_an_audit_store_an_answer_comes_back_only_once_its_record_is_committed
MUTATION_TESTS_imt_cds/audit/sqlite.py   := tests/test_audit_small_modules.py $(AUDIT_STORE_TESTS) -k 'not postgres'
MUTATION_TESTS_imt_cds/audit/recorded.py := tests/test_audit_recorded.py tests/test_audit_first_release.py \
    tests/test_audit_release_stores.py $(AUDIT_STORE_TESTS) \
    -k 'not postgres'
MUTATION_TESTS_imt_cds/audit/backends.py := tests/test_audit_small_modules.py $(AUDIT_STORE_TESTS) -k 'not postgres'
MUTATION_TESTS_imt_cds/audit/locking.py  := tests/test_audit_small_modules.py $(AUDIT_STORE_TESTS) -k 'not postgres'
MUTATION_TESTS_imt_cds/audit/postgres.py := tests/test_audit_postgres_store.py $(AUDIT_STORE_TESTS) -k postgres
# The modules run whole with tests/mutate.py since (tests/mutation-survivors.md, one section each): the selections
# those runs used, their mutants' own test file first.
MUTATION_TESTS_imt_cds/service/replay_cache.py := tests/test_replay_cache_mutants.py tests/test_service_auth.py \
    tests/test_auth_mutants.py tests/test_security_tokens.py
MUTATION_TESTS_imt_cds/authoring/rulebook_diff.py := tests/test_rulebook_diff_mutants.py tests/test_authoring_tools.py -k diff
MUTATION_TESTS_imt_cds/authoring/coverage.py := tests/test_coverage_mutants.py tests/test_authoring_tools.py -k coverage
MUTATION_TESTS_imt_cds/authoring/explain.py := tests/test_explain_mutants.py tests/test_authoring_tools.py -k explain
MUTATION_TESTS_imt_cds/render/consult_note.py := tests/test_consult_note_golden.py tests/test_note_wording.py tests/test_cli.py
MUTATION_TESTS_imt_cds/render/cards.py := tests/test_cards_mutants.py tests/test_cards_golden.py tests/test_order_sign_cards.py \
    tests/test_wording.py tests/test_rule_metadata.py tests/test_cards_from_rationale.py
MUTATION_TESTS_imt_cds/service/order_sign.py := tests/test_order_sign_cards.py tests/test_service_cards.py \
    tests/test_service_requests.py tests/test_service_fhir_safety.py tests/test_rule_metadata.py
MUTATION_TESTS_imt_cds/service/prefetch.py := tests/test_prefetch_mutants.py tests/test_security_outbound.py \
    tests/test_service_requests.py tests/test_service_hook_path.py
MUTATION_TESTS_imt_cds/service/models.py := tests/test_models_mutants.py tests/test_service_requests.py \
    tests/test_lone_surrogates.py tests/test_cards_golden.py::test_the_request_check_is_the_models_verdict
MUTATION_TESTS_imt_cds/authoring/verification.py := tests/test_verification_mutants.py \
    $(foreach test,verify_holds_for_the_shipped_rulebook verify_fails_property_6_when_crizotinib_is_allowed_below_one_year \
    verify_reports_an_unreachable_rule verify_finds_a_two_patient_counterexample_to_monotonicity \
    verify_reports_a_redundant_rule the_checker_agrees_with_the_engine_on_concrete_patients,tests/test_authoring_tools.py::test_$(test))
MUTATION_TESTS_imt_cds/service/feedback.py := tests/test_feedback_writer.py tests/test_feedback_unwritable.py \
    tests/test_feedback_store.py tests/test_service_requests.py
MUTATION_TESTS_imt_cds/authoring/symbolic.py := tests/test_symbolic_mutants.py \
    tests/test_authoring_tools.py::test_the_checker_agrees_with_the_engine_on_concrete_patients \
    tests/test_verification_mutants.py tests/test_authoring_tools.py
MUTATION_TESTS_imt_cds/service/workers.py := tests/test_workers_mutants.py tests/test_service_workers.py \
    tests/test_lone_surrogates.py tests/test_app_mutants.py tests/test_service_audit_busy.py
MUTATION_TESTS_imt_cds/cli/evaluate.py := tests/test_evaluate_fhir.py tests/test_cli.py tests/test_cli_errors.py \
    tests/test_cli_wording.py
MUTATION_TESTS_imt_cds/cli/common.py := tests/test_evaluate_fhir.py tests/test_cli.py tests/test_cli_errors.py \
    tests/test_cli_wording.py
MUTATION_TESTS_imt_cds/service/app.py := tests/test_app_mutants.py tests/test_service_hook_path.py \
    tests/test_service_http.py tests/test_service_requests.py
MUTATION_TESTS_imt_cds/service/connections.py := tests/test_connections_mutants.py tests/test_service_limits.py \
    tests/test_service_hostile_clients.py
MUTATION_TESTS_imt_cds/render/report_html.py := tests/test_report_html_mutants.py tests/test_report_html.py \
    tests/test_wording.py -k 'not chromium'
MUTATION_TESTS_imt_cds/cli/audit.py := tests/test_audit_cli_mutants.py
MUTATION_TESTS_imt_cds/cli/rules.py := tests/test_rules_cli_mutants.py
MUTATION_TESTS_imt_cds/cli/main.py := tests/test_main_cli_mutants.py
# (not in MUTATE: a survivor costs a minute of server tests. Its parser is ids 1-150, mostly words of --help:
#  make mutation MUTATE=imt_cds/cli/serve.py MUTATION_IDS=1-150 MUTATION_TESTS_imt_cds/cli/serve.py=tests/test_serve_parser.py
#  takes seconds a mutant; its body is ids 151-211: make mutation MUTATE=imt_cds/cli/serve.py MUTATION_IDS=151-211)
MUTATION_TESTS_imt_cds/cli/serve.py := tests/test_serve_parser.py tests/test_serve_options.py \
    tests/test_service_limits.py tests/test_cli_errors.py
MUTATION_TESTS_imt_cds/cli/batch.py := tests/test_batch_cli_mutants.py tests/test_batch.py tests/test_cli.py \
    -k 'batch or jobs'
# The eight modules never run whole before (tests/mutation-survivors.md, "Modules never run whole before"): each
# selection starts with its in-process tests, so a survivor costs seconds, not a server's minute.
MUTATION_TESTS_imt_cds/service/calls.py := tests/test_service_cards.py tests/test_workers_mutants.py \
    tests/test_service_requests.py tests/test_service_http.py tests/test_service_fhir_safety.py tests/test_api_hygiene.py
MUTATION_TESTS_imt_cds/service/patient_view.py := tests/test_workers_mutants.py tests/test_service_http.py \
    tests/test_service_fhir_safety.py
MUTATION_TESTS_imt_cds/service/hooks.py := tests/test_app_mutants.py tests/test_service_hook_path.py tests/test_service_http.py \
    tests/test_service_fhir_safety.py tests/test_service_requests.py tests/test_service_cards.py
MUTATION_TESTS_imt_cds/service/errors.py := tests/test_service_errors.py tests/test_app_mutants.py tests/test_api_hygiene.py \
    tests/test_connections_mutants.py
MUTATION_TESTS_imt_cds/service/config.py := tests/test_config_mutants.py tests/test_app_mutants.py tests/test_api_hygiene.py
MUTATION_TESTS_imt_cds/core/drugs.py := tests/test_service_cards.py tests/test_order_sign_cards.py
MUTATION_TESTS_imt_cds/render/fhir_codesystems.py := tests/test_fhir_codesystems.py tests/test_fhir_invariants.py \
    tests/test_api_hygiene.py
MUTATION_TESTS_imt_cds/authoring/rule_examples.py := tests/test_rule_examples.py tests/test_rules_cli_mutants.py
MUTATION_TESTS_imt_cds/service/request_json.py := tests/test_service_requests.py tests/test_lone_surrogates.py \
    tests/test_cards_golden.py
MUTATE ?= imt_cds/core/validation.py imt_cds/core/conditions.py imt_cds/core/compiler.py imt_cds/core/engine.py \
          imt_cds/core/assessment.py imt_cds/core/assessment_json.py imt_cds/core/rule_loader.py \
          imt_cds/core/rule_schema.py imt_cds/core/evidence.py imt_cds/core/_yaml.py imt_cds/core/memo.py \
          imt_cds/core/wording.py imt_cds/core/facts.py imt_cds/core/terminology.py imt_cds/core/fact_fields.py \
          imt_cds/core/rulebook.py imt_cds/core/errors.py \
          imt_cds/core/_resources.py imt_cds/audit/record.py imt_cds/audit/checkpoint.py imt_cds/audit/archive.py \
          imt_cds/audit/replay.py imt_cds/audit/store.py imt_cds/audit/sql.py imt_cds/audit/sqlite.py \
          imt_cds/audit/recorded.py imt_cds/audit/backends.py imt_cds/audit/locking.py imt_cds/audit/postgres.py \
          imt_cds/service/auth.py imt_cds/service/recorder.py imt_cds/fhir/reader.py imt_cds/render/fhir_output.py \
          imt_cds/service/replay_cache.py imt_cds/authoring/rulebook_diff.py imt_cds/authoring/coverage.py \
          imt_cds/authoring/explain.py imt_cds/render/consult_note.py imt_cds/render/cards.py \
          imt_cds/service/order_sign.py imt_cds/service/prefetch.py imt_cds/service/models.py \
          imt_cds/service/feedback.py imt_cds/authoring/verification.py imt_cds/authoring/symbolic.py \
          imt_cds/service/workers.py imt_cds/cli/evaluate.py imt_cds/cli/common.py imt_cds/service/connections.py \
          imt_cds/service/app.py imt_cds/render/report_html.py imt_cds/cli/audit.py \
          imt_cds/cli/rules.py imt_cds/cli/batch.py imt_cds/cli/main.py imt_cds/service/calls.py \
          imt_cds/service/patient_view.py imt_cds/service/hooks.py imt_cds/service/errors.py \
          imt_cds/service/config.py imt_cds/core/drugs.py imt_cds/render/fhir_codesystems.py \
          imt_cds/authoring/rule_examples.py imt_cds/service/request_json.py

define mutate_one
	$(PY) tests/mutate.py $(1) --work $(MUTATION_DIR) --out $(MUTATION_DIR)/results.jsonl \
	    $(if $(MUTATION_IDS),--ids $(MUTATION_IDS)) -- $(MUTATION_TESTS_$(1))

endef

mutation: $(STAMP)
	@mkdir -p $(MUTATION_DIR) && rm -f $(MUTATION_DIR)/results.jsonl
	$(foreach module,$(MUTATE),$(call mutate_one,$(module)))
	$(PY) tests/mutate.py --report $(MUTATION_DIR)/results.jsonl

# The CDS Hooks service under load (real server, 1/16/64 clients, with and without JWT and audit) next to the
# in-process path; exits 1 when a target of the README's "Performance: the service" is missed (~3 min).
.PHONY: service-bench
service-bench: $(STAMP)
	$(PY) tests/benchmarks/service_bench.py
