"""The server-side stages of a patient-view call, timed in process (a script, never a test).

    python tests/benchmarks/cards_bench.py                  # this tree's code
    python tests/benchmarks/cards_bench.py --against REV    # and REV's (a git revision), interleaved A/B

Stages, on the service benchmark's charts (tests/benchmarks/service_bench.py: ~10 KB patient-view requests):
- *request JSON (parse + check)*: ``check_request(parse_request_json(body))``, as the worker does with a
  patient-view body (and the server with any other hook call's);
- *cards*: ``assessment_cards`` + ``problems_card`` + ``sort_cards`` on an assessment document: the document's
  renderer, which the worker uses when an assessment has no rationale (a suppressed finding, a finding from two
  rules) and other callers always (service_bench.py's "cards" stage times ``cards_of_assessment``, the worker's
  usual way);
- *assessment_cards alone*: the renderer without the problems card or the sorting.

With ``--against``, REV's versions of imt_cds/render/cards.py, imt_cds/core/validation.py,
imt_cds/service/request_json.py and imt_cds/service/models.py are loaded beside this tree's (as private modules
of the same packages), and the rounds alternate between the two, so both see the same machine. A figure is the best
round's median (a busy machine only ever adds time).
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import time
import types
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "benchmarks"))

import orjson  # noqa: E402
import service_bench as sb  # noqa: E402

from imt_cds.render import cards as cards_now  # noqa: E402
from imt_cds.service import calls, models  # noqa: E402
from imt_cds.service import request_json as request_json_now  # noqa: E402
from imt_cds.service.workers import WorkerSettings, _Handler  # noqa: E402


def load_revision(revision: str, path: str, name: str, patches: dict[str, object] | None = None) -> types.ModuleType:
    """``path`` as it is in ``revision``, loaded as module ``name`` (its package's relative imports work)."""
    source = subprocess.run(["git", "-C", str(ROOT), "show", f"{revision}:{path}"], check=True,
                            capture_output=True, text=True).stdout
    spec = importlib.util.spec_from_loader(name, loader=None)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    module.__package__ = name.rsplit(".", 1)[0]
    sys.modules[name] = module
    exec(compile(source, f"{revision}:{path}", "exec"), module.__dict__)  # noqa: S102 - the project's own code
    for attribute, value in (patches or {}).items():
        setattr(module, attribute, value)
    return module


def stage_functions(cards_module, parse, problems_of):
    service = calls.find_service("imt-patient-view")

    def request(body: bytes) -> None:
        request = parse(body)
        problems = problems_of(request, service.hook, service.id)
        if problems:
            raise models.refuse(problems)

    def cards(answer: dict) -> None:
        read = answer["fhir"]
        made = cards_module.assessment_cards(answer["assessment"], evaluation_id=answer["evaluation_id"],
                                             sources=read["sources"], public_url="http://127.0.0.1",
                                             problems=read["problems"])
        problems = cards_module.problems_card(read["problems"], evaluation_id=answer["evaluation_id"])
        if problems is not None:
            made.insert(0, problems)
        cards_module.sort_cards(made)

    def assessment_cards_only(answer: dict) -> None:  # service_bench.py's "cards" stage
        cards_module.assessment_cards(answer["assessment"], evaluation_id=answer["evaluation_id"],
                                      sources=answer["fhir"]["sources"], public_url="http://127.0.0.1")

    return request, cards, assessment_cards_only


def one_round(function, inputs: list) -> float:
    clock = time.perf_counter_ns
    samples = []
    for item in inputs:
        start = clock()
        function(item)
        samples.append((clock() - start) / 1000)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--against", metavar="REV", help="a git revision to time beside this tree, interleaved")
    parser.add_argument("--charts", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()

    bodies = [sb.request_body(sb.chart(i)) for i in range(args.charts)]
    handler = _Handler(WorkerSettings(cache_size=0))
    on = date.today().isoformat()
    answers = []
    for body in bodies:
        request = orjson.loads(body)
        resources = [request["prefetch"]["patient"], *(e["resource"] for key in ("conditions", "observations",
                                                                              "procedures")
                                                       for e in request["prefetch"][key]["entry"])]
        answer = handler.handle({"op": "assess", "resources": resources, "on": on, "patient_id": sb.PATIENT,
                                 "attested": False})
        answers.append(orjson.loads(orjson.dumps(answer)))  # as the server gets it from the worker

    variants = {"this tree": stage_functions(cards_now, request_json_now.parse_request_json,
                                             models.request_problems)}
    if args.against:
        rev = args.against
        validation = load_revision(rev, "imt_cds/core/validation.py", "imt_cds.core._validation_rev")
        request_json = load_revision(rev, "imt_cds/service/request_json.py", "imt_cds.service._request_json_rev",
                                     {"loads_strict": validation.loads_strict,
                                      "DuplicateKeyError": validation.DuplicateKeyError})
        old_models = load_revision(rev, "imt_cds/service/models.py", "imt_cds.service._models_rev")
        old_cards = load_revision(rev, "imt_cds/render/cards.py", "imt_cds.render._cards_rev")
        variants[rev] = stage_functions(old_cards, request_json.parse_request_json, old_models.request_problems)

    best: dict[tuple[str, str], float] = {}
    stages = ("request JSON (parse + check)", "cards", "assessment_cards alone")
    for _ in range(args.rounds):
        for name, functions in variants.items():
            for stage, function, inputs in zip(stages, functions, (bodies, answers, answers)):
                median = one_round(function, inputs)
                best[name, stage] = min(best.get((name, stage), float("inf")), median)

    print(f"{len(bodies)} charts, bodies {min(map(len, bodies)) / 1000:.1f} to {max(map(len, bodies)) / 1000:.1f} "
          f"KB; best of {args.rounds} rounds' medians, µs{' (A/B interleaved)' if args.against else ''}")
    names = list(variants)
    print("| stage | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for stage in stages:
        print(f"| {stage} | " + " | ".join(f"{best[name, stage]:.0f}" for name in names) + " |")


if __name__ == "__main__":
    main()
