"""The engine wrapper's protections, exercised on the real durable-rules engine."""

from __future__ import annotations

import dataclasses
import pathlib
import re
import subprocess
import sys
import threading

import pytest

import imt_cds
from imt_cds import Engine, EngineError, InvalidInputError
from imt_cds.core.engine import _DurableRuleset

PACKAGE = pathlib.Path(imt_cds.__file__).parent
ALK_ADVANCED = {"age_years": 8, "tumor": {"resectability": "unresectable"},
                "molecular": {"alk": {"status": "positive"}}}


def test_only_the_engine_module_touches_durable():
    importers = sorted(
        path.name for path in PACKAGE.rglob("*.py")
        if re.search(r"^\s*(import|from)\s+durable", path.read_text(), flags=re.M)
    )
    assert importers == ["engine.py"]


def test_importing_the_package_has_no_side_effects():
    code = (
        "import threading, sys; before = threading.active_count(); "
        "import imt_cds, imt_cds.cli.main, imt_cds.core.engine, imt_cds.cli.batch, imt_cds.render.consult_note; "
        "assert threading.active_count() == before; assert 'durable.lang' not in sys.modules; print('ok')"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "ok"


def test_evaluating_starts_no_threads(engine):
    before = threading.active_count()
    Engine(engine.rulebook).evaluate(ALK_ADVANCED)
    assert threading.active_count() == before


def test_sessions_are_deleted_so_an_engine_outlives_the_1024_session_limit(engine):
    for i in range(3_000):
        engine.evaluate({"age_years": i % 100})
    assert "REC_CRIZOTINIB_ALK" in engine.evaluate(ALK_ADVANCED).codes


def test_the_loop_guard_stops_a_runaway_evaluation_and_fails_closed(rulebook):
    guarded = Engine(rulebook, max_firings=3)
    with pytest.raises(EngineError, match="loop guard"):
        guarded.evaluate(ALK_ADVANCED)
    with pytest.raises(EngineError, match="loop guard"):  # the failed session was cleaned up: same result again
        guarded.evaluate(ALK_ADVANCED)


def test_an_error_inside_an_action_fails_the_evaluation_and_the_engine_recovers(engine):
    # Make D01's action assert a fact the engine cannot parse: the error is raised inside the action, which
    # durable-rules would swallow; the wrapper must turn it into an EngineError and still clean the session.
    program = engine.program
    broken_rule = dataclasses.replace(program.rules["D01.0"], asserts=('{"sid":"%s", not json',))
    broken = dataclasses.replace(program, rules={**program.rules, "D01.0": broken_rule})
    ruleset = _DurableRuleset(broken, max_firings=1_000)
    patient = imt_cds.parse_facts({"age_years": 3})
    with pytest.raises(EngineError, match="no result was produced"):
        ruleset.run(patient)
    # Recovered: a patient D01 does not fire on gets the firings an intact ruleset gives (not merely the same twice)
    other = imt_cds.parse_facts({"tumor": {"size_cm": 6.0}, "molecular": {"alk": {"status": "positive"}}})
    intact = _DurableRuleset(program, max_firings=1_000).run(other)
    assert "D01.0" not in [name for name, _ in intact] and len(intact) > 3
    assert ruleset.run(other) == intact


def test_invalid_input_raises_the_input_error_and_evaluates_nothing(engine):
    with pytest.raises(InvalidInputError) as info:
        engine.evaluate({"age_years": -3, "molecular": {"alk": {"status": "maybe"}}})
    assert {p.path for p in info.value.problems} == {"age_years", "molecular.alk.status"}


def test_numbers_at_the_edges_of_their_ranges_evaluate(engine):
    for age in (0.0, 5e-324, 1e-9, 0.9999999999999999, 1.0, 39.000000000000004, 120.0):
        for size in (5e-324, 1e-7, 3.9, 3.9000000000000004, 100.0):
            codes = engine.evaluate({"age_years": age, "tumor": {"size_cm": size}}).codes
            assert ("RISK_TUMOR_SIZE_ABOVE_COHORT_MEDIAN" in codes) == (size > 3.9)
            assert ("FLAG_AGE_OUTSIDE_EVIDENCE_RANGE" in codes) == (age > 39)


def test_two_engines_with_different_rulebooks_stay_independent(tmp_path, engine):
    from rulebook_copies import copy_rulebook, set_parameters

    directory = copy_rulebook(tmp_path)
    set_parameters(directory, {"size_risk_threshold_cm": 10.0})
    other = Engine(directory)
    patient = {"tumor": {"size_cm": 6.0}}
    for _ in range(3):
        assert "RISK_TUMOR_SIZE_ABOVE_COHORT_MEDIAN" in engine.evaluate(patient).codes
        assert "RISK_TUMOR_SIZE_ABOVE_COHORT_MEDIAN" not in other.evaluate(patient).codes
    assert other.rulebook.sha256 != engine.rulebook.sha256


def test_the_default_engine_is_built_once(engine):
    from imt_cds.core.engine import default_engine

    assert default_engine() is default_engine()
    assert imt_cds.evaluate(ALK_ADVANCED).codes == engine.evaluate(ALK_ADVANCED).codes


def test_a_cached_result_is_identical_to_a_fresh_one(rulebook, engine):
    import json
    import random

    from helpers import without_time
    from strategies import random_patient

    cached = Engine(rulebook, cache_size=64)
    rng = random.Random(12)
    patients = [random_patient(rng) for _ in range(40)]
    for patient in patients + patients[::-1] + patients:
        hit_or_miss = cached.evaluate(patient)
        fresh = engine.evaluate(patient)
        assert json.dumps(without_time(hit_or_miss)) == json.dumps(without_time(fresh))
        assert [f.to_dict() for f in hit_or_miss.findings] == [f.to_dict() for f in fresh.findings]
    stats = cached.cache_stats()
    assert stats.misses == 40 and stats.hits == 80 and stats.size == 40
    assert engine.cache_stats() is None


def test_a_cache_hit_carries_its_own_evaluation_time(rulebook):
    from datetime import datetime, timezone

    cached = Engine(rulebook, cache_size=4)
    first = cached.evaluate(ALK_ADVANCED, evaluated_at=datetime(2026, 1, 1, tzinfo=timezone.utc))
    second = cached.evaluate(ALK_ADVANCED, evaluated_at=datetime(2026, 6, 1, tzinfo=timezone.utc))
    assert cached.cache_stats().hits == 1
    assert first.provenance.evaluated_at.startswith("2026-01-01")
    assert second.provenance.evaluated_at.startswith("2026-06-01")
    assert '"evaluated_at":"2026-06-01' in second.to_json()


def test_the_cache_is_bounded(rulebook):
    cached = Engine(rulebook, cache_size=5)
    for age in range(50):
        cached.evaluate({"age_years": age})
    assert cached.cache_stats().size == 5
