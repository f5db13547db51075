"""How a fact's value and a finding's reason read in text.

One wording for every renderer (the consult note, the HTML report, the FHIR narratives, the CDS Hooks cards and
``rules why``), so that a reader who meets a rationale in the EHR and again in an audit report sees the same sentence.
Renderers that add markup (Markdown, HTML) escape these strings themselves.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["display_value", "reason_text"]


def display_value(value: Any) -> str:
    """A fact's value as a reader expects it: ``true``/``false``, ``3`` for 3.0, sets in braces, and "null" said
    to mean not recorded (the rules' own wording is ``= null``)."""
    if value is None:
        return "null (not recorded)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (list, tuple, set, frozenset)):
        return "{" + ", ".join(map(str, value)) + "}" if value else "{} (none recorded)"
    return str(value)


def reason_text(reason: Mapping[str, Any]) -> str:
    """One reason of a finding or derived fact, in its JSON form (``Reason.to_dict()``), as a sentence."""
    if "fact" in reason:
        parameter = f", parameter {reason['parameter']}" if reason.get("parameter") else ""
        return f"{reason['fact']} is {display_value(reason['actual'])} (rule needs {reason['expected']}{parameter})"
    if reason.get("holds"):
        why = f": {', '.join(reason['reasons'])}" if reason.get("reasons") else ""
        return f"{reason['derived']} holds{why}"
    return f"{reason['derived']} does not hold (required to be absent)"
