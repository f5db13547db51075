"""The ``imt-cds serve`` options for the token and outbound limits: each is refused with one line (exit 2) when out
of range, shown in ``--help``, and, when given, reaches the check it sets (the defaults are tested where the checks
are: ``test_security_tokens.py``, ``test_security_outbound.py``).

One real server runs with every option changed from its default: tokens may live 10 minutes but be at most 2 KiB,
a FHIR server named ``localhost`` is allowed by its network, and all fetches of a request share a 1 s deadline.
Every target is a loopback address.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from service_support import (
    EXAMPLE_PATIENT,
    SCRIPT,
    FhirServer,
    Signer,
    bearer,
    example_resources,
    free_port,
    hook_request,
    prefetch_for,
    running_service,
    worker_pids,
)

from imt_cds.audit import open_store

PUBLIC = "https://cds.example.org"
DISCOVERY = PUBLIC + "/cds-services"
PATIENT_VIEW = "/cds-services/imt-patient-view"

REFUSED = {
    # name: (arguments, text the one line holds)
    "token lifetime zero": (["--jwt-max-lifetime", "0"], "--jwt-max-lifetime 0 must be more than 0 and at most 3600"),
    "token lifetime of a day": (["--jwt-max-lifetime", "86400"], "--jwt-max-lifetime 86400 must be more than 0"),
    "token cap too small": (["--jwt-max-bytes", "100"], "--jwt-max-bytes 100 must be from 1024 to 65536"),
    "token cap too large": (["--jwt-max-bytes", "1048576"], "--jwt-max-bytes 1048576 must be from 1024 to 65536"),
    "fetch deadline zero": (["--fhir-deadline", "0"], "--fhir-deadline 0 must be more than 0 and at most 300"),
    "fetch deadline of an hour": (["--fhir-deadline", "3600"], "--fhir-deadline 3600 must be more than 0"),
    "network that is not one": (["--fhir-private-network", "intranet"], "'intranet' is not a network in CIDR form"),
    "network with host bits": (["--fhir-private-network", "10.1.2.3/8"], "did you mean 10.0.0.0/8?"),
    "network of every address": (["--fhir-private-network", "::/0"], "'::/0' allows every address"),
    "store timeout past the request timeout": (["--store-timeout", "30"], "--store-timeout 30 must be less than "
                                               "--request-timeout 30"),
    "no room for a job": (["--worker-depth", "0"], "--worker-depth 0 must be from 1 to 8"),
    "jobs queued past the cap": (["--worker-depth", "9"], "--worker-depth 9 must be from 1 to 8"),
}


@pytest.mark.parametrize("name", list(REFUSED))
def test_an_out_of_range_limit_is_refused_with_one_line_and_exit_2(tmp_path, name):
    arguments, text = REFUSED[name]
    (tmp_path / "jwks.json").write_text('{"keys": []}')
    result = subprocess.run([str(SCRIPT), "serve", "--trust", "https://ehr.example.org/", "jwks.json", "--port",
                             str(free_port()), *arguments], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and lines[0].startswith("imt-cds: error [cds_config]: "), result.stderr
    assert text in lines[0]


def test_help_shows_the_options_and_the_fhir_server_default():
    result = subprocess.run([str(SCRIPT), "serve", "--help"], capture_output=True, text=True, timeout=120)
    text = " ".join(result.stdout.split())
    for option in ("--jwt-max-lifetime SECONDS", "--jwt-max-bytes BYTES", "--fhir-deadline SECONDS",
                   "--fhir-private-network CIDR", "--worker-depth N"):
        assert option in text
    assert "default: any" not in text
    assert "default: none, nothing is fetched" in text
    assert "(default 2; 1: never queue behind a running job; at most 8)" in text


@pytest.fixture(scope="module")
def signer():
    return Signer("https://ehr.example.org/")


@pytest.fixture(scope="module")
def fhir():
    with FhirServer(example_resources()) as server:
        yield server


@pytest.fixture(scope="module")
def silent():
    """A FHIR server that accepts connections and never answers (the kernel completes the handshake)."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        yield f"http://localhost:{listener.getsockname()[1]}/fhir"


@pytest.fixture(scope="module")
def service(signer, fhir, silent, tmp_path_factory):
    jwks = signer.write_jwks(tmp_path_factory.mktemp("jwks"))
    by_name = fhir.base.replace("127.0.0.1", "localhost")
    with running_service("--trust", signer.iss, str(jwks), "--workers", "1", "--jwt-max-lifetime", "600",
                         "--jwt-max-bytes", "2048", "--fhir-server", by_name, "--fhir-server", silent,
                         "--fhir-private-network", "127.0.0.0/8", "--fhir-private-network", "::1/128",
                         "--fhir-deadline", "1", public_url=PUBLIC) as running:
        running.by_name = by_name  # type: ignore[attr-defined]
        yield running


def discover(service, token):
    return httpx.get(service.url + "/cds-services", headers=bearer(token), timeout=60)


def view(service, signer, fhir_server, *, timeout=60.0):
    request = hook_request("patient-view", EXAMPLE_PATIENT, fhirServer=fhir_server)
    return httpx.post(service.url + PATIENT_VIEW, json=request, timeout=timeout,
                      headers=bearer(signer.token(PUBLIC + PATIENT_VIEW)))


def test_a_token_living_longer_than_the_default_is_accepted_up_to_the_lifetime_given(service, signer):
    now = int(time.time())
    assert discover(service, signer.token(DISCOVERY, iat=now, exp=now + 540)).status_code == 200  # 9 minutes
    assert discover(service, signer.token(DISCOVERY, iat=now, exp=now + 660)).status_code == 401  # 11 minutes


def test_a_token_over_the_size_given_is_refused(service, signer):
    small = signer.token(DISCOVERY)
    large = signer.token(DISCOVERY, padding="x" * 2400)
    assert len(small) < 2048 < len(large) < 8192  # the default cap would take it
    assert discover(service, small).status_code == 200
    assert discover(service, large).status_code == 401
    assert "at most 2048 are accepted" in service.log_text()


def test_a_fhir_server_in_a_network_given_is_read(service, signer, fhir):
    fhir.requests.clear()
    response = view(service, signer, service.by_name)
    assert response.status_code == 200, response.text
    assert any(path.startswith("/fhir/Patient/") for path, _ in fhir.requests)


def test_the_fetch_deadline_given_bounds_a_server_that_never_answers(service, signer, silent):
    # The per-request timeout (10 s) and the default deadline (20 s) are both longer than this client waits.
    response = view(service, signer, silent, timeout=8.0)
    assert response.status_code == 412, response.text
    assert "took longer than the 1.0 s deadline" in service.log_text()


def test_serve_freezes_what_it_starts_with_and_collects_young_objects_less_often():
    # In a process of its own: the collector's settings are the process's (pytest's here would change with them).
    code = ("import gc; from imt_cds.cli.serve import GC_YOUNG_THRESHOLD, _tune_collector; "
            "before = gc.get_threshold(); _tune_collector(); "
            "print(gc.get_freeze_count(), GC_YOUNG_THRESHOLD, *before, *gc.get_threshold())")
    done = subprocess.run([str(SCRIPT.with_name("python")), "-c", code], capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr
    frozen, wanted, *thresholds = map(int, done.stdout.split())
    before, after = thresholds[:3], thresholds[3:]
    assert frozen > 10_000  # the modules, the app's classes: out of every later collection's walk
    assert wanted > before[0] and after == [wanted, *before[1:]]  # only the young generation's threshold changes


def _start_and_stop(arguments: list[str], cwd, stop_with: signal.Signals = signal.SIGINT) -> str:  # type: ignore[no-untyped-def]
    """Start ``imt-cds serve`` with these arguments, wait until it announces discovery, stop it with ``stop_with``
    (it must then exit 0, a clean shutdown): its stderr."""
    log = cwd / "serve.log"
    with log.open("wb") as sink:
        process = subprocess.Popen([str(SCRIPT), "serve", "--port", str(free_port()), "--workers", "1", *arguments],
                                   stdout=sink, stderr=subprocess.STDOUT, cwd=cwd)
    try:
        deadline = time.monotonic() + 90
        while "CDS Hooks discovery at" not in log.read_text() and process.poll() is None:
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
    finally:
        if process.poll() is None:
            process.send_signal(stop_with)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:  # a server that did not stop is never left listening (maybe everywhere)
                process.kill()
                process.wait(30)
                raise
    assert process.returncode == 0, f"exit {process.returncode}:\n{log.read_text()}"
    return log.read_text()


def test_a_call_in_progress_when_sigterm_arrives_is_answered_and_recorded_before_the_server_exits_0(tmp_path):
    # What a rolling restart does to a replica: SIGTERM while a call is being evaluated (its worker held stopped).
    audit = tmp_path / "audit.db"
    body = hook_request("patient-view", prefetch=prefetch_for(example_resources()))
    with running_service("--allow-unauthenticated", "--workers", "1", "--audit", str(audit)) as service:
        def jobs() -> dict:
            return httpx.get(service.url + "/healthz", timeout=10).json()

        deadline = time.monotonic() + 30
        while len(worker_pids(service)) != 1 or jobs()["workers"] != 1:
            assert time.monotonic() < deadline, service.log_text()
            time.sleep(0.1)
        (worker,) = worker_pids(service)
        with ThreadPoolExecutor(1) as pool:
            os.kill(worker, signal.SIGSTOP)
            try:
                call = pool.submit(httpx.post, service.url + "/cds-services/imt-patient-view", json=body, timeout=60)
                while jobs()["jobs"]["in_workers"] != 1:
                    assert time.monotonic() < deadline, service.log_text()
                    time.sleep(0.05)
                service.process.send_signal(signal.SIGTERM)
                time.sleep(1)
                assert service.process.poll() is None, service.log_text()  # it waits for the call in progress
            finally:
                os.kill(worker, signal.SIGCONT)
            answer = call.result()
        assert service.process.wait(30) == 0, service.log_text()
    assert answer.status_code == 200 and answer.json()["cards"], answer.text
    store = open_store(str(audit), create=False)
    report = store.verify()
    store.close()
    assert (report.ok, report.records) == (True, 1)


@pytest.mark.parametrize("stop_with", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_shuts_the_server_down_cleanly_with_status_0(tmp_path, stop_with):
    # SIGTERM is what an orchestrator or systemd sends, SIGINT a terminal's Ctrl-C: both are a clean shutdown.
    lines = _start_and_stop(["--allow-unauthenticated"], tmp_path, stop_with).splitlines()
    assert "INFO:     Shutting down" in lines and lines[-1].startswith("INFO:     Finished server process ["), lines


@pytest.mark.parametrize("stop_with", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_the_moment_the_start_line_appears_shuts_the_server_down_as_cleanly(tmp_path, stop_with):
    # Read from a pipe, the start line is seen at once and the signal sent at once: before uvicorn has set its own
    # handlers (CI's polling test met this by chance). An exception thrown from the handler into uvicorn's start left
    # its coroutine unrun ("never awaited"), skipped its shutdown lines, once ended in status 1.
    process = subprocess.Popen([str(SCRIPT), "serve", "--port", str(free_port()), "--workers", "1",
                                "--allow-unauthenticated"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=tmp_path)
    try:
        assert process.stderr is not None
        for line in process.stderr:
            if b"CDS Hooks discovery at" in line:
                process.send_signal(stop_with)
                break
        output = process.stderr.read().decode()
        process.wait(60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(30)
    lines = output.splitlines()
    assert process.returncode == 0, output
    assert "INFO:     Shutting down" in lines and lines[-1].startswith("INFO:     Finished server process ["), output
    assert "Traceback" not in output and "never awaited" not in output, output


def test_listening_beyond_loopback_without_a_public_url_warns_what_the_default_url_breaks(tmp_path):
    # Authenticated, with a key only this test holds: while it listens on every interface, nobody can use it.
    trust = ["--trust", "https://ehr.example.org/", str(Signer("https://ehr.example.org/").write_jwks(tmp_path))]
    text = _start_and_stop(["--host", "0.0.0.0", *trust], tmp_path)
    warnings = [line for line in text.splitlines() if "without --public-url" in line]
    port = re.search(r"http://0\.0\.0\.0:([0-9]+)/cds-services", text)[1]  # type: ignore[index]
    assert warnings == [
        "imt-cds: WARNING: listening on 0.0.0.0, not a loopback address, without --public-url: discovery, the JWT "
        f"audience (aud) and card links use http://0.0.0.0:{port}, which is not where an EHR calls the service "
        "(behind a proxy, its URL); set --public-url URL."], text
    text = _start_and_stop(["--host", "0.0.0.0", "--public-url", PUBLIC, *trust], tmp_path)
    assert "CDS Hooks discovery at " + DISCOVERY in text and "without --public-url" not in text


@pytest.mark.parametrize(("host", "warned"), [
    ("127.0.0.1", False), ("127.0.0.2", False), ("::1", False), ("[::1]", False), ("localhost", False),
    ("0.0.0.0", True), ("::", True), ("10.1.2.3", True), ("cds.internal", True),
])
def test_the_public_url_warning_is_for_every_host_but_loopback(host, warned):
    from imt_cds.cli.serve import public_url_warning

    assert (public_url_warning(host, None, f"http://{host}:8080") is not None) is warned
    assert public_url_warning(host, PUBLIC, PUBLIC) is None


def test_serve_and_its_workers_default_to_what_the_service_configuration_documents():
    # The same settings have their defaults written in three places: `imt-cds serve`'s options (its --help must show
    # them without importing the service's extras), ServiceConfig (the library's entry) and the WorkerSettings a
    # worker is started with. serve passes its values on, so a default changed in one place alone would make the
    # command, the library and the workers' own default differ without a word.
    import dataclasses

    from imt_cds.cli.main import _parser
    from imt_cds.service.config import ServiceConfig
    from imt_cds.service.workers import WorkerSettings

    documented = {f.name: f.default for f in dataclasses.fields(ServiceConfig)}
    options = vars(_parser().parse_args(["serve"]))
    for name in ("workers", "worker_depth", "cache_size", "request_timeout"):
        assert options[name] == documented[name], name
    assert options["audit_no_input"] is (not documented["audit_input"])
    assert options["not_eligible_card"] is documented["not_eligible_card"]
    worker = {f.name: f.default for f in dataclasses.fields(WorkerSettings)}
    for name in ("cache_size", "audit_input", "store_timeout", "not_eligible_card"):
        assert worker[name] == documented[name], name


def test_serve_keeps_only_each_inputs_sha256_in_its_audit_records_when_asked(tmp_path):
    for name, options, kept in (("kept", (), True), ("hashed", ("--audit-no-input",), False)):
        audit = tmp_path / f"{name}.db"
        with running_service("--allow-unauthenticated", "--workers", "1", "--audit", str(audit), *options) as service:
            body = hook_request("patient-view", prefetch=prefetch_for(example_resources()))
            assert httpx.post(service.url + PATIENT_VIEW, json=body, timeout=60).status_code == 200
        with open_store(str(audit)) as store:
            records = list(store.records())
        assert len(records) == 1 and (records[0].input is not None) is kept, name
        assert records[0].input_sha256


def test_serve_says_in_one_line_where_it_is_called_whom_it_trusts_and_how_much_it_takes(tmp_path):
    issuers = ("https://ehr.example.org/", "https://other-ehr.example.org/")
    trust = [word for iss in issuers for word in ("--trust", iss, str(Signer(iss).write_jwks(tmp_path)))]
    text = _start_and_stop(["--public-url", PUBLIC, "--max-connections", "64", *trust], tmp_path)
    assert (f"imt-cds: CDS Hooks discovery at {DISCOVERY} (JWT from {issuers[0]}, {issuers[1]}; 1 evaluation "
            "worker(s); at most 64 connections)") in text.splitlines(), text
    text = _start_and_stop(["--public-url", PUBLIC, "--max-connections", "48", "--workers", "2",
                            "--allow-unauthenticated"], tmp_path)
    assert text.splitlines()[:2] == [
        "imt-cds: WARNING: serving WITHOUT authentication (--allow-unauthenticated): any client that can reach this "
        "port gets decision support for any record it sends, and can make the service call any FHIR server. Use it "
        "only on a closed test network; trust your EHR's JWT issuer with --trust ISS JWKS instead.",
        f"imt-cds: CDS Hooks discovery at {DISCOVERY} (NO authentication; 2 evaluation worker(s); at most 48 "
        "connections)"], text


def test_serve_names_no_server_software_and_takes_no_client_address_from_forwarding_headers():
    with running_service("--allow-unauthenticated", "--workers", "1", "--log-level", "info") as service:
        response = httpx.get(service.url + "/healthz", timeout=60,
                             headers={"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https"})
        assert response.status_code == 200
        assert "server" not in response.headers  # (uvicorn's own header would name it and its version)
        deadline = time.monotonic() + 30
        while '"GET /healthz HTTP/1.1" 200' not in service.log_text():
            assert time.monotonic() < deadline, service.log_text()
            time.sleep(0.1)
        # the access log names the connection's own address: a client cannot put another one there
        access = [line for line in service.log_text().splitlines() if "GET /healthz" in line]
        assert access and all("127.0.0.1:" in line and "203.0.113.9" not in line for line in access), access


def test_the_services_own_log_lines_carry_their_level_and_logger(service):
    assert httpx.get(service.url + "/cds-services", timeout=60).status_code == 401  # no token: refused, and logged
    deadline = time.monotonic() + 30
    while "refused (401)" not in service.log_text():
        assert time.monotonic() < deadline, service.log_text()
        time.sleep(0.1)
    refusals = [line for line in service.log_text().splitlines() if "refused (401)" in line]
    assert refusals[-1].startswith("WARNING:     imt_cds.service: imt-cds: GET /cds-services refused (401): "), refusals


def test_the_log_keeps_every_feedback_row_and_cuts_a_flood_of_malformed_requests():
    """The repeated-log filter is on the server log's handlers (the root's and uvicorn's): feedback written to the
    log is data and is never cut; uvicorn's warning for a request it cannot parse is, after five alike."""
    with running_service("--allow-unauthenticated", "--workers", "1") as service:
        for number in range(8):
            body = {"feedback": [{"card": f"card-{number}", "outcome": "accepted",
                                  "outcomeTimestamp": "2026-01-02T03:04:05Z"}]}
            response = httpx.post(service.url + PATIENT_VIEW + "/feedback", json=body, timeout=30)
            assert response.json() == {"stored": 1}
        port = int(service.url.rsplit(":", 1)[1])
        for _ in range(8):
            with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
                connection.sendall(b"NOT HTTP AT ALL\r\n\r\n")
                connection.recv(4096)
        deadline = time.monotonic() + 30
        while "Invalid HTTP request" not in service.log_text() or "card-7" not in service.log_text():
            assert time.monotonic() < deadline, service.log_text()
            time.sleep(0.1)
        log = service.log_text().splitlines()
    assert [f"card-{number}" in "".join(line for line in log if "cds-feedback" in line) for number in range(8)] == [
        True] * 8
    assert 1 <= sum("Invalid HTTP request" in line for line in log) <= 5, log
