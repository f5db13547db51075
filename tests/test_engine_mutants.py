"""The engine's protections where mutation testing found them unread (tests/mutation-survivors.md), on the real
durable-rules engine."""

from __future__ import annotations

import dataclasses
import gc

import pytest

import imt_cds
from imt_cds import Engine, EngineError
from imt_cds.core.engine import _DurableRuleset

ALK_ADVANCED = {"age_years": 8, "tumor": {"resectability": "unresectable"}, "molecular": {"alk": {"status": "positive"}}}


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
