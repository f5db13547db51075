"""A writer process for the audit reliability tests (run as a script, not collected by pytest).

    python audit_writer.py TARGET COUNT SEED [--wait]

Evaluates COUNT generated patients with an engine that records in the audit store TARGET, printing each record
id on standard output (flushed) only once ``append`` has returned it: a printed id is an acknowledged record. With
``--wait`` it prints ``ready`` after start-up and waits for a line on standard input before writing, so that
several writers can be started at once.
"""

from __future__ import annotations

import random
import sys

from strategies import random_patient

from imt_cds import Engine
from imt_cds.audit import open_store


class Acknowledging:
    def __init__(self, store):
        self.store = store

    def append(self, assessment):
        record_id = self.store.append(assessment)
        print(record_id, flush=True)
        return record_id


def main() -> None:
    target, count, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    store = open_store(target)
    engine = Engine(audit=Acknowledging(store))
    rng = random.Random(seed)
    if "--wait" in sys.argv:
        print("ready", flush=True)
        sys.stdin.readline()
    for _ in range(count):
        engine.evaluate(random_patient(rng))
    store.close()


if __name__ == "__main__":
    main()
