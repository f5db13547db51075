"""The engine's protections where mutation testing found them unread (tests/mutation-survivors.md), on the real
durable-rules engine."""

from __future__ import annotations

import dataclasses
import gc

import pytest

import imt_cds
from imt_cds import Engine, EngineError
from imt_cds.core.engine import _DurableRuleset

ALK_ADVANCED = {"age_years": 8, "tumor": {"resectability": "unresectable"},
                "molecular": {"alk": {"status": "positive"}}}


def test_the_loop_guard_says_what_stopped_the_evaluation(rulebook):
    with pytest.raises(EngineError) as info:
        Engine(rulebook, max_firings=3).evaluate(ALK_ADVANCED)
    assert str(info.value) == ("rules engine failed; no result was produced: "
                               "loop guard: more than 3 rule firings in one evaluation")
    assert info.value.__cause__ is None  # a reason of ours, not an exception, caused it


def test_a_ruleset_durable_rules_refuses_is_an_engine_error_that_says_so(engine):
    program = engine.program
    broken = dataclasses.replace(program, ruleset={**program.ruleset, "broken": {"all": "not a list"}})
    with pytest.raises(EngineError) as info:
        _DurableRuleset(broken, max_firings=1_000)
    assert str(info.value).startswith("durable-rules rejected the compiled rulebook: ")
    assert "error code" in str(info.value)  # durable-rules' own reason follows


def test_a_ruleset_that_goes_away_frees_its_durable_rules_handle(engine):
    # durable-rules holds at most 131072 rulesets per process: an engine dropped must give its ruleset back. A freed
    # handle is refused by durable-rules itself (the one way to see it from outside; only this test reads it).
    import durable_rules_engine

    ruleset = _DurableRuleset(engine.program, max_firings=1_000)
    handle = ruleset._handle
    assert ruleset.run(imt_cds.parse_facts({"age_years": 3}))  # it works while it is held
    del ruleset
    gc.collect()
    with pytest.raises(durable_rules_engine.error, match="error code: 111"):
        durable_rules_engine.assert_fact(handle, '{"sid":"1","t":"probe"}')


def test_max_firings_allows_exactly_that_many_firings(rulebook, engine):
    # The trace numbers every firing (the internal anchor's too), so its last seq is how many rules fired.
    firings = engine.evaluate(ALK_ADVANCED).trace[-1].seq
    assert firings > 3
    assert Engine(rulebook, max_firings=firings).evaluate(ALK_ADVANCED).codes == engine.evaluate(ALK_ADVANCED).codes
    with pytest.raises(EngineError, match=f"loop guard: more than {firings - 1} rule firings"):
        Engine(rulebook, max_firings=firings - 1).evaluate(ALK_ADVANCED)


def test_the_provenance_names_the_versions_installed(engine):
    import platform
    from importlib import metadata

    from imt_cds.core.engine import installed_version

    assert engine.evaluate(ALK_ADVANCED).provenance.engine == {
        "imt_cds": metadata.version("imt-cds"),
        "durable_rules": metadata.version("durable-rules"),
        "python": platform.python_version(),
    }
    assert installed_version("durable-rules") == metadata.version("durable-rules")
    assert installed_version("no-such-distribution-installed") == "unknown"


def test_an_engine_with_an_audit_store_records_what_it_returns(rulebook, tmp_path):
    from imt_cds.audit import open_store

    with open_store(str(tmp_path / "audit.db")) as store:
        engine = Engine(rulebook, audit=store)
        assessment = engine.evaluate({"patient_id": "P-1", "age_years": 8})
        (record,) = store.records()
        assert record.patient_id == "P-1" and record.input_sha256 == assessment.input_sha256
        assert store.verify().ok


class _RefusingSink:
    """An audit sink that cannot record (a full disk, a lost database): ``append`` raises, as the protocol says."""

    def __init__(self):
        self.offered = 0

    def append(self, assessment):
        self.offered += 1
        raise OSError("no space left on device")


def test_an_assessment_that_could_not_be_recorded_is_not_returned(rulebook):
    sink = _RefusingSink()
    engine = Engine(rulebook, audit=sink)
    with pytest.raises(OSError, match="no space left on device"):
        engine.evaluate(ALK_ADVANCED)
    assert sink.offered == 1


@pytest.mark.parametrize("value", [-1, 2.5, "8", True, None])
def test_a_cache_size_that_is_not_a_whole_number_is_refused_naming_it(rulebook, value):
    from imt_cds.core.errors import InvalidSettingError

    with pytest.raises(InvalidSettingError) as info:
        Engine(rulebook, cache_size=value)
    assert str(info.value) == f"cache_size must be a whole number of assessments, 0 (no cache) or more, not {value!r}"
    assert info.value.name == "cache_size"


def test_the_fact_tests_that_hold_are_decided_by_the_engine(rulebook):
    # The probe behind "why not?" is built on first use and kept.
    engine = Engine(rulebook)
    positive = {(a.path, a.op, a.operand) for a in engine.true_conditions(ALK_ADVANCED)}
    assert ("molecular.alk.status", "is", "positive") in positive
    negative = {(a.path, a.op, a.operand)
                for a in engine.true_conditions({"molecular": {"alk": {"status": "negative"}}})}
    assert ("molecular.alk.status", "is", "positive") not in negative
    assert ("molecular.alk.status", "is", "negative") in negative
    assert engine.true_conditions(ALK_ADVANCED) == engine.true_conditions(ALK_ADVANCED)


def test_an_engine_shows_its_rulebook(rulebook):
    engine = Engine(rulebook)
    assert repr(engine) == (f"<Engine rulebook=imt {rulebook.version} sha256={rulebook.sha256[:12]} "
                            f"rules={len(engine.program.rules)}>")
