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


@pytest.fixture(scope="session")
def rulebook():
    return load_rulebook()


@pytest.fixture(scope="session")
def engine(rulebook):
    return Engine(rulebook)
