"""What a worker process does with one job, and the bytes a job and an answer travel as, checked in the test's own
process: the worker's ``_Handler`` on real charts and a real engine, and the framing functions on exact bytes.

The crash-containment tests (test_service_workers.py) run the same code in worker processes, where a planted
mistake (a mutant) fails a test only through what reaches HTTP; these name the field or byte that is wrong.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import re
import struct
import uuid

import orjson
import pytest
from service_support import EXAMPLE_PATIENT, example_resources, hook_request, prefetch_for

from imt_cds.render.cards import card_uuid
from imt_cds.service.calls import FHIR_GUIDANCE_EXTENSION
from imt_cds.service.workers import (
    WorkerSettings,
    _frame,
    _Handler,
    decode_answer,
    decode_job,
    encode_answer,
    encode_job,
)

ON = "2026-11-21"
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")  # uuid4
PUBLIC_URL = "http://127.0.0.1:8080"


@pytest.fixture(scope="module")
def handler() -> _Handler:
    return _Handler(WorkerSettings(cache_size=0, public_url=PUBLIC_URL))


def job(op: str, resources: list | None = None, **more) -> dict:
    return {"op": op, "resources": example_resources() if resources is None else resources, "on": ON,
            "patient_id": EXAMPLE_PATIENT, "attested": False, **more}


def cards_job(resources: list | None = None, fhir_guidance_endpoint: str | None = None) -> dict:
    return job("cards", resources, hook_instance="hook-1", fhir_guidance_endpoint=fhir_guidance_endpoint)


def without_diagnosis() -> list:
    """The example chart without its Conditions (the primary tumour and its metastasis, which both name IMT): a chart
    the service must not evaluate unless the caller attests the diagnosis."""
    return [r for r in example_resources() if r["resourceType"] != "Condition"]


# --- the bytes ----------------------------------------------------------------------------------------------------


def test_a_job_is_its_json_then_a_nul_byte_then_the_body_as_it_came():
    assert encode_job({"op": "hook"}, b'{"a": 1}\0\xff') == b'{"op":"hook"}\0{"a": 1}\0\xff'
    assert encode_job({"op": "hook"}, b"") == b'{"op":"hook"}\0'
    assert encode_job({"op": "hook"}) == b'{"op":"hook"}'  # no body: no separator
    assert decode_job(b'{"op":"hook"}\0{"a": 1}\0\xff') == ({"op": "hook"}, b'{"a": 1}\0\xff')
    assert decode_job(b'{"op":"hook"}\0') == ({"op": "hook"}, b"")  # an empty body is not no body
    assert decode_job(b'{"op":"hook"}') == ({"op": "hook"}, None)


def test_a_job_with_an_integer_past_64_bits_goes_through_as_that_integer():
    # orjson writes none (a chart may hold one: a FHIR decimal is any number); the stdlib writes the job, marked.
    job = {"op": "facts", "resources": [{"resourceType": "Patient", "x": 10**20, "y": -(2**64), "t": "\u00e9"}]}
    message = encode_job(job, b"body")
    assert message == (b'\x01{"op":"facts","resources":[{"resourceType":"Patient","x":100000000000000000000,'
                       b'"y":-18446744073709551616,"t":"\xc3\xa9"}]}\0body')
    assert decode_job(message) == (job, b"body")
    assert type(decode_job(message)[0]["resources"][0]["x"]) is int
    assert decode_job(encode_job({"op": "facts", "n": 2**63 - 1})) == ({"op": "facts", "n": 2**63 - 1}, None)
    assert encode_job({"op": "facts", "n": 2**63 - 1}) == b'{"op":"facts","n":9223372036854775807}'  # orjson's
    with pytest.raises(orjson.JSONEncodeError):  # text that is not UTF-8 (a lone surrogate): fails as before
        encode_job({"op": "facts", "n": 10**20, "t": "\ud800"})
    with pytest.raises(orjson.JSONEncodeError):  # nor NaN, which JSON has no word for (the stdlib would write one)
        encode_job({"op": "facts", "n": 10**20, "x": float("nan")})


def test_an_answer_carries_its_raw_response_after_a_nul_byte_and_gets_it_back_under_raw():
    assert encode_answer({"ok": True, "raw": b'{"cards":[]}'}) == b'{"ok":true}\0{"cards":[]}'
    assert encode_answer({"ok": True}) == b'{"ok":true}'
    assert decode_answer(b'{"ok":true}\0{"cards":[]}') == {"ok": True, "raw": b'{"cards":[]}'}
    assert decode_answer(b'{"ok":true}\0') == {"ok": True, "raw": b""}
    assert decode_answer(b'{"ok":true}') == {"ok": True}  # no raw key at all: the server tells the two apart


def test_a_framed_job_is_what_a_worker_reads_with_multiprocessing_recv_bytes():
    assert _frame(b"abc") == b"\0\0\0\3abc"
    reading, writing = multiprocessing.Pipe(duplex=False)
    try:
        for payload in (b"", b"abc", bytes(range(256)) * 200):
            with open(writing.fileno(), "wb", closefd=False, buffering=0) as pipe:
                pipe.write(_frame(payload))  # (each fits a pipe's 64 KiB buffer: written whole before it is read)
            assert reading.recv_bytes() == payload
    finally:
        reading.close()
        writing.close()


class _Sized:
    """A stand-in for a payload of ``size`` bytes (past 2 GiB, too big to make in a test): its length, and what a
    bytes header added to it gives, (header, the payload)."""

    def __init__(self, size: int):
        self.size = size

    def __len__(self) -> int:
        return self.size

    def __radd__(self, header: bytes) -> tuple[bytes, _Sized]:
        return header, self


def test_a_payload_past_two_gib_is_framed_as_multiprocessing_frames_it():
    # multiprocessing.connection.Connection._send_bytes: "!i" of the length up to 0x7FFFFFFF, else "!i" -1 and "!Q"
    # of the length.
    assert _frame(_Sized(0x7FFFFFFF))[0] == b"\x7f\xff\xff\xff"
    for size in (0x80000000, 0x1_0000_0001):
        header, payload = _frame(_Sized(size))
        assert header == struct.pack("!i", -1) + struct.pack("!Q", size) == b"\xff" * 4 + size.to_bytes(8, "big")
        assert payload.size == size


def test_the_server_reads_an_answer_in_either_of_multiprocessings_frames():
    # A worker answers with Connection.send_bytes' framing; one past 2 GiB (no answer comes near) has the long length.
    from imt_cds.service.workers import _Worker

    async def read(data: bytes) -> list[bytes]:
        worker = _Worker(None, None)
        worker.reader = asyncio.StreamReader()
        worker.reader.feed_data(data)
        worker.reader.feed_eof()
        return [await worker.read_answer(), await worker.read_answer()]

    long_header = struct.pack("!i", -1) + struct.pack("!Q", 3)  # (the long form of a short answer reads the same)
    assert asyncio.run(read(_frame(b"first") + long_header + b"two")) == [b"first", b"two"]
    assert asyncio.run(read(_frame(b"") + _frame(b"\xff\x00"))) == [b"", b"\xff\x00"]


# --- the jobs -----------------------------------------------------------------------------------------------------


def test_a_facts_job_answers_the_reading_with_its_facts_and_evaluates_nothing(handler):
    answer = handler.handle(job("facts"))
    assert set(answer) == {"ok", "fhir", "assessment", "evaluation_id"}
    assert answer["ok"] is True and answer["assessment"] is None and answer["evaluation_id"] is None
    assert answer["fhir"]["facts"]["patient_id"] == EXAMPLE_PATIENT
    assert answer["fhir"]["facts"]["molecular"]["alk"]["status"] == "positive"
    assert answer["fhir"]["eligibility"]["eligible"] is True
    assert "Observation/imt-alk-fusion" in answer["fhir"]["sources"]["molecular.alk.status"]


def test_an_assess_job_answers_the_assessment_document_and_a_new_evaluation_id(handler):
    answer = handler.handle(job("assess"))
    assert set(answer) == {"ok", "fhir", "assessment", "evaluation_id"}  # no record: the service is not audited
    assert answer["ok"] is True and UUID.match(answer["evaluation_id"])
    assert "facts" not in answer["fhir"]  # (the facts are the document's input)
    document = orjson.loads(orjson.dumps(answer["assessment"]))
    expected = handler.engine.evaluate(handler.handle(job("facts"))["fhir"]["facts"]).to_dict()
    assert document["provenance"]["input_sha256"] == expected["provenance"]["input_sha256"]
    # The diagnosis the reading established goes into the document's provenance (what the advice was given for).
    assert document["provenance"]["diagnosis"] == answer["fhir"]["eligibility"]["diagnosis"] == {
        "basis": "coded", "sources": ["Condition/imt-primary"], "attested": False,
        "codes": ["http://terminology.hl7.org/CodeSystem/icd-o-3|8825/1"]}
    assert [f["code"] for f in document["recommendations"]] == [f["code"] for f in expected["recommendations"]]
    assert document["recommendations"] and document["trace"]  # the whole document, trace and all
    assert handler.handle(job("assess"))["evaluation_id"] != answer["evaluation_id"]


def test_a_chart_without_an_imt_diagnosis_is_evaluated_only_when_the_caller_attests_it(handler):
    plain = handler.handle(job("assess", without_diagnosis()))
    assert plain["assessment"] is None and plain["evaluation_id"] is None
    assert plain["fhir"]["eligibility"]["eligible"] is False
    attested = handler.handle({**job("assess", without_diagnosis()), "attested": True})
    assert attested["fhir"]["eligibility"] == {**attested["fhir"]["eligibility"], "eligible": True,
                                               "reason": "diagnosis_attested"}
    assert attested["assessment"] is not None and UUID.match(attested["evaluation_id"])


def test_the_date_of_the_job_is_the_date_the_chart_is_read_on(handler):
    ages = [handler.handle({**job("facts"), "on": on})["fhir"]["facts"]["age_years"]
            for on in ("2026-11-21", "2036-11-21")]
    assert 9.99 < ages[1] - ages[0] < 10.01


def test_a_chart_of_another_patient_than_the_job_names_is_refused_with_the_readers_reason(handler):
    answer = handler.handle({**job("cards", hook_instance="h", fhir_guidance_endpoint=None),
                             "patient_id": "someone-else"})
    assert answer == {"ok": True, "refused": {"reason": "other_patient", "message": answer["refused"]["message"]}}
    assert "someone-else" in answer["refused"]["message"] and EXAMPLE_PATIENT in answer["refused"]["message"]


@pytest.mark.parametrize("op", ["facts", "assess", "cards"])
def test_a_job_that_does_not_name_the_patient_in_context_fails_instead_of_reading_the_chart_unchecked(handler, op):
    # Read with no patient to check against, a chart of another patient would be evaluated: the key is required.
    unnamed = job(op, hook_instance="h", fhir_guidance_endpoint=None)
    del unnamed["patient_id"]
    with pytest.raises(KeyError, match="patient_id"):
        handler.handle(unnamed)


def test_a_cards_job_answers_the_response_bytes_and_an_index_of_its_cards(handler):
    answer = handler.handle(cards_job())
    assert set(answer) == {"ok", "evaluation_id", "index", "raw"}
    assert answer["ok"] is True and UUID.match(answer["evaluation_id"])
    response = orjson.loads(answer["raw"])
    assert set(response) == {"cards"} and len(response["cards"]) >= 2
    assert answer["index"] == [[card["uuid"], card["source"]["topic"]["code"]] for card in response["cards"]]
    assert all(card["source"]["url"].startswith(PUBLIC_URL + "/rules/") for card in response["cards"]
               if "url" in card["source"])
    assert f"evaluation {answer['evaluation_id']}." in response["cards"][-1]["detail"]


def test_a_cards_job_asking_for_fhir_guidance_gets_it_with_the_endpoint_given(handler):
    answer = handler.handle(cards_job(fhir_guidance_endpoint="https://cds.example/guidance"))
    response = orjson.loads(answer["raw"])
    bundle = response["extension"][FHIR_GUIDANCE_EXTENSION]
    assert bundle["resourceType"] == "Bundle"
    assert "https://cds.example/guidance" in answer["raw"].decode()
    assert "extension" not in orjson.loads(handler.handle(cards_job())["raw"])


def test_a_cards_job_on_a_chart_not_evaluated_answers_no_cards_or_the_one_card_configured():
    quiet = _Handler(WorkerSettings(cache_size=0, public_url=PUBLIC_URL))
    answer = quiet.handle(cards_job(without_diagnosis()))
    assert answer == {"ok": True, "evaluation_id": None, "index": [], "raw": b'{"cards":[]}'}
    told = _Handler(WorkerSettings(cache_size=0, public_url=PUBLIC_URL, not_eligible_card=True))
    answer = told.handle(cards_job(without_diagnosis()))
    cards = orjson.loads(answer["raw"])["cards"]
    assert [card["source"]["topic"]["code"] for card in cards] == ["NOT_ELIGIBLE"]
    assert answer["evaluation_id"] is None and answer["index"] == []  # nothing to give feedback about


def conflicting() -> list:
    """The example chart with a surgical procedure and a fact Observation saying there was no surgery."""
    subject = {"reference": f"Patient/{EXAMPLE_PATIENT}"}
    return [*example_resources(),
            {"resourceType": "Procedure", "id": "resection", "status": "completed", "subject": subject,
             "code": {"text": "resection"}, "meta": {"profile": [
                 "http://hl7.org/fhir/us/mcode/StructureDefinition/mcode-cancer-related-surgical-procedure"]}},
            {"resourceType": "Observation", "id": "no-surgery", "status": "final", "subject": subject,
             "code": {"coding": [{"system": "urn:imt-cds:fact", "code": "history.surgery_done"}]},
             "valueBoolean": False}]


def test_the_cards_of_a_chart_not_evaluated_have_the_ids_their_hook_instance_always_gave(handler):
    # Ids issued before must stay traceable (test_service_cards.py pins the helper): the conflict card's evaluation
    # id is the hook call's, and feedback about it is indexed under it; the not-eligible card's uuid is its own.
    def made(kind: str) -> str:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"urn:imt-cds:{kind}:hook-1"))

    answer = handler.handle(cards_job(conflicting()))
    (card,) = orjson.loads(answer["raw"])["cards"]
    assert card["source"]["topic"]["code"] == "FHIR_INPUT_CONFLICT" and answer["evaluation_id"] == made("hook")
    assert answer["index"] == [[card_uuid(made("hook"), "FHIR", "FHIR_INPUT_CONFLICT"), "FHIR_INPUT_CONFLICT"]]
    told = _Handler(WorkerSettings(cache_size=0, public_url=PUBLIC_URL, not_eligible_card=True))
    (card,) = orjson.loads(told.handle(cards_job(without_diagnosis()))["raw"])["cards"]
    assert card["uuid"] == card_uuid(made("not-eligible"), "FHIR", "NOT_ELIGIBLE")


def test_the_card_of_what_could_not_be_read_comes_first_among_the_cards_of_its_severity(handler):
    # A preliminary result is left out without bearing on a fact: an info card, among the recommendations' cards.
    left_out = {"resourceType": "Observation", "id": "preliminary", "status": "preliminary",
                "code": {"coding": [{"system": "http://loinc.org", "code": "21889-1"}]},
                "subject": {"reference": f"Patient/{EXAMPLE_PATIENT}"}}
    cards = orjson.loads(handler.handle(cards_job([*example_resources(), left_out]))["raw"])["cards"]
    info = [card["source"]["topic"]["code"] for card in cards if card["indicator"] == "info"]
    assert info[0] == "FHIR_INPUT_PROBLEMS" and len(info) > 2
    assert [card["indicator"] for card in cards] == sorted((card["indicator"] for card in cards),
                                                           key=["critical", "warning", "info"].index)


def test_an_audited_worker_prepares_the_record_and_the_cards_quote_its_id(tmp_path):
    audited = _Handler(WorkerSettings(cache_size=0, public_url=PUBLIC_URL, audit=str(tmp_path / "a.db")))
    answer = audited.handle(cards_job())
    assert set(answer) == {"ok", "evaluation_id", "index", "raw", "record"}
    record = answer["record"]
    assert answer["evaluation_id"] == record["id"] and UUID.match(record["id"])
    assert record["input_json"] is not None and record["rulebook"]["sha256"] == audited.engine.rulebook.sha256
    assert f"evaluation {record['id']}." in orjson.loads(answer["raw"])["cards"][-1]["detail"]
    assessed = audited.handle(job("assess"))
    assert assessed["evaluation_id"] == assessed["record"]["id"] != record["id"]
    without_input = _Handler(WorkerSettings(cache_size=0, audit=str(tmp_path / "a.db"), audit_input=False))
    assert without_input.handle(job("assess"))["record"]["input_json"] is None
    assert "record" not in without_input.handle(job("facts"))  # nothing evaluated, nothing to record


def test_a_call_with_no_body_is_rejected_as_json_that_is_not_there(handler):
    answer = handler.handle({"op": "hook", "service": "imt-patient-view", "on": ON, "guidance_endpoint": "x"})
    assert answer == {"ok": True, "rejected": {
        "message": "the request body is not valid JSON (Expecting value at line 1 column 1)", "details": None}}


def test_a_call_asking_for_fhir_guidance_gets_the_endpoint_of_its_job(handler):
    request = hook_request("patient-view", prefetch=prefetch_for(example_resources()),
                           extension={FHIR_GUIDANCE_EXTENSION: True})
    hook = {"op": "hook", "service": "imt-patient-view", "on": ON, "guidance_endpoint": "https://cds.example/g"}
    raw = handler.handle(hook, orjson.dumps(request))["raw"]
    assert FHIR_GUIDANCE_EXTENSION in orjson.loads(raw)["extension"] and b"https://cds.example/g" in raw


def test_a_worker_that_cannot_build_its_engine_says_why_and_the_pool_does_not_start(tmp_path):
    # The pool was given the rulebook it serves (as the server gives it the one it loaded); the worker loads the
    # files again and finds them broken: its start-up message names its error, and the pool passes it on.
    from imt_cds import load_rulebook
    from imt_cds.service.errors import ServiceConfigError
    from imt_cds.service.workers import WorkerPool
    from rulebook_copies import copy_rulebook

    directory = copy_rulebook(tmp_path / "rules")
    rulebook = load_rulebook(directory)
    (directory / "rulebook.yaml").unlink()
    pool = WorkerPool(WorkerSettings(rules=str(directory), cache_size=0), 1, rulebook=rulebook)
    with pytest.raises(ServiceConfigError) as refused:
        asyncio.run(pool.start())
    assert re.fullmatch(r"(?s)an evaluation worker could not start: RulebookError: .*rulebook\.yaml: missing.*",
                        str(refused.value)), str(refused.value)
    assert pool.live_workers == 0


def test_a_job_failing_with_an_error_of_this_library_is_answered_with_that_errors_code():
    # The server never sends a worker an unknown service (it finds the service first); a worker sent one anyway
    # fails that job with the library's own error and code, not the name of its class.
    from imt_cds.service.errors import EvaluationFailedError, NotFoundError
    from imt_cds.service.workers import WorkerPool

    async def run() -> BaseException:
        pool = WorkerPool(WorkerSettings(cache_size=0), 1)
        await pool.start()
        try:
            failed = await asyncio.gather(pool.run({"op": "hook", "service": "nope", "on": ON,
                                                    "guidance_endpoint": "x"}, b"{}"), return_exceptions=True)
            return failed[0]
        finally:
            await pool.close()

    failed = asyncio.run(run())
    assert isinstance(failed, EvaluationFailedError)
    assert failed.details == {"code": NotFoundError.code} and NotFoundError.code != "NotFoundError"
    assert failed.message.startswith("the evaluation failed: NotFoundError: no CDS service 'nope' here; the "
                                     "services are imt-patient-view, "), failed.message


def test_a_worker_that_dies_is_replaced_and_the_service_log_says_which_by_which(caplog):
    import logging
    import os
    import signal

    from imt_cds.service.workers import WorkerPool

    async def run() -> tuple[int, int]:
        pool = WorkerPool(WorkerSettings(cache_size=0), 1)
        await pool.start()
        try:
            (victim,) = pool.load()["pids"]
            os.kill(victim, signal.SIGKILL)
            for _ in range(600):  # (a replacement builds its engine: a second or two)
                await asyncio.sleep(0.05)
                if pool.load()["pids"] not in ([victim], []):
                    break
            (replacement,) = pool.load()["pids"]
            return victim, replacement
        finally:
            await pool.close()

    with caplog.at_level(logging.WARNING, logger="imt_cds.service"):
        victim, replacement = asyncio.run(run())
    said = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "imt_cds.service"]
    assert said == [(logging.WARNING, f"imt-cds: evaluation worker {victim} died while idle (exit code -9)"),
                    (logging.WARNING, f"imt-cds: evaluation worker {victim} replaced by {replacement}")]


def test_the_fork_server_preloads_modules_that_exist():
    # multiprocessing's fork server skips a preload it cannot import, without a word: a misspelt name would only
    # make every worker (and every replacement) import the library itself as it starts, slower.
    import importlib.util

    from imt_cds.service.workers import _PRELOAD

    assert _PRELOAD and all(type(name) is str and importlib.util.find_spec(name) is not None for name in _PRELOAD)


def test_a_pool_closed_with_jobs_in_hand_fails_each_of_them_as_stopped():
    # One job in the worker, two waiting in the server (depth 1): none is left hanging when the service stops, and
    # each fails with the same words (a 503 to its client).
    from imt_cds.service.errors import WorkerTimeoutError
    from imt_cds.service.workers import WorkerPool

    async def run() -> tuple[dict, list]:
        pool = WorkerPool(WorkerSettings(cache_size=0), 1, depth=1)
        await pool.start()
        jobs = [asyncio.ensure_future(pool.run(job("assess"))) for _ in range(3)]
        await asyncio.sleep(0)  # each has been offered: the first sent to the worker, the others waiting
        held = pool.load()
        await pool.close()
        return held, await asyncio.wait_for(asyncio.gather(*jobs, return_exceptions=True), 10)

    held, results = asyncio.run(run())
    assert held["in_workers"] == [1] and held["waiting"] == 2
    assert [(type(r), getattr(r, "message", r)) for r in results] == [
        (WorkerTimeoutError, "the evaluation workers have stopped")] * 3


def test_a_pool_one_of_whose_workers_cannot_start_stops_the_ones_that_did(monkeypatch):
    # The failure is planted in the pool's own start of one worker (the real reasons a worker cannot start are tested
    # above and in test_service_workers.py): the workers that did start must not be left running behind the error.
    import itertools

    from imt_cds.service.errors import ServiceConfigError
    from imt_cds.service.workers import WorkerPool

    pool = WorkerPool(WorkerSettings(cache_size=0), 2)
    spawn, calls, started = pool._spawn, itertools.count(), []

    def one_fails():
        if next(calls) == 1:
            raise ServiceConfigError("an evaluation worker could not start: planted")
        started.append(spawn())
        return started[-1]

    monkeypatch.setattr(pool, "_spawn", one_fails)
    with pytest.raises(ServiceConfigError, match="^an evaluation worker could not start: planted$"):
        asyncio.run(pool.start())
    (worker,) = started
    assert worker.process.exitcode is not None and pool.live_workers == 0


def test_a_pool_whose_audit_store_cannot_be_opened_says_so_and_starts_no_worker(tmp_path):
    # The rulebook is archived in the store before any worker starts (a record may only name an archived rulebook).
    from imt_cds.service.errors import ServiceConfigError
    from imt_cds.service.workers import WorkerPool

    target = tmp_path / "no-such-folder" / "audit.db"
    pool = WorkerPool(WorkerSettings(cache_size=0, audit=str(target)), 1)
    with pytest.raises(ServiceConfigError) as refused:
        asyncio.run(pool.start())
    assert str(refused.value) == ("cannot archive the rulebook in the audit store: cannot open the audit database "
                                  f"{target}: unable to open database file")
    assert pool.load()["pids"] == [] and not target.parent.exists()


def _sleep_then_exit() -> None:  # (a module-level function: the fork server pickles the target by name)
    import time

    time.sleep(60)


def test_a_workers_handle_says_whether_its_process_runs_and_how_it_ended():
    import os
    import signal
    import threading
    import time

    from imt_cds.service.workers import _Worker

    context = multiprocessing.get_context("forkserver")
    parent, child = context.Pipe(duplex=True)
    process = context.Process(target=_sleep_then_exit, daemon=True)
    process.start()
    worker = _Worker(process, parent)
    try:
        assert worker.alive() and not worker._joining.locked()  # (alive() leaves the lock as it found it)
        assert worker.exit_code(wait=0.1) is None
        os.kill(process.pid, signal.SIGKILL)
        held = threading.Event()
        release = threading.Event()

        def join_elsewhere() -> None:  # another thread joining it: it counts as running until that one is done
            with worker._joining:
                held.set()
                release.wait(30)

        thread = threading.Thread(target=join_elsewhere)
        thread.start()
        held.wait(10)
        began = time.monotonic()
        assert worker.alive()
        assert time.monotonic() - began < 5  # at once: the event loop asks, and must not wait for that thread
        release.set()
        thread.join(10)
        assert worker.exit_code(wait=10) == -signal.SIGKILL and not worker.alive()
        assert not worker._joining.locked()
        # stop(): a process that does not end when its pipe is closed (this one never reads it) is killed.
        deaf = context.Process(target=_sleep_then_exit, daemon=True)
        deaf.start()
        _Worker(deaf, context.Pipe(duplex=True)[0]).stop(wait=0.5)
        assert deaf.exitcode == -signal.SIGKILL
    finally:
        worker.kill()
        parent.close()
        child.close()


def test_a_closed_pool_lets_its_workers_end_by_themselves():
    # The server closes its ends of a worker's pipe (the stream first: it holds a second descriptor of it); the
    # worker reads end of file and exits 0. Were one end left open, the worker would wait, be killed, and end -9.
    from imt_cds.service.workers import WorkerPool

    async def run() -> list:
        pool = WorkerPool(WorkerSettings(cache_size=0), 2)
        await pool.start()
        workers = list(pool._workers)
        await pool.close()
        return workers

    workers = asyncio.run(run())
    assert [w.process.exitcode for w in workers] == [0, 0]


def test_a_pool_refuses_a_job_depth_below_one_in_words():
    from imt_cds.service.errors import ServiceConfigError
    from imt_cds.service.workers import WorkerPool

    with pytest.raises(ServiceConfigError) as refused:
        WorkerPool(WorkerSettings(cache_size=0), 1, depth=0)
    assert str(refused.value) == "a worker's job depth must be at least 1, not 0"
    assert WorkerPool(WorkerSettings(cache_size=0), 1, depth=1).depth == 1
