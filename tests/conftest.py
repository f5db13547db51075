"""Shared fixtures and the Hypothesis profiles.

Profiles: ``dev`` (default; quick) and ``ci`` (``HYPOTHESIS_PROFILE=ci``, what ``make test`` and CI use: at least
500 examples per property). Set ``IMT_CDS_SWEEP`` to change the size of the seeded differential sweep.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

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
