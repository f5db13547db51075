"""What one client can hold of ``imt-cds serve``, and how it fails to start: real servers on loopback.

- Half-open connections (headers never finished) beyond the connection cap leave ``/healthz`` and a hook call
  answering at once; the server closes the oldest of them to make room, and says so in the log only a few times.
- A client that never finishes its headers, or its body, is dropped after the configured timeout.
- A feedback write while another process holds the SQLite write lock gets a 503 within the store timeout, and
  other requests are answered meanwhile (the write runs off the event loop).
- Start-up failures are one line with a documented exit code.
- (The log filter itself, with a clock the test controls: tests/test_connections_mutants.py.)
"""

from __future__ import annotations

import re
import resource
import socket
import sqlite3
import subprocess
import threading
from urllib.parse import urlsplit

import httpx
import pytest
from audit_support import hold_sqlite_write_lock
from service_support import SCRIPT, example_resources, free_port, hook_request, prefetch_for, running_service

from imt_cds.cli.main import _parser

ORDER_SIGN = "/cds-services/imt-order-sign"
FEEDBACK = "/cds-services/imt-patient-view/feedback"
HALF_OPEN_REQUEST = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Never-Finished: "  # no blank line, ever


def crizotinib_order() -> dict:
    """An order-sign call that runs in a worker (it reads the facts) but records nothing in the audit store."""
    prefetch = prefetch_for(example_resources())
    request = hook_request("order-sign", prefetch={"patient": prefetch["patient"],
                                                   "conditions": prefetch["conditions"],
                                                   "observations": prefetch["observations"]})
    request["context"]["draftOrders"] = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": {
        "resourceType": "MedicationRequest", "id": "draft-1", "status": "draft", "intent": "order",
        "subject": {"reference": "Patient/imt-example-1"},
        "medicationCodeableConcept": {"text": "crizotinib 200 mg"}}}]}
    return request


def feedback_body() -> dict:
    return {"feedback": [{"card": "a0b1c2d3-0000-4000-8000-000000000000", "outcome": "accepted",
                          "outcomeTimestamp": "2026-01-02T03:04:05Z"}]}


def open_half_open(url: str, count: int) -> list[socket.socket]:
    host, port = urlsplit(url).hostname, urlsplit(url).port
    sockets = []
    for _ in range(count):
        connection = socket.create_connection((host, port), timeout=5)
        connection.sendall(HALF_OPEN_REQUEST)
        sockets.append(connection)
    return sockets


def closed_by_server(connection: socket.socket) -> bool:
    connection.settimeout(0.05)
    try:
        return connection.recv(4096) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def read_until_closed(connection: socket.socket, timeout: float) -> bytes:
    connection.settimeout(timeout)
    received = b""
    while True:
        try:
            chunk = connection.recv(4096)
        except ConnectionResetError:
            return received
        if not chunk:
            return received
        received += chunk


# --- the connection cap -------------------------------------------------------------------------------------------

CAP = 32


@pytest.fixture(scope="module", params=["httptools", "h11"])  # the two HTTP parsers serve can use
def capped_service(request):
    # A long header timeout: only the cap can make room in this test, not the timeout.
    with running_service("--allow-unauthenticated", "--workers", "1", "--max-connections", str(CAP),
                         "--header-timeout", "120", "--http-parser", request.param) as service:
        yield service


def test_half_open_connections_beyond_the_cap_leave_health_and_hooks_answering(capped_service):
    with httpx.Client(base_url=capped_service.url, timeout=30) as warm:  # the worker has served once already
        assert warm.post(ORDER_SIGN, json=crizotinib_order()).status_code == 200
    half_open = open_half_open(capped_service.url, 2 * CAP)
    try:
        with httpx.Client(base_url=capped_service.url, timeout=1.0) as client:
            health = client.get("/healthz")
            order = client.post(ORDER_SIGN, json=crizotinib_order())
        assert health.status_code == 200 and health.json()["status"] == "ok"
        assert order.status_code == 200 and order.json() == {"cards": []}
        closed = sum(closed_by_server(c) for c in half_open)
        assert closed >= CAP, f"only {closed} of {2 * CAP} half-open connections were closed to keep {CAP}"
        assert not closed_by_server(half_open[-1])  # the newest are the ones kept
    finally:
        for connection in half_open:
            connection.close()
    log = capped_service.log_text()
    assert 1 <= log.count("connections open (the limit)") <= 5, log[-3000:]  # rate-limited, not one per eviction


# --- read timeouts ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=["httptools", "h11"])
def impatient_service(request):
    with running_service("--allow-unauthenticated", "--workers", "1", "--header-timeout", "1",
                         "--body-timeout", "1", "--http-parser", request.param) as service:
        yield service


def test_a_client_that_never_finishes_its_headers_is_dropped_after_the_header_timeout(impatient_service):
    (connection,) = open_half_open(impatient_service.url, 1)
    with connection:
        received = read_until_closed(connection, timeout=15)
    assert received.startswith(b"HTTP/1.1 408 ")


def test_a_client_that_never_finishes_its_body_is_dropped_after_the_body_timeout(impatient_service):
    host, port = urlsplit(impatient_service.url).hostname, urlsplit(impatient_service.url).port
    with socket.create_connection((host, port), timeout=5) as connection:
        connection.sendall(b"POST " + ORDER_SIGN.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                           b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"hook\": ")
        received = read_until_closed(connection, timeout=15)
    assert received.startswith(b"HTTP/1.1 408 ")


def test_a_kept_alive_connection_serves_several_requests_within_the_timeouts(impatient_service):
    with httpx.Client(base_url=impatient_service.url, timeout=30) as client:
        answers = [client.get("/healthz").status_code for _ in range(3)]
    assert answers == [200, 200, 200]


# --- the feedback store busy --------------------------------------------------------------------------------------


def test_feedback_while_another_process_holds_the_write_lock_gets_503_and_nothing_else_waits(tmp_path):
    audit = tmp_path / "audit.db"
    with running_service("--allow-unauthenticated", "--workers", "1", "--audit", str(audit),
                         "--store-timeout", "4") as service, httpx.Client(base_url=service.url, timeout=30) as client:
        assert client.post(ORDER_SIGN, json=crizotinib_order()).status_code == 200  # warm
        holder = hold_sqlite_write_lock(audit)
        try:
            answered: dict = {}
            pending = threading.Thread(target=lambda: answered.update(
                response=httpx.post(service.url + FEEDBACK, json=feedback_body(), timeout=4 + 6)))
            pending.start()
            threading.Event().wait(0.5)  # let the feedback call reach the server and wait for the lock
            with httpx.Client(base_url=service.url, timeout=1.0) as quick:
                health = quick.get("/healthz")
                order = quick.post(ORDER_SIGN, json=crizotinib_order())
            still_waiting = pending.is_alive()
            pending.join()
        finally:
            holder.stdin.close()
            holder.wait(10)
        assert health.status_code == 200 and order.status_code == 200
        assert still_waiting, "the feedback call was over before the other requests were made: nothing was shown"
        busy = answered["response"]
        assert busy.status_code == 503, busy.text
        assert busy.json()["error"]["code"] == "cds_feedback_unavailable"
        assert "nothing was stored" in busy.json()["error"]["message"]
        # The lock released, the same feedback is stored.
        assert client.post(FEEDBACK, json=feedback_body()).json() == {"stored": 1}
    with sqlite3.connect(audit) as db:
        assert db.execute("SELECT count(*) FROM cds_feedback").fetchone() == (1,)


# --- start-up failures --------------------------------------------------------------------------------------------


def _cap_open_files(soft: int, hard: int):
    return lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


STARTUP_FAILURES = {
    # name: (extra arguments (with {tmp} and {port}), exit code, text the one line holds)
    "audit folder missing": (["--audit", "{tmp}/missing/audit.db"], 3, "folder {tmp}/missing does not exist"),
    "audit file not a database": (["--audit", "{tmp}/notes.txt"], 3, "is not a usable audit database"),
    "postgresql unreachable": (["--audit", "postgresql://imt@127.0.0.1:{port}/imt"], 3, "cannot connect"),
    "port taken": (["--port", "{taken}"], 3, "[cds_cannot_listen]: cannot listen on 127.0.0.1 port {taken}: Address "
                   "already in use"),
    "connection cap above the open-file limit": (["--max-connections", "5000"], 2, "--max-connections 5000 needs"),
    "header timeout zero": (["--header-timeout", "0"], 2, "--header-timeout 0 must be more than 0"),
    "store timeout negative": (["--store-timeout", "-1"], 2, "--store-timeout -1 must be more than 0"),
}


@pytest.mark.parametrize("name", list(STARTUP_FAILURES))
def test_serve_start_up_failures_are_one_line_with_a_documented_exit_code(tmp_path, name):
    arguments, code, text = STARTUP_FAILURES[name]
    (tmp_path / "notes.txt").write_text("not a database\n" * 100)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        values = {"tmp": str(tmp_path), "port": str(free_port()), "taken": str(taken.getsockname()[1])}
        command = [str(SCRIPT), "serve", "--allow-unauthenticated", "--port", str(free_port()), "--workers", "1",
                   *(a.format(**values) for a in arguments)]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=tmp_path,
                                preexec_fn=_cap_open_files(1024, 2048))
    lines = result.stderr.strip().splitlines()
    assert result.returncode == code, result.stderr
    assert len(lines) == 1 and lines[0].startswith("imt-cds: error ["), result.stderr
    assert text.format(**values) in lines[0]
    assert result.stdout == ""


def test_serve_without_authentication_suggests_a_trust_option_the_parser_accepts(tmp_path):
    result = subprocess.run([str(SCRIPT), "serve", "--port", str(free_port())], capture_output=True, text=True,
                            timeout=120, cwd=tmp_path)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    suggestion = re.search(r"\((--trust [^)]*)\)", result.stderr).group(1)
    args = _parser().parse_args(["serve", *suggestion.split()])
    assert args.trust == [suggestion.split()[1:]]


def test_serve_fits_its_default_connection_cap_under_a_low_open_file_limit(tmp_path):
    # A hard limit of 400 leaves 400 - 256 reserved - 8 per worker = 136 connections.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen([str(SCRIPT), "serve", "--allow-unauthenticated", "--port", str(port), "--workers",
                                "1", "--log-level", "warning"], stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                               preexec_fn=_cap_open_files(300, 400))
    try:
        first = process.stderr.readline() + process.stderr.readline()
    finally:
        process.terminate()
        process.wait(30)
    assert "at most 136 connections" in first, first


def test_the_limits_are_documented_in_serve_help():
    text = subprocess.run([str(SCRIPT), "serve", "--help"], capture_output=True, text=True, timeout=60).stdout
    for option in ("--max-connections", "--header-timeout", "--body-timeout", "--keep-alive-timeout",
                   "--store-timeout", "3 cannot start"):
        assert option in text
