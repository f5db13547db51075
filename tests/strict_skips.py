"""Skips that must not pass unseen (a pytest plugin; tests/conftest.py loads its hooks).

A test skips when something outside Python is missing: the PostgreSQL server, Chromium, the shared project folder
beside the checkout. On a developer's machine that is a fact worth stating loudly at the end of the run; in CI it
means an install step is missing, so there (``IMT_CDS_STRICT=1``, set by ``.ci/run``) every skip is a failure.
"""

from __future__ import annotations

import os
from collections import Counter

import pytest

STRICT_VARIABLE = "IMT_CDS_STRICT"


def strict_mode() -> bool:
    # Read at each report, not at import: one process may run inner pytest sessions in either mode
    # (tests/test_tiers.py).
    return os.environ.get(STRICT_VARIABLE, "") not in ("", "0")


def _skip_reason(report: pytest.TestReport) -> str:
    if isinstance(report.longrepr, tuple):  # (file, line, "Skipped: reason")
        return str(report.longrepr[2]).removeprefix("Skipped: ")
    return str(report.longrepr)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if report.skipped and not hasattr(report, "wasxfail") and strict_mode():
        report.outcome = "failed"
        report.longrepr = (f"{STRICT_VARIABLE}=1: this test was skipped, which is a failure here (everything it "
                           f"needs must be installed): {_skip_reason(report)}")


def pytest_terminal_summary(terminalreporter, exitstatus, config):  # type: ignore[no-untyped-def]
    skipped = [r for r in terminalreporter.stats.get("skipped", []) if not hasattr(r, "wasxfail")]
    if not skipped:
        return
    reasons = Counter(_skip_reason(r) for r in skipped)
    terminalreporter.section(f"{len(skipped)} test{'s' if len(skipped) != 1 else ''} SKIPPED: "
                             "this run did not test everything", sep="!", red=True, bold=True)
    for reason, count in reasons.most_common():
        terminalreporter.write_line(f"  {count} x {reason}", yellow=True)
    terminalreporter.write_line("  Install what is missing (as root: bash tests/system_setup.sh) and run again; CI "
                                f"runs with {STRICT_VARIABLE}=1, where each of these skips is a failure.", bold=True)
