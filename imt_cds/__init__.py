"""imt-cds: clinical decision support for inflammatory myofibroblastic tumor (IMT).

Decision *support* for a multidisciplinary team, never a prescription. Typical use::

    from imt_cds import evaluate
    assessment = evaluate({"age_years": 8, "tumor": {"resectability": "unresectable"},
                           "molecular": {"alk": {"status": "positive"}}})
    for finding in assessment.recommendations:
        print(finding.code, finding.summary)
    print(assessment.to_json(indent=True))

``Engine(rulebook)`` evaluates with another rulebook (e.g. an institution's parameters); ``load_rulebook`` loads
and checks one. Every error is an ``ImtCdsError``; invalid input raises ``InvalidInputError`` with every problem; the
errors a caller may meet are importable from here (the whole tree is in ``imt_cds.core.errors``).

The public names are imported on first use (module ``__getattr__``), not when the package is: every submodule
(the audit package, the renderers, the CDS Hooks service's server process) imports ``imt_cds`` first, and only
``core/engine.py`` loads durable-rules, which must stay out of processes that never evaluate.
"""

# Only underscored names are bound here besides the public ones: ``vars(imt_cds)`` is the public surface.
import importlib as _importlib
import typing as _typing

if _typing.TYPE_CHECKING:
    from .core.assessment import Assessment, DerivedFact, Finding, Reason, Suppression, TraceEntry
    from .core.engine import Engine, evaluate
    from .core.errors import (
        EngineError,
        EvidenceError,
        ImtCdsError,
        InputProblem,
        InvalidInputError,
        InvalidSettingError,
        NaiveDateTimeError,
        RulebookError,
        UnknownRuleError,
    )
    from .core.facts import PatientFacts
    from .core.rule_loader import load_rulebook
    from .core.rulebook import Rulebook
    from .core.validation import parse_facts, parse_facts_json

__all__ = [
    "Assessment",
    "DerivedFact",
    "Engine",
    "EngineError",
    "EvidenceError",
    "Finding",
    "ImtCdsError",
    "InputProblem",
    "InvalidInputError",
    "InvalidSettingError",
    "NaiveDateTimeError",
    "PatientFacts",
    "Reason",
    "Rulebook",
    "RulebookError",
    "Suppression",
    "TraceEntry",
    "UnknownRuleError",
    "evaluate",
    "load_rulebook",
    "parse_facts",
    "parse_facts_json",
]

# public name -> the submodule defining it (only "core.engine" loads durable-rules)
_HOMES = {
    "Assessment": "core.assessment",
    "DerivedFact": "core.assessment",
    "Finding": "core.assessment",
    "Reason": "core.assessment",
    "Suppression": "core.assessment",
    "TraceEntry": "core.assessment",
    "Engine": "core.engine",
    "evaluate": "core.engine",
    "EngineError": "core.errors",
    "EvidenceError": "core.errors",
    "ImtCdsError": "core.errors",
    "InputProblem": "core.errors",
    "InvalidInputError": "core.errors",
    "InvalidSettingError": "core.errors",
    "NaiveDateTimeError": "core.errors",
    "RulebookError": "core.errors",
    "UnknownRuleError": "core.errors",
    "PatientFacts": "core.facts",
    "load_rulebook": "core.rule_loader",
    "Rulebook": "core.rulebook",
    "parse_facts": "core.validation",
    "parse_facts_json": "core.validation",
}


def __getattr__(name: str) -> object:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(_importlib.import_module(f".{home}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
