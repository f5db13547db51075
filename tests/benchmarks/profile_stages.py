"""Where the time of one evaluation goes, stage by stage (README "Performance: profile").

    python tests/benchmarks/profile_stages.py
    python tests/benchmarks/profile_stages.py --rounds 1 --calls 20   # a check that it runs (the tests use it)

Each stage is timed on its own over the shipped example patients; a figure is the best median of several rounds
(medians of a noisy machine drift upward, never down). The durable-rules part is split into the C calls (the Rete
network, session creation and deletion) and the Python loop that dispatches actions, by timing each call.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import durable_rules_engine as dre

from imt_cds import Engine, parse_facts
from imt_cds.core.assessment import Assessment
from imt_cds.core.fact_fields import leaf_values
from imt_cds.core.validation import input_sha256, render_leaves

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = [json.loads(p.read_text()) for p in sorted((ROOT / "examples").glob("*.json"))]


def best_median_of(function, rounds: int, calls: int) -> float:
    clock = time.perf_counter_ns
    best = float("inf")
    for _ in range(rounds):
        samples = []
        for i in range(calls):
            start = clock()
            function(i)
            samples.append(clock() - start)
        best = min(best, statistics.median(samples) / 1000)
    return best


def c_engine_split(engine: Engine, facts: list, rounds: int, calls: int) -> tuple[float, float]:
    """(C time, Python dispatch time) per evaluation, measured inside the engine's own loop structure."""
    program = engine.program
    handle = engine._ruleset._handle
    actions = engine._ruleset._actions
    ruleset = engine._ruleset
    values = [leaf_values(f) for f in facts]
    leaves = [render_leaves(v) for v in values]
    clock = time.perf_counter_ns
    best_c, best_py = float("inf"), float("inf")
    for round_ in range(rounds):
        c_total = py_total = 0
        for i in range(calls):
            sid = f"p{round_}-{i}"
            text = program.encode_patient(values[i % len(values)], leaves[i % len(values)], sid)
            asserted: set[str] = set()
            fired: list[tuple[str, None]] = []
            for marker in [None, *ruleset._markers]:  # the patient, then each stratum's marker (built from the firings)
                fact = text if marker is None else ruleset.marker_fact(marker, sid, fired)
                t = clock()
                result, state = dre.assert_fact(handle, fact)
                c_total += clock() - t
                if result == 1:
                    continue
                t = clock()
                started = dre.start_action_for_state(handle, state)
                c_total += clock() - t
                message = started[1] if started else None
                while message is not None:
                    t = clock()
                    name = message[2:message.index('"', 2)]
                    fired.append((name, None))
                    templates = actions[name][0]
                    py_total += clock() - t
                    for template in templates:
                        if template not in asserted:
                            asserted.add(template)
                            t = clock()
                            dre.assert_fact(handle, template % sid)
                            c_total += clock() - t
                    t = clock()
                    message = dre.complete_and_start_action(handle, state)
                    c_total += clock() - t
            t = clock()
            dre.delete_state(handle, sid)
            c_total += clock() - t
        best_c = min(best_c, c_total / calls / 1000)
        best_py = min(best_py, py_total / calls / 1000)
    return best_c, best_py


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7, help="rounds per stage; a figure is the best median")
    parser.add_argument("--calls", type=int, default=2000, help="calls per round")
    args = parser.parse_args()
    engine = Engine()
    facts = [parse_facts(p) for p in EXAMPLES]
    values = [leaf_values(f) for f in facts]
    leaves = [render_leaves(v) for v in values]
    firings = [engine._ruleset.run(f) for f in facts]
    templates = engine._templates
    n = len(facts)
    for i in range(min(3000, args.calls)):  # warm-up
        engine.evaluate(EXAMPLES[i % n]).to_json()

    moment = datetime(2026, 1, 1, tzinfo=timezone.utc)

    def assessment(i):
        return Assessment(templates, facts[i % n], leaves[i % n], firings[i % n], "0" * 64, moment)

    def best_median(function) -> float:
        return best_median_of(function, args.rounds, args.calls)

    c_time, py_time = c_engine_split(engine, facts, min(args.rounds, 5), args.calls)
    rows = [
        ("validation (pydantic)", best_median(lambda i: parse_facts(EXAMPLES[i % n]))),
        ("read facts + render as JSON", best_median(lambda i: render_leaves(leaf_values(facts[i % n])))),
        ("canonical input sha256", best_median(lambda i: input_sha256(facts[i % n], leaves[i % n]))),
        ("engine fact encoding",
         best_median(lambda i: engine.program.encode_patient(values[i % n], leaves[i % n], "s"))),
        ("durable-rules C calls", c_time),
        ("action dispatch (Python)", py_time),
        ("collect firings (Assessment)", best_median(assessment)),
        ("  + findings with evidence and rationale", best_median(lambda i: assessment(i).findings)),
        ("  + trace", best_median(lambda i: assessment(i).trace)),
        ("  + JSON document", best_median(lambda i: assessment(i).to_json())),
        ("evaluate() total", best_median(lambda i: engine.evaluate(EXAMPLES[i % n]))),
        ("evaluate() + to_json()", best_median(lambda i: engine.evaluate(EXAMPLES[i % n]).to_json())),
    ]
    print("| stage | µs (best median) |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
