"""imt-cds: clinical decision support for inflammatory myofibroblastic tumor (IMT).

Decision *support* for a multidisciplinary team, never a prescription. Typical use::

    from imt_cds import evaluate
    assessment = evaluate({"age_years": 8, "tumor": {"resectability": "unresectable"},
                           "molecular": {"alk": {"status": "positive"}}})
    for finding in assessment.recommendations:
        print(finding.code, finding.summary)
    print(assessment.to_json(indent=True))

``Engine(rulebook)`` evaluates with another rulebook (e.g. an institution's parameters); ``load_rulebook`` loads
and checks one. Every error is an ``ImtCdsError``; invalid input raises ``InvalidInputError`` with every problem.
"""

from .assessment import Assessment, DerivedFact, Finding, Reason, Suppression, TraceEntry
from .engine import Engine, evaluate
from .errors import EngineError, EvidenceError, ImtCdsError, InputProblem, InvalidInputError, RulebookError
from .facts import PatientFacts
from .rule_loader import load_rulebook
from .rulebook import Rulebook
from .validation import parse_facts, parse_facts_json

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
    "PatientFacts",
    "Reason",
    "Rulebook",
    "RulebookError",
    "Suppression",
    "TraceEntry",
    "evaluate",
    "load_rulebook",
    "parse_facts",
    "parse_facts_json",
]
