"""The frozen outputs of the service's per-request rendering and request checks (tests/test_cards_golden.py).

    python tests/cards_golden.py --write   # regenerate tests/fixtures/cards-golden/golden.json.gz (a deliberate act)

What is frozen, each with its input stored next to it (so the file tests the renderer and the checks alone: a change
of the rulebook, the engine or the FHIR reader does not touch it):

- the patient-view cards exactly as the service answers them (``assessment_cards``, the ``problems_card`` put
  first, ``sort_cards``), for the service benchmark's generated charts, the shipped FHIR example, the published
  FHIR charts of tests/fixtures/fhir-charts read as if the IMT diagnosis were attested, the example patients,
  seeded random patients (contradictory records, suppressed findings), and documents edited to carry Markdown
  specials, URLs, line breaks, old documents without ``indicator``, several derivations of one fact, reasons that
  do not hold;
- ``problems_card`` with ``paths`` (as order-sign calls it), ``conflict_card``, ``not_eligible_card``, and the
  helpers order-sign shares (``escape_markdown``, ``fact_line``, ``evidence_lines``, ``citation_links``,
  ``card_summary``) on a corpus of awkward text;
- ``parse_request_json`` + ``check_request`` on the published CDS Hooks requests and on bodies each wrong in one
  way: the parsed value or the exact refusal (message and details).

The file was written by the code before the rendering and the request checks were made fast; regenerate it only
when an output is meant to change, and say so in the commit.
"""

from __future__ import annotations

import base64
import copy
import json
import random
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "fixtures" / "cards-golden" / "golden.json.gz"
JSON_INDENT = 0  # how the file was first written: a rewrite of unchanged cases changes no byte
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "benchmarks"))

import golden_files  # noqa: E402

PUBLIC_URL = "https://cds.example.test"
NASTY = [
    "plain words", "", " ", "a*b_c`d", "[link](http://evil.test/x)", "![img](x)", "<script>alert(1)</script>",
    "&amp; &#x41;", "# heading", "+ item", "1. item", "> quote", "pipe | table ~strike~", "line\nbreak\r\n\tand tab",
    "sep\u2028para\u2029end\x7f\x00", "www.example.com and WWW.EXAMPLE.COM", "https://a.test/b?c=d", "ftp://x",
    "HTTP://UPPER", "back\\slash \\*", "{braces} (parens) [brackets]", "émigré — ≥ 5 µg", "日本語", "x" * 300,
    "PMID 12345678. PMC1234567; doi: 10.1000/xyz.abc), (PMID:98765)", "www.", "://", "w ww.x", "a_b_c__d",
]


# --- inputs -------------------------------------------------------------------------------------------------------


EVALUATED_AT = "2026-06-01T09:00:00Z"  # every input's evaluation time: a rewrite of unchanged cases changes no byte


def _strip(document: dict[str, Any]) -> dict[str, Any]:
    """The document without the trace (the cards never read it; it is most of the size), evaluated at
    ``EVALUATED_AT``."""
    stripped = {k: v for k, v in document.items() if k != "trace"}
    stripped["provenance"] = {**stripped["provenance"], "evaluated_at": EVALUATED_AT}
    return stripped


def _fragment_json(answer: dict[str, Any]) -> dict[str, Any]:
    import orjson

    return orjson.loads(orjson.dumps(answer))


def build_card_inputs() -> list[dict[str, Any]]:
    import service_bench as sb
    from service_support import example_resources

    from imt_cds import Engine
    from imt_cds.service.workers import WorkerSettings, _Handler
    from strategies import random_patient

    handler = _Handler(WorkerSettings(cache_size=0))
    on = "2026-06-01"
    rng = random.Random(20261203)
    cases: list[dict[str, Any]] = []

    def add_chart(name: str, resources: list[dict[str, Any]], patient_id: str | None, attested: bool) -> None:
        try:
            answer = _fragment_json(handler.handle({"op": "assess", "resources": resources, "on": on,
                                                    "patient_id": patient_id, "attested": attested}))
        except Exception:  # a chart the reader refuses outright is no card input
            return
        if answer.get("refused") or answer.get("assessment") is None:
            return
        cases.append({"name": name, "document": _strip(answer["assessment"]),
                      "evaluation_id": f"00000000-0000-4000-8000-{len(cases):012d}",
                      "sources": answer["fhir"]["sources"], "problems": answer["fhir"]["problems"]})

    for index in range(0, 32, 2):
        add_chart(f"bench chart {index}", sb.chart(index), sb.PATIENT, False)
    for index in range(4):
        add_chart(f"bench chart {index}, unique size", sb.chart(index, unique=12345 + index), sb.PATIENT, False)
    add_chart("shipped FHIR example", example_resources(), "imt-example-1", False)
    for path in sorted((ROOT / "tests" / "fixtures" / "fhir-charts").glob("*.json")):
        if path.name.startswith("_"):
            continue
        data = json.loads(path.read_text())
        resources = ([e.get("resource") for e in data.get("entry", []) if isinstance(e, dict) and e.get("resource")]
                     if data.get("resourceType") == "Bundle" else [data])
        patients = [r.get("id") for r in resources if isinstance(r, dict) and r.get("resourceType") == "Patient"]
        add_chart(f"fhir-charts {path.name}, attested", resources, patients[0] if patients else None, True)

    engine = Engine()

    def add_facts(name: str, facts: dict[str, Any]) -> None:
        document = json.loads(engine.evaluate(facts).to_json())
        paths = _leaf_paths(facts)
        sources = {p: [f"Observation/{p.replace('.', '-')}"] for p in paths[::2]}
        problems = [{"where": f"Observation/bad-{p}", "message": f"a value for {p} could not be used (units)",
                     "severity": "warning", "path": p, "kind": rng.choice(["malformed", "conflict", "superseded"])}
                    for p in paths[1::5]]
        cases.append({"name": name, "document": _strip(document),
                      "evaluation_id": f"00000000-0000-4000-8000-{len(cases):012d}",
                      "sources": sources, "problems": problems})

    for path in sorted((ROOT / "examples").glob("*.json")):
        add_facts(f"example {path.name}", json.loads(path.read_text()))
    for line_no, line in enumerate((ROOT / "examples" / "patients.ndjson").read_text().splitlines()):
        if line.strip():
            add_facts(f"patients.ndjson line {line_no + 1}", json.loads(line))
    for index in range(24):
        add_facts(f"random patient {index}", random_patient(rng))

    cases += _edited_cases(cases, rng)
    return cases


def _leaf_paths(facts: Any, prefix: str = "") -> list[str]:
    if isinstance(facts, dict):
        return [p for k, v in facts.items() for p in _leaf_paths(v, f"{prefix}{k}.")]
    return [prefix[:-1]]


def _edited_cases(cases: list[dict[str, Any]], rng: random.Random) -> list[dict[str, Any]]:
    """Documents edited to reach every branch of the renderer with awkward text."""
    edited = []
    rich = [c for c in cases if c["document"]["recommendations"] or c["document"]["risk_flags"]]
    for index, base in enumerate(rich[:12]):
        case = copy.deepcopy(base)
        case["name"] = f"edited {index}: markup in every text ({base['name']})"
        document = case["document"]
        for finding in [*document["recommendations"], *document["risk_flags"]]:
            finding["title"] = rng.choice(NASTY) + " " + finding["title"]
            finding["strength"] = rng.choice(NASTY)
            finding["summary"] = rng.choice(NASTY) + finding["summary"] + rng.choice(NASTY) * rng.randint(0, 3)
            if index % 3 == 0:
                finding.pop("indicator", None)  # a document from before findings carried their indicator
            for entry in finding["evidence"]:
                entry["citation"] = rng.choice(NASTY) + " " + (entry.get("citation") or "")
                if rng.random() < 0.4:
                    entry["quote"] = None if rng.random() < 0.5 else rng.choice(NASTY)
                entry["claim"] = rng.choice(NASTY)
                entry["level"] = rng.choice([None, "2b", "<1>", 3])
            for reason in finding["because"]:
                if "fact" in reason:
                    reason["expected"] = rng.choice(NASTY)
                    reason["actual"] = rng.choice([None, True, False, 0, 1.0, 2.5, "x*y", ["a", "b_c"], [], "<b>"])
                    if rng.random() < 0.3:
                        reason["parameter"] = rng.choice(["min_age`years", "param_x"])
        for fact in document["derived_facts"]:
            if rng.random() < 0.5:
                fact["reason"] = {"id": rng.choice(NASTY) or "id", "text": rng.choice([None, "", *NASTY])}
            for reason in fact["because"]:
                if "derived" in reason and reason.get("holds") and rng.random() < 0.5:
                    reason["reasons"] = [rng.choice(NASTY), rng.choice(NASTY)]
        if document["derived_facts"] and index % 2 == 0:  # one fact derived twice, by different reasons
            twin = copy.deepcopy(document["derived_facts"][0])
            twin["reason"] = {"id": "second_reason", "text": "a *second* way"}
            document["derived_facts"].append(twin)
            document["derived_facts"][0]["reason"] = {"id": "first_reason"}
        if index % 4 == 1 and document["derived_facts"]:  # a derived fact that cites itself: no endless unfolding
            first = document["derived_facts"][0]
            first["because"].append({"derived": first["name"], "holds": True})
        case["sources"] = {path: [rng.choice(NASTY), f"Observation/{index}"] if rng.random() < 0.5 else []
                           for path in case["sources"]}
        case["problems"] = [dict(p, where=rng.choice(NASTY), message=rng.choice(NASTY)) for p in case["problems"]]
        case["problems"].append({"where": "Bundle/x", "message": "no path", "severity": "information"})
        case["problems"].append({"where": "Observation/c", "message": "conflict", "severity": "error",
                                 "path": "age_years", "kind": "conflict"})
        edited.append(case)
    empty = copy.deepcopy(rich[0])
    empty["name"] = "no findings, no problems"
    empty["document"]["recommendations"] = []
    empty["document"]["risk_flags"] = []
    empty["problems"] = []
    edited.append(empty)
    bare = copy.deepcopy(rich[0])
    bare["name"] = "findings with no reasons and no evidence"
    for finding in [*bare["document"]["recommendations"], *bare["document"]["risk_flags"]]:
        finding["because"] = []
        finding["evidence"] = []
    edited.append(bare)
    return edited


# --- outputs ------------------------------------------------------------------------------------------------------


def render_cards(case: dict[str, Any]) -> dict[str, Any]:
    """What the service answers for a case (as ``HookRunner._patient_view``), and the other record cards."""
    from imt_cds.render.cards import (
        assessment_cards,
        conflict_card,
        not_eligible_card,
        problems_card,
        sort_cards,
    )

    evaluation_id = case["evaluation_id"]
    cards = assessment_cards(case["document"], evaluation_id=evaluation_id, sources=case["sources"],
                             public_url=PUBLIC_URL, problems=case["problems"])
    problems = problems_card(case["problems"], evaluation_id=evaluation_id)
    if problems is not None:
        cards.insert(0, problems)
    paths = sorted({p["path"] for p in case["problems"] if p.get("path")})[:2]
    return {
        "cards": sort_cards(cards),
        "problems_card(paths)": problems_card(case["problems"], evaluation_id=evaluation_id,
                                              paths=["age_years", *paths]),
        "problems_card(no paths)": problems_card(case["problems"], evaluation_id=evaluation_id, paths=[]),
        "conflict_card": conflict_card(case["problems"], evaluation_id=evaluation_id),
        "not_eligible_card": not_eligible_card(case["name"], evaluation_id=evaluation_id),
    }


def render_helpers() -> dict[str, Any]:
    from imt_cds.render.cards import card_summary, citation_links, escape_markdown, evidence_lines, fact_line

    values: list[Any] = [*NASTY, None, True, False, 0, -1, 1.0, 2.5, 1e20, ["a", "b*"], [], ("t",), {"k": 1}]
    sources = {"age_years": ["Patient/[x](y)", "Observation/ok"], "tumor.size_cm": []}
    evidence = [{"id": f"E{i}", "citation": text, "quote": text if i % 2 else None, "claim": text,
                 "level": [None, "1a", 2][i % 3], "verification": "verbatim"} for i, text in enumerate(NASTY)]
    return {
        "escape_markdown": [escape_markdown(v) for v in values],
        "fact_line": [fact_line(path, value, sources) for path in ("age_years", "tumor.size_cm", "a`b")
                      for value in values],
        "evidence_lines": evidence_lines(evidence),
        "citation_links": citation_links(evidence),
        "card_summary": [card_summary(t) for t in NASTY] + [card_summary("y" * n) for n in (138, 139, 140, 141)],
    }


def request_bodies() -> list[tuple[str, str, bytes]]:
    """(name, service id, body) of requests: the published ones and ones each wrong in one way."""
    import orjson
    import service_bench as sb

    published = ROOT / "tests" / "fixtures" / "cds-hooks"
    bodies: list[tuple[str, str, bytes]] = []
    for path in sorted(published.glob("*/*.json")):
        if path.name.startswith("_"):
            continue
        service = "imt-order-sign" if "order" in path.name else "imt-patient-view"
        bodies.append((f"published {path.parent.name}/{path.name}", service, path.read_bytes()))
    for index in (0, 5, 11):
        request = orjson.loads(sb.request_body(sb.chart(index)))
        request["hookInstance"] = f"00000000-0000-4000-8000-{index:012d}"  # (the benchmark's is random)
        bodies.append((f"bench chart {index}", "imt-patient-view", orjson.dumps(request)))
    good = {"hook": "patient-view", "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
            "context": {"patientId": "p1", "userId": "Practitioner/1"}, "prefetch": {"patient": None}}
    order = {"hook": "order-sign", "hookInstance": "i1",
             "context": {"patientId": "p1", "draftOrders": {"resourceType": "Bundle", "entry": []}}}

    def variant(name: str, **changes: Any) -> None:
        body = copy.deepcopy(good)
        for key, value in changes.items():
            target = body
            parts = key.split("__")
            for part in parts[:-1]:
                target = target[part]
            if value is _DROP:
                target.pop(parts[-1], None)
            else:
                target[parts[-1]] = value
        bodies.append((name, "imt-patient-view", json.dumps(body).encode()))

    variant("valid")
    variant("hook missing", hook=_DROP)
    variant("hook empty", hook="")
    variant("hook a number", hook=5)
    variant("hook of the other service", hook="order-sign")
    variant("hookInstance missing", hookInstance=_DROP)
    variant("hookInstance null", hookInstance=None)
    variant("hookInstance a list", hookInstance=["a"])
    variant("context missing", context=_DROP)
    variant("context a list", context=[1])
    variant("context a string", context="x")
    variant("patientId missing", context__patientId=_DROP)
    variant("patientId empty", context__patientId="")
    variant("patientId a number", context__patientId=7)
    variant("patientId true", context__patientId=True)
    variant("patientId non-ASCII", context__patientId="pâtient-ü")
    variant("patientId long", context__patientId="p" * 100)
    variant("userId null", context__userId=None)
    variant("userId a number", context__userId=1)
    variant("encounterId an object", context__encounterId={"a": 1})
    variant("context extra field", context__other={"x": [1, 2]})
    variant("fhirServer a number", fhirServer=3)
    variant("fhirServer null", fhirServer=None)
    variant("fhirServer text", fhirServer="https://fhir.test")
    variant("fhirAuthorization null", fhirAuthorization=None)
    variant("fhirAuthorization a string", fhirAuthorization="token")
    variant("fhirAuthorization complete", fhirAuthorization={"access_token": "t", "token_type": "Bearer",
                                                             "expires_in": 300, "scope": "patient/*.read",
                                                             "subject": "imt", "patient": "p1"})
    variant("fhirAuthorization no token", fhirAuthorization={"token_type": "Bearer"})
    variant("fhirAuthorization empty token", fhirAuthorization={"access_token": ""})
    variant("expires_in a float", fhirAuthorization={"access_token": "t", "expires_in": 3.0})
    variant("expires_in a bool", fhirAuthorization={"access_token": "t", "expires_in": True})
    variant("expires_in a string", fhirAuthorization={"access_token": "t", "expires_in": "300"})
    variant("expires_in huge", fhirAuthorization={"access_token": "t", "expires_in": 10 ** 30})
    variant("scope a list", fhirAuthorization={"access_token": "t", "scope": ["a"]})
    variant("fhirAuthorization extra", fhirAuthorization={"access_token": "t", "x": 1})
    variant("prefetch a list", prefetch=[])
    variant("prefetch null", prefetch=None)
    variant("extension a string", extension="x")
    variant("extension an object", extension={"urn:imt-cds:fhir-guidance": True})
    variant("many wrong at once", hook=_DROP, hookInstance=3, context__patientId=None, fhirServer=[],
            prefetch="x", extension=1)
    variant("extra top-level field", something={"else": True})
    bodies.append(("order-sign valid", "imt-order-sign", json.dumps(order).encode()))
    for name, edit in [("draftOrders missing", lambda o: o["context"].pop("draftOrders")),
                       ("draftOrders not a Bundle", lambda o: o["context"]["draftOrders"].update(resourceType="X")),
                       ("draftOrders no resourceType", lambda o: o["context"]["draftOrders"].pop("resourceType")),
                       ("draftOrders a list", lambda o: o["context"].update(draftOrders=[])),
                       ("order-sign patientId missing", lambda o: o["context"].pop("patientId")),
                       ("order-sign to patient-view", None)]:
        body = copy.deepcopy(order)
        if edit is not None:
            edit(body)
        bodies.append((name, "imt-patient-view" if edit is None else "imt-order-sign", json.dumps(body).encode()))
    raw = [
        ("not JSON", b"hello"), ("empty", b""), ("whitespace", b"  \n "), ("truncated", b'{"hook": "patient-view"'),
        ("trailing comma", b'{"a": 1,}'), ("trailing data", b'{"a": 1} x'), ("single quotes", b"{'a': 1}"),
        ("array", b"[1, 2]"), ("string", b'"x"'), ("number", b"5"), ("null", b"null"),
        ("duplicate top-level key", b'{"hook": "patient-view", "hook": "order-sign"}'),
        ("duplicate nested key", b'{"hook": "patient-view", "context": {"patientId": "a", "patientId": "b"}}'),
        ("duplicate in a list item", b'{"prefetch": {"x": [{"id": 1}, {"id": 2, "id": 3}]}}'),
        ("two duplicates, inner first", b'{"a": {"b": 1, "b": 2}, "a": 3}'),
        ("duplicate after escape", b'{"k": 1, "\\u006b": 2}'),
        ("duplicate long key", b'{"' + b"k" * 100 + b'": 1, "' + b"k" * 100 + b'": 2}'),
        ("duplicate with colon in key", b'{"a:b": 1, "a:b": 2}'),
        ("duplicate with escaped colon", b'{"a:b": 1, "a\\u003ab": 2}'),
        ("duplicate with escaped colon, capital", b'{"a:b": 1, "a\\u003Ab": 2}'),
        ("same key in sibling objects", b'{"a": {"k": 1}, "b": {"k": 2}}'),
        ("colons in strings", b'{"a": "x:y", "b:c": ":", "d": "\\":\\"", "e": "\\\\", "f": "\\\\\\":"}'),
        ("NaN", b'{"a": NaN}'), ("Infinity", b'{"a": Infinity}'), ("-Infinity", b'{"a": [-Infinity]}'),
        ("nan lower", b'{"a": nan}'), ("huge exponent", b'{"a": 1e400}'), ("tiny exponent", b'{"a": 1e-400}'),
        ("big integer", b'{"a": ' + b"9" * 30 + b"}"), ("too many digits", b'{"a": ' + b"9" * 5000 + b"}"),
        ("negative zero", b'{"a": -0, "b": -0.0}'), ("float forms", b'{"a": 1E5, "b": 1.5e-3, "c": 0.1}'),
        ("leading zero", b'{"a": 01}'), ("plus sign", b'{"a": +1}'), ("hex", b'{"a": 0x10}'),
        ("BOM", b"\xef\xbb\xbf{\"a\": 1}"), ("UTF-16", '{"a": 1}'.encode("utf-16")),
        ("UTF-16-LE no BOM", '{"a": 1}'.encode("utf-16-le")), ("UTF-32", '{"a": 1}'.encode("utf-32")),
        ("invalid UTF-8", b'{"a": "\xff"}'), ("encoded surrogate", b'{"a": "\xed\xa0\x80"}'),
        ("escaped lone surrogate", b'{"a": "\\ud800"}'), ("escaped pair", b'{"a": "\\ud83d\\ude00"}'),
        ("raw control char", b'{"a": "x\x01y"}'), ("raw newline in string", b'{"a": "x\ny"}'),
        ("bad escape", b'{"a": "\\x"}'), ("NUL", b'{"a": 1}\x00'), ("deep 50", b"[" * 50 + b"]" * 50),
        ("deep 300", b'{"a":' * 300 + b"1" + b"}" * 300), ("deep 5000", b"[" * 5000 + b"]" * 5000),
        ("unicode text", '{"hook": "patient-view", "x": "émigré 日本 😀"}'.encode()),
        ("escaped slash", b'{"a": "\\/"}'), ("tabs and CRLF", b'{\t"a"\r\n:\r\n1\t}'),
        ("vertical tab", b'{"a":\x0b1}'), ("non-breaking space", '{"a":\u00a01}'.encode()),
        ("true in caps", b'{"a": True}'), ("comment", b'{"a": 1 /* c */}'),
    ]
    envelope = b'{"hook": "patient-view", "hookInstance": "h", "context": {"patientId": %s, "userId": %s}}'
    for name, patient, user in [
        ("patientId an escaped lone surrogate", b'"\\ud800"', b"null"),
        ("patientId an encoded surrogate", b'"\xed\xa0\x80"', b"null"),
        ("userId an escaped NUL", b'"p"', b'"\\u0000"'),
        ("patientId escaped non-ASCII", b'"\\u00e9\\u65e5"', b'"\\ud83d\\ude00"'),
        ("patientId with colons and quotes", b'"a:\\":b"', b'"u\\\\:"'),
        ("duplicate in context, escaped", b'"p", "patient\\u0049d": "q"', b"null"),
        ("patientId a float", b"1.5", b"null"), ("patientId an object", b'{"a": 1}', b"null"),
    ]:
        raw.append((name, envelope % (patient, user)))
    bodies += [(name, "imt-patient-view", body) for name, body in raw]
    return bodies


class _Drop:
    pass


_DROP = _Drop()


def request_outcome(service_id: str, body: bytes) -> dict[str, Any]:
    """The parsed and checked request, or the refusal (its message and details), as the service sees it."""
    from imt_cds.service.errors import BadRequestError
    from imt_cds.service.calls import check_request, find_service
    from imt_cds.service.request_json import parse_request_json

    try:
        parsed = parse_request_json(body)
    except BadRequestError as exc:
        return {"parse refused": str(exc), "details": getattr(exc, "details", None)}
    try:
        checked = check_request(parsed, find_service(service_id))
    except BadRequestError as exc:
        return {"parsed": typed(parsed), "check refused": str(exc), "details": getattr(exc, "details", None)}
    return {"parsed": typed(parsed), "checked": typed(checked)}


def typed(value: Any) -> Any:
    """A JSON value with the Python type of every scalar kept (1, 1.0 and True differ; inf and -0.0 survive)."""
    if isinstance(value, dict):
        return {"dict": [[k, typed(v)] for k, v in value.items()]}
    if isinstance(value, list):
        return {"list": [typed(v) for v in value]}
    if isinstance(value, float):
        return {"float": repr(value)}
    if isinstance(value, str):
        return {"str": value.encode("utf-8", "surrogatepass").decode("latin-1")}
    return {type(value).__name__: repr(value)}


def build() -> dict[str, Any]:
    inputs = build_card_inputs()
    return {
        "made_by": "python tests/cards_golden.py --write (the code before the fast paths; see tests/cards_golden.py)",
        "card_cases": [{"input": case, "output": render_cards(case)} for case in inputs],
        "helpers": render_helpers(),
        "requests": [{"name": name, "service": service, "body": base64.b64encode(body).decode(),
                      "outcome": request_outcome(service, body)} for name, service, body in request_bodies()],
    }


def load() -> dict[str, Any]:
    return golden_files.load(GOLDEN)  # type: ignore[no-any-return]


def main(argv: list[str]) -> int:
    return golden_files.write_command(
        argv, usage="python tests/cards_golden.py --write   (overwrites the golden file: a deliberate act, only when "
                    "an output is meant to change)",
        path=GOLDEN, build=build, indent=JSON_INDENT,
        describe=lambda data: f"{len(data['card_cases'])} card cases and {len(data['requests'])} requests")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
