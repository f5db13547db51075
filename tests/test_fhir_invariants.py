"""Every FHIR R4 invariant that applies to the FHIR export, evaluated with ``fhirpathpy`` on every element of 20
exported Bundles (the 8 examples, exported from a real audit store, and 12 patients drawn with a fixed seed from
tests/strategies.py) and on the project's CodeSystems.

The invariants and element types come from the official R4 4.0.1 StructureDefinitions (``invariants.json`` in
tests/fixtures/fhir-r4-invariants/, with the script that extracted it and where from): 49 invariants over the 9
resource types the export and the CodeSystems use and the 55 data types reachable from them. The walk goes down every
resource with its StructureDefinition's element types (data types, backbone elements, ``contentReference`` such as
``RequestGroup.action.action``, choice types, resources inside ``Bundle.entry.resource``), evaluates on each element
the invariants of its element definition and of its data type (``ele-1`` on every element, ``ref-1`` on every
Reference, ``rqg-1`` on every action and sub-action, ...), and fails on any element the StructureDefinition does not
have. An invariant holds when its expression gives ``true``, or an empty result (as the FHIR validator reads it).

How many are checked: every one of the 49 is evaluated wherever its element occurs (about 15,600 evaluations).
24 apply to what the output holds, and ``test_the_invariants_that_matter_here_are_really_evaluated`` asserts that
each of them was evaluated to ``true`` at least once: ``ele-1``, ``dom-2``..``dom-6``, ``ext-1``, ``ref-1``,
``rqg-1``, ``txt-1``, ``txt-2``, ``bdl-1``..``bdl-5``, ``bdl-7``..``bdl-12``, ``csd-0``, ``csd-1``. The other 25
(``NEVER_FILLED``: Period, Quantity and its kinds, Range, Ratio, Timing, Attachment, Expression, DataRequirement,
TriggerDefinition, ContactPoint) belong to data types the export never fills, so there is nothing to evaluate them on;
the same test fails as soon as one of them applies without being evaluated.

Not checked by fhirpathpy alone: two FHIR-specific functions that ``fhirpathpy`` 2.x does not implement, supplied to
it here as user functions (``hasValue()`` per the FHIR spec's definition, used by ``ele-1``; ``htmlChecks()`` used by
``txt-1``/``txt-2``, implemented as the narrative rules of R4 §2.4: an XHTML ``div`` with the XHTML namespace, only
the allowed formatting elements and attributes, no scripts or event handlers, some non-whitespace text). No
invariant is skipped.
"""

from __future__ import annotations

import json
import random
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from fhirpathpy import apply_parsed_path
from fhirpathpy.engine.nodes import ResourceNode
from fhirpathpy.models import models
from fhirpathpy.parser import parse
from strategies import random_patient

from imt_cds import Engine
from imt_cds.audit import open_store
from imt_cds.render.fhir_codesystems import code_systems
from imt_cds.render.fhir_output import assessment_bundle

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.json"))
INVARIANTS = json.loads((Path(__file__).parent / "fixtures" / "fhir-r4-invariants" / "invariants.json").read_text())
GENERATED = 12
XHTML = "{http://www.w3.org/1999/xhtml}"
# R4 §2.4 (Narrative): the formatting elements of HTML 4.0 chapters 7-11 and 15, <a>, images, tables and lists.
NARRATIVE_ELEMENTS = frozenset(
    "a abbr acronym address b big blockquote br caption cite code col colgroup dd dfn div dl dt em h1 h2 h3 h4 h5 h6 "
    "hr i img kbd li ol p pre q samp small span strong sub sup table tbody td tfoot th thead tr tt ul var".split())
NARRATIVE_ATTRIBUTES = frozenset(
    "abbr accesskey align alt axis bgcolor border cellhalign cellpadding cellspacing cellvalign char charoff charset "
    "class colspan compact dir frame headers height href hreflang id lang name nowrap rel rev rowspan rules scope "
    "shape span src start style summary tabindex title type valign value width".split())
# The invariants of data types the export never fills (no Period, Quantity, Timing, Range, Ratio, Attachment,
# Expression, DataRequirement, TriggerDefinition, ContactPoint anywhere): nothing to evaluate them on. Every other
# one of the 49 must be evaluated, to true, somewhere in the 20 Bundles or the CodeSystems.
NEVER_FILLED = frozenset({"age-1", "att-1", "cnt-3", "cpt-2", "dis-1", "drq-1", "drq-2", "drt-1", "exp-1", "per-1",
                          "qty-3", "rat-1", "rng-2", "tim-1", "tim-2", "tim-4", "tim-5", "tim-6", "tim-7", "tim-8",
                          "tim-9", "tim-10", "trd-1", "trd-2", "trd-3"})


def html_checks(inputs: list[Any]) -> bool:
    """``htmlChecks()``: the R4 narrative rules (txt-1, txt-2) for one ``div``."""
    if len(inputs) != 1 or not isinstance(inputs[0], str):
        return False
    try:
        div = ET.fromstring(inputs[0])
    except ET.ParseError:
        return False
    if div.tag != f"{XHTML}div":
        return False
    for element in div.iter():
        if not element.tag.startswith(XHTML) or element.tag[len(XHTML):] not in NARRATIVE_ELEMENTS:
            return False
        if any(name not in NARRATIVE_ATTRIBUTES or name.startswith("on") for name in element.attrib):
            return False
    return bool("".join(div.itertext()).strip())


def has_value(inputs: list[Any]) -> bool:
    """``hasValue()`` (FHIR): one item, a primitive with a value (not a complex element)."""
    return len(inputs) == 1 and not isinstance(inputs[0], dict | list) and inputs[0] is not None


OPTIONS = {"userInvocationTable": {"hasValue": {"fn": has_value}, "htmlChecks": {"fn": html_checks}},
           "traceFn": lambda label, value: None}  # ref-1 and dom-3 call trace(): keep it quiet


class InvariantChecker:
    """Walks resources with their R4 element types and evaluates every invariant on every element."""

    def __init__(self) -> None:
        self.definitions = INVARIANTS["definitions"]
        self.parsed = {key: parse(c["expression"]) for key, c in INVARIANTS["constraints"].items()}
        self.model = models["r4"]
        self.true: Counter[str] = Counter()  # invariant -> evaluations that gave true
        self.evaluations = 0
        self.violations: list[str] = []

    def resource(self, resource: dict[str, Any], root: dict[str, Any] | None = None, where: str = "") -> None:
        kind = resource.get("resourceType")
        if kind not in self.definitions:
            self.violations.append(f"{where}: resource type {kind!r} not among {INVARIANTS['resource_types']}")
            return
        where = where or f"{kind}/{resource.get('id')}"
        context = {"resource": resource, "rootResource": root or resource}
        self._node(resource, kind, kind, self._keys(kind, kind), context, where)

    def _keys(self, definition: str, path: str) -> list[str]:
        return list(self.definitions[definition]["elements"][path].get("constraints", []))

    def _node(self, value: Any, definition: str, path: str, keys: list[str], context: dict[str, Any],
              where: str, walk: bool = True) -> None:
        base = path if "." in path else definition
        for key in dict.fromkeys(keys):
            self.evaluations += 1
            try:
                result = apply_parsed_path(ResourceNode.create_node(value, base), self.parsed[key], context,
                                           self.model, OPTIONS)
            except Exception as exc:  # noqa: BLE001 - any failure to evaluate is a failure of this test
                self.violations.append(f"{where}: {key} could not be evaluated: {exc}")
                continue
            if result == [True]:
                self.true[key] += 1
            elif result != []:
                constraint = INVARIANTS["constraints"][key]
                self.violations.append(f"{where}: {key} ({constraint['severity']}) fails: {constraint['human']} "
                                       f"[{constraint['expression']}] gave {result}")
        if not walk or not isinstance(value, dict):
            return
        for name, child in value.items():
            if name == "resourceType" and "." not in path:
                continue
            found = self._child(definition, path, name)
            if found is None:
                self.violations.append(f"{where}.{name}: no such element in R4 {definition} at {path}")
                continue
            child_path, type_code = found
            element = self.definitions[definition]["elements"][child_path]
            many = element["max"] != "1"
            if many != isinstance(child, list):
                self.violations.append(f"{where}.{name}: {'a list' if many else 'one value'} expected")
                continue
            for index, item in enumerate(child if many else [child]):
                self._typed(item, definition, child_path, type_code, context,
                            f"{where}.{name}" + (f"[{index}]" if many else ""))

    def _child(self, definition: str, path: str, name: str) -> tuple[str, str] | None:
        elements = self.definitions[definition]["elements"]
        direct = elements.get(f"{path}.{name}")
        if direct is not None:
            types = direct["types"] or ["BackboneElement"]  # a contentReference has no type of its own
            return f"{path}.{name}", types[0]
        for candidate, element in elements.items():
            if candidate.startswith(f"{path}.") and candidate.endswith("[x]") and "." not in candidate[len(path) + 1:]:
                stem = candidate[len(path) + 1:-3]
                for type_code in element["types"]:
                    if name == stem + type_code[0].upper() + type_code[1:]:
                        return candidate, type_code
        return None

    def _typed(self, value: Any, definition: str, path: str, type_code: str, context: dict[str, Any],
               where: str) -> None:
        element = self.definitions[definition]["elements"][path]
        keys = self._keys(definition, path)
        if "contentReference" in element:  # e.g. RequestGroup.action.action: the same definition as the target
            target = element["contentReference"].lstrip("#")
            self._node(value, definition, target, keys + self._keys(definition, target), context, where)
        elif type_code in ("BackboneElement", "Element") and any(p.startswith(f"{path}.")
                                                                 for p in self.definitions[definition]["elements"]):
            self._node(value, definition, path, keys, context, where)
        elif type_code == "Resource":
            contained = path.endswith(".contained")
            self._node(value, definition, path, keys, context, where, walk=False)  # ele-1 on the element itself
            self.resource(value, root=context["rootResource"] if contained else None,
                          where=f"{where}({value.get('resourceType')})")
        elif type_code in self.definitions:
            self._node(value, type_code, type_code, keys + self._keys(type_code, type_code), context, where)
        elif type_code.startswith("http://hl7.org/fhirpath/System."):
            pass  # the raw value of an id, url or primitive: no invariant is defined on it
        else:
            self.violations.append(f"{where}: type {type_code} has no definition in invariants.json")


@pytest.fixture(scope="module")
def bundles(tmp_path_factory, rulebook):
    """The 8 examples through a real (SQLite) audit store, and 12 seeded generated patients evaluated live."""
    db = tmp_path_factory.mktemp("fhir-invariants") / "audit.db"
    with open_store(db) as store:
        engine = Engine(rulebook, audit=store)
        for path in EXAMPLES:
            engine.evaluate(json.loads(path.read_text()))
        exported = [assessment_bundle(r.assessment, audit_record=r.chain_ref()) for r in store.records()]
    engine = Engine(rulebook)
    rng = random.Random(20240609)
    for number in range(GENERATED):
        document = engine.evaluate(random_patient(rng)).to_dict()
        exported.append(assessment_bundle(document, request_id=f"generated-{number}"))
    assert len(exported) == len(EXAMPLES) + GENERATED == 20
    return exported


@pytest.fixture(scope="module")
def checked(bundles, rulebook):
    checker = InvariantChecker()
    for index, bundle in enumerate(bundles):
        checker.resource(bundle, where=f"bundle[{index}]")
    for system in code_systems(rulebook):
        checker.resource(system)
    return checker


def test_every_r4_invariant_holds_on_every_element_of_20_exported_bundles_and_the_code_systems(checked):
    assert not checked.violations, "\n".join(checked.violations[:40])


def test_the_invariants_that_matter_here_are_really_evaluated(checked):
    assert len(INVARIANTS["constraints"]) == 49
    evaluated = set(checked.true)
    assert evaluated == set(INVARIANTS["constraints"]) - NEVER_FILLED, sorted(evaluated ^ (set(INVARIANTS[
        "constraints"]) - NEVER_FILLED))
    assert len(evaluated) == 24
    assert checked.true["rqg-1"] >= 100 and checked.true["txt-1"] >= 100  # every action, every resource's narrative
    print(f"{len(evaluated)} of {len(INVARIANTS['constraints'])} R4 invariants evaluated to true at least once, "
          f"{checked.evaluations} evaluations: {sorted(evaluated)}")


def test_the_generated_patients_vary(bundles):
    """The drawn patients cover what the export does differently: no id, an id that is no FHIR id, flags, none."""
    subjects = set()
    for bundle in bundles:
        guidance = bundle["entry"][0]["resource"]
        subject = guidance.get("subject")
        subjects.add("none" if subject is None else "reference" if "reference" in subject else "identifier only")
    assert subjects == {"none", "reference", "identifier only"}
    kinds = Counter(entry["resource"]["resourceType"] for bundle in bundles for entry in bundle["entry"])
    assert kinds["DetectedIssue"] and kinds["CommunicationRequest"] and kinds["OperationOutcome"]


@pytest.mark.parametrize(("mutation", "expected"), [
    ("drop an action's resource", "rqg-1"),
    ("drop a narrative", "dom-6"),
    ("narrative without the XHTML namespace", "txt-1"),
    ("narrative with a script", "txt-1"),
    ("an empty narrative", "txt-2"),
    ("an unknown element", "no such element"),
    ("an extension with no value", "ext-1"),
    ("a reference to a contained resource that is not there", "ref-1"),
    ("two entries with one fullUrl", "bdl-7"),
    ("an empty element", "ele-1"),
    ("a sub-action with neither resource nor sub-actions", "rqg-1"),
])
def test_the_checker_catches_a_broken_bundle(bundles, mutation, expected):
    bundle = json.loads(json.dumps(bundles[1]))  # the ALK-positive example: actions, flags, subject
    resources = [entry["resource"] for entry in bundle["entry"]]
    group = next(r for r in resources if r["resourceType"] == "RequestGroup")
    if mutation == "drop an action's resource":
        del group["action"][0]["resource"]
    elif mutation == "drop a narrative":
        del resources[-1]["text"]
    elif mutation == "narrative without the XHTML namespace":
        group["text"]["div"] = "<div><p>text</p></div>"
    elif mutation == "narrative with a script":
        group["text"]["div"] = '<div xmlns="http://www.w3.org/1999/xhtml"><p>t</p><script>x()</script></div>'
    elif mutation == "an empty narrative":
        group["text"]["div"] = '<div xmlns="http://www.w3.org/1999/xhtml"><p> </p></div>'
    elif mutation == "an unknown element":
        group["intentional"] = True
    elif mutation == "an extension with no value":
        resources[0]["extension"][0].pop("valueUri")
    elif mutation == "a reference to a contained resource that is not there":
        group["author"] = {"reference": "#nowhere"}
    elif mutation == "two entries with one fullUrl":
        bundle["entry"][1]["fullUrl"] = bundle["entry"][0]["fullUrl"]
    elif mutation == "an empty element":
        group["note"][0] = {}
    elif mutation == "a sub-action with neither resource nor sub-actions":
        action = group["action"][0]
        action["action"] = [{"id": "sub", "title": "a sub-action", "action": [{"title": "proposes nothing"}]}]
        del action["resource"]
    checker = InvariantChecker()
    checker.resource(bundle)
    assert any(expected in violation for violation in checker.violations), checker.violations
