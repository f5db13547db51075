"""Shared fixtures, the Hypothesis profiles, the test tiers and the strict mode.

Profiles: ``dev`` (default; quick) and ``ci`` (``HYPOTHESIS_PROFILE=ci``, what ``make test`` and CI use: at least
500 examples per property). Set ``IMT_CDS_SWEEP`` to change the size of the seeded differential sweep.

Tiers (markers, given here at collection so that no test file has to remember them): ``system`` for the tests that
need a PostgreSQL server or Chromium, ``slow`` for the long ones (by module, below, or marked in the file), and
``fast`` for everything else: ``python -m pytest -m fast`` is the quick check while working.

Strict mode (``IMT_CDS_STRICT=1``, set by ``.ci/run``): a skipped test is a failure (``strict_skips.py``).
"""

from __future__ import annotations

import inspect
import os

import pytest
from hypothesis import HealthCheck, settings
from strict_skips import pytest_runtest_makereport, pytest_terminal_summary  # noqa: F401 - hooks, found by name

from imt_cds import Engine, load_rulebook

settings.register_profile("dev", max_examples=60, deadline=None)
settings.register_profile(
    "ci",
    max_examples=500,
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

IS_CI_PROFILE = os.environ.get("HYPOTHESIS_PROFILE") == "ci"


@pytest.fixture(scope="module")
def postgres_server():
    """A real PostgreSQL server for the module's tests (skipped where PostgreSQL cannot be installed)."""
    from audit_support import running_postgres

    with running_postgres() as server:
        yield server


@pytest.fixture(params=["sqlite", "postgres"])
def target(request, tmp_path):
    """An audit store location: once a new SQLite file, once a new database on the module's PostgreSQL server."""
    if request.param == "sqlite":
        return str(tmp_path / "audit.db")
    from audit_support import new_database

    return new_database(request.getfixturevalue("postgres_server"))


@pytest.fixture(scope="session")
def rulebook():
    return load_rulebook()


@pytest.fixture(scope="session")
def engine(rulebook):
    return Engine(rulebook)


# --- tiers ----------------------------------------------------------------------------------------------------------

# The fast tier: modules whose tests run in process, without servers, subprocesses or thousands of generated patients.
# A module joins it deliberately (new modules start in the slow tier), so that `-m fast` stays quick.
FAST_MODULES = frozenset({
    "test_assessment.py", "test_audit_store.py", "test_compiler.py", "test_engine.py", "test_evidence.py",
    "test_facts.py", "test_feedback_store.py", "test_fhir_input.py", "test_module_boundaries.py",
    "test_mutate_driver.py", "test_note_wording.py", "test_report_html.py", "test_rule_examples.py",
    "test_rulebook_loading.py", "test_untrusted_input.py", "test_vignettes.py", "test_wording.py",
})
# Tests of the fast modules that take seconds each (thousands of generated inputs): slow.
SLOW_TESTS = frozenset({
    "test_assessment.py::test_the_json_document_and_the_objects_describe_the_same_assessment",
    "test_compiler.py::test_the_result_does_not_depend_on_the_order_rules_are_defined_or_fire",
    "test_untrusted_input.py::test_any_json_value_gives_an_assessment_or_an_input_error",
})
# A test needs the system's PostgreSQL or Chromium when it uses one of these fixtures (or the PostgreSQL
# parametrisation of ``target``), or calls one of these helpers itself, or is marked ``system`` (it runs a script
# that starts one).
SYSTEM_FIXTURES = frozenset({"postgres_server"})
SYSTEM_HELPERS = ("running_postgres(", "chromium_screenshot(")


def needs_the_system(item: pytest.Item) -> bool:
    if item.get_closest_marker("system") is not None:
        return True
    if SYSTEM_FIXTURES & set(getattr(item, "fixturenames", ())):
        return True
    callspec = getattr(item, "callspec", None)
    if callspec is not None and callspec.params.get("target") == "postgres":
        return True
    function = getattr(item, "function", None)
    try:
        source = inspect.getsource(function) if function is not None else ""
    except (OSError, TypeError):
        source = ""
    return any(helper in source for helper in SYSTEM_HELPERS)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test gets exactly one tier: system, else slow (marked so, or outside the fast modules), else fast."""
    for item in items:
        if needs_the_system(item):
            item.add_marker(pytest.mark.system)
        elif item.get_closest_marker("slow") is None:
            fast = item.path.name in FAST_MODULES and f"{item.path.name}::{item.originalname}" not in SLOW_TESTS
            item.add_marker(pytest.mark.fast if fast else pytest.mark.slow)
