"""Two replicas of the service sharing one PostgreSQL audit store, as behind a reverse proxy (README "Deployment").

Two real ``imt-cds serve`` processes on two loopback ports, each with its own workers, both recording in one
database of a real PostgreSQL server: concurrent hook calls on both must leave one valid hash chain holding every
evaluation exactly once; a token used on one replica must be refused by the other (the shared ``jti`` cache); and
feedback posted to either must be stored exactly once.
"""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from audit_support import new_database, raw_sql, running_postgres
from service_support import Signer, bearer, example_resources, hook_request, prefetch_for, running_service

from imt_cds.audit import open_store

PUBLIC = "https://cds.example.org"
HOOK = PUBLIC + "/cds-services/imt-patient-view"
CALLS_PER_REPLICA = 24


@pytest.fixture(scope="module")
def signer():
    return Signer("https://ehr.replicas.test")


@pytest.fixture(scope="module")
def replicas(signer, tmp_path_factory):
    jwks = signer.write_jwks(tmp_path_factory.mktemp("keys"))
    with running_postgres() as server:
        database = new_database(server)
        arguments = ("--trust", signer.iss, str(jwks), "--audit", database, "--workers", "2")
        with running_service(*arguments, public_url=PUBLIC) as first, \
                running_service(*arguments, public_url=PUBLIC) as second:
            yield first, second, database


def call(service, token: str, patient: str = "imt-example-1") -> httpx.Response:
    body = hook_request("patient-view", patient, prefetch=prefetch_for(example_resources(patient)))
    return httpx.post(service.url + "/cds-services/imt-patient-view", json=body, headers=bearer(token), timeout=60)


def test_concurrent_calls_on_both_replicas_make_one_valid_chain_with_every_evaluation_once(replicas, signer):
    first, second, database = replicas
    before = raw_sql(database, "SELECT count(*) FROM audit_records")[0][0][0]
    jobs = [(service, f"replica-patient-{i}") for i in range(CALLS_PER_REPLICA) for service in (first, second)]
    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda job: call(job[0], signer.token(HOOK), job[1]), jobs))
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses if r.status_code != 200][:1]
    rows = raw_sql(database, "SELECT seq, patient_id FROM audit_records ORDER BY seq")[0]
    assert len(rows) - before == len(jobs)
    recorded = [patient for _, patient in rows[before:]]
    assert sorted(recorded) == sorted(patient for _, patient in jobs)  # every evaluation once, none lost or doubled
    store = open_store(database, create=False)
    try:
        report = store.verify()
    finally:
        store.close()
    assert report.ok, report.to_dict()
    assert report.records == len(rows)


def test_a_token_used_on_one_replica_is_refused_by_the_other(replicas, signer):
    first, second, _ = replicas
    token = signer.token(HOOK)
    assert call(first, token).status_code == 200
    again = call(second, token)
    assert again.status_code == 401, again.text
    refusals = [line for line in second.log_text().splitlines() if "refused (401)" in line]
    assert refusals and "already used" in refusals[-1], refusals[-1:]
    other = signer.token(HOOK)
    assert call(second, other).status_code == 200
    assert call(first, other).status_code == 401


def test_feedback_sent_to_either_replica_is_stored_once(replicas, signer):
    first, second, database = replicas
    shown = call(first, signer.token(HOOK)).json()["cards"][0]
    sent = []
    for service in (first, second):
        card = shown["uuid"] if service is first else str(uuid.uuid4())
        feedback = {"feedback": [{"card": card, "outcome": "accepted",
                                  "outcomeTimestamp": "2026-01-01T00:00:00Z"}]}
        url = service.url + "/cds-services/imt-patient-view/feedback"
        response = httpx.post(url, json=feedback, headers=bearer(signer.token(HOOK + "/feedback")), timeout=60)
        assert response.status_code == 200 and response.json() == {"stored": 1}, response.text
        sent.append(card)
    for card in sent:
        rows = raw_sql(database, f"SELECT count(*) FROM cds_feedback WHERE card = '{card}'")[0]
        assert rows[0][0] == 1, (card, rows)
    first_row = raw_sql(database, f"SELECT evaluation_id FROM cds_feedback WHERE card = '{sent[0]}'")[0][0]
    assert first_row[0] is not None  # the replica that issued the card knew its evaluation
