"""The public surface keeps its promises: importing the package (or the audit trail, the renderers, the CDS Hooks
server process) never loads durable-rules; every error the package raises on purpose has a code of its own; and no
public module-level table can be changed by a caller."""

from __future__ import annotations

import dataclasses
import importlib
import json
import pkgutil
import re
import subprocess
import sys
from datetime import datetime

import pytest

import imt_cds
from imt_cds import Engine, evaluate
from imt_cds.core.errors import ImtCdsError, InvalidSettingError, NaiveDateTimeError, UnknownRuleError

# --- lazy imports ------------------------------------------------------------------------------------------------

# What a process that never evaluates imports: the package, the audit trail, the renderers, and everything the
# service's server process imports to build its app (the engine is loaded only by the worker processes).
NEVER_EVALUATING = (
    "imt_cds",
    "imt_cds.core.errors",
    "imt_cds.audit",
    "imt_cds.audit.recorded",
    "imt_cds.core.assessment_json",
    "imt_cds.render.consult_note",
    "imt_cds.render.fhir_output",
    "imt_cds.render.report_html",
    "imt_cds.core.wording",
    "imt_cds.render.cards",
    "imt_cds.render.fhir_codesystems",
    "imt_cds.fhir",
    "imt_cds.service",
    "imt_cds.service.app",
    "imt_cds.service.hooks",
    "imt_cds.service.auth",
    "imt_cds.service.feedback",
    "imt_cds.service.workers",
)

_PROBE = """
import importlib, json, sys
for name in {modules!r}:
    importlib.import_module(name)
from imt_cds.service.app import create_app
{then}
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in ("durable", "durable_rules_engine"))))
"""


def _durable_modules_after(then: str = "") -> list[str]:
    script = _PROBE.format(modules=NEVER_EVALUATING, then=then)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_importing_the_package_the_audit_trail_the_renderers_and_the_server_never_loads_durable_rules():
    assert _durable_modules_after() == []


def test_durable_rules_is_loaded_once_an_evaluation_is_asked_for():
    # The other side of the probe above: the same check does see the engine when it is loaded.
    assert "durable_rules_engine" in _durable_modules_after("import imt_cds; imt_cds.evaluate")


def test_every_public_name_is_still_importable_from_the_package():
    for name in imt_cds.__all__:
        value = getattr(imt_cds, name)
        assert value is not None, name
        assert name in dir(imt_cds), name
    assert imt_cds.Engine is importlib.import_module("imt_cds.core.engine").Engine
    assert imt_cds.evaluate is evaluate and imt_cds.Engine is Engine
    with pytest.raises(AttributeError, match="no attribute 'Nothing'"):
        imt_cds.Nothing  # noqa: B018 - the look-up is the test


def test_every_error_the_readme_lists_for_callers_is_importable_from_the_package():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    sentence = " ".join(readme.split("Every error is an `ImtCdsError` (", 1)[1].split(")", 1)[0].split())
    listed = re.findall(r"`(\w+)`", sentence)
    assert len(listed) >= 7, sentence
    errors = importlib.import_module("imt_cds.core.errors")
    for name in ("ImtCdsError", *listed):
        assert name in imt_cds.__all__, name
        assert getattr(imt_cds, name) is getattr(errors, name), name


# --- error codes -------------------------------------------------------------------------------------------------


def _all_modules() -> list[str]:
    names = ["imt_cds"]
    for info in pkgutil.walk_packages(imt_cds.__path__, "imt_cds."):
        if not info.name.endswith("__main__"):  # running it would run the command line
            names.append(info.name)
    return names


def _subclasses(cls: type) -> set[type]:
    found = set()
    for sub in cls.__subclasses__():
        found |= {sub} | _subclasses(sub)
    return found


def test_every_error_class_in_the_package_has_a_code_of_its_own():
    for name in _all_modules():
        importlib.import_module(name)
    errors = {cls for cls in _subclasses(ImtCdsError) if cls.__module__.startswith("imt_cds.")
              and not cls.__name__.startswith("_")}
    assert len(errors) > 20  # the walk did find the package's errors (the service's included)
    codes: dict[str, type] = {}
    for cls in errors:
        assert "code" in vars(cls), f"{cls.__qualname__} inherits its code {cls.code!r}"
        parents = {base.code for base in cls.__mro__[1:] if issubclass(base, ImtCdsError)}
        assert cls.code not in parents, f"{cls.__qualname__} repeats a parent's code {cls.code!r}"
        assert cls.code not in codes, f"{cls.__qualname__} and {codes[cls.code].__qualname__} share {cls.code!r}"
        codes[cls.code] = cls


def test_the_new_codes_are_drawn_in_the_errors_module_docstring():
    tree = importlib.import_module("imt_cds.core.errors").__doc__
    for cls in (NaiveDateTimeError, InvalidSettingError, UnknownRuleError):
        assert f'{cls.__name__}' in tree and f'"{cls.code}"' in tree


def test_a_naive_evaluated_at_is_refused_with_a_code_and_stays_a_value_error():
    with pytest.raises(NaiveDateTimeError) as raised:
        evaluate({"age_years": 8}, evaluated_at=datetime(2026, 1, 2, 3, 4, 5))
    assert isinstance(raised.value, ValueError) and raised.value.code == "naive_datetime"
    assert raised.value.name == "evaluated_at" and "timezone-aware" in str(raised.value)


@pytest.mark.parametrize("size", [-1, 2.5, True, "8"])
def test_a_cache_size_that_is_not_a_whole_number_of_zero_or_more_is_refused_with_a_code(size):
    with pytest.raises(InvalidSettingError) as raised:
        Engine(cache_size=size)
    assert isinstance(raised.value, ValueError) and raised.value.code == "invalid_setting"
    assert raised.value.name == "cache_size" and raised.value.value == size
    assert str(raised.value).startswith(f"cache_size must be a whole number of assessments, 0 (no cache) or more, "
                                        f"not {size!r}")


def test_a_memo_cache_refuses_a_capacity_below_one_with_a_code():
    from imt_cds.core.memo import MemoCache

    with pytest.raises(InvalidSettingError, match="capacity must be a whole number of entries, 1 or more, not 0"):
        MemoCache(0)


def test_an_unknown_rule_id_is_refused_with_a_code_and_a_suggestion_and_stays_a_key_error(rulebook):
    known = rulebook.rules[0].id
    assert rulebook.rule(known).id == known
    with pytest.raises(UnknownRuleError) as raised:
        rulebook.rule(known + "x")
    error = raised.value
    assert isinstance(error, KeyError) and error.code == "unknown_rule" and error.rule_id == known + "x"
    assert error.suggestion == known
    assert str(error) == f"the rulebook has no rule {known + 'x'!r} (did you mean {known!r}?)"
    with pytest.raises(KeyError):
        rulebook.rule("no such rule at all, nothing close")


# --- immutable public tables -------------------------------------------------------------------------------------

# Public module-level attributes allowed to be a mutable dict/list/set, and why.
MUTABLE_ALLOWED: set[tuple[str, str]] = set()


def test_no_public_module_level_table_can_be_changed_by_a_caller():
    mutable = set()
    for name in _all_modules():
        module = importlib.import_module(name)
        for attribute, value in vars(module).items():
            if not attribute.startswith("_") and isinstance(value, (dict, list, set, bytearray)):
                mutable.add((name, attribute))
    assert mutable == MUTABLE_ALLOWED  # equality: an allowance that is no longer needed is removed


def test_every_public_module_level_record_is_frozen():
    # The service definitions, their prefetch templates and the like are read by every request: a handler that
    # could assign to one would change what the service says for all calls after it.
    records = set()
    for name in _all_modules():
        for attribute, value in vars(importlib.import_module(name)).items():
            items = value if isinstance(value, tuple) else (value,)
            for item in items:
                if not attribute.startswith("_") and dataclasses.is_dataclass(item) and not isinstance(item, type):
                    records.add((name, attribute))
                    assert type(item).__dataclass_params__.frozen, f"{name}.{attribute}: {type(item).__name__}"
    assert ("imt_cds.service.calls", "SERVICES") in records and ("imt_cds.service.calls", "PATIENT") in records


def test_the_frozen_tables_still_read_as_before():
    from imt_cds import load_rulebook
    from imt_cds.core.rulebook import FINDING_PREFIXES
    from imt_cds.render.fhir_output import INDICATOR_PRIORITY

    genes = load_rulebook().terminology.genes
    assert FINDING_PREFIXES["REC_"] == "recommendation"
    assert len(INDICATOR_PRIORITY) == 3 and genes["HGNC:427"] == ("alk", "ALK")
    with pytest.raises(TypeError):
        genes["HGNC:1"] = ("x", "X")  # type: ignore[index]
    with pytest.raises(TypeError):
        FINDING_PREFIXES["X_"] = "anything"  # type: ignore[index]
