"""Attacks on the service's outbound calls (server-side request forgery through ``fhirServer``), each a test.

The service and the FHIR servers are real (``imt-cds serve`` through its console script, FHIR servers on loopback);
the slow and oversized servers are plain sockets written here, because no well-behaved server misbehaves like that.
Every target is a loopback address.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import httpx
import pytest
from service_support import (
    EXAMPLE_PATIENT,
    FhirServer,
    example_resources,
    free_port,
    hook_request,
    running_service,
)

from imt_cds.service.errors import PrefetchUnavailableError
from imt_cds.service.calls import SERVICES
from imt_cds.service.prefetch import UrlRefused, collect_resources, normalise_url

PATIENT_VIEW = "/cds-services/imt-patient-view"
MARKER = "internal-secret-4f1c"  # what an internal server holds; it must never reach an answer


@pytest.fixture(scope="module")
def internal():
    """A FHIR server an attacker would like the service to read (its data carries MARKER)."""
    resources = example_resources()
    resources[0] = {**resources[0], "name": [{"text": MARKER}]}
    with FhirServer(resources, documents={"/secret": {"resourceType": "Patient", "id": MARKER}}) as server:
        yield server


@pytest.fixture(scope="module")
def default_service():
    with running_service("--allow-unauthenticated", "--workers", "1") as running:
        yield running


@pytest.fixture(scope="module")
def closed_port():
    return free_port()  # nothing listens there


@pytest.fixture(scope="module")
def allowing_service(internal, closed_port):
    with running_service("--allow-unauthenticated", "--workers", "1", "--fhir-server", internal.base,
                         "--fhir-server", f"http://127.0.0.1:{closed_port}/fhir") as running:
        yield running


def view(service, fhir_server, patient=EXAMPLE_PATIENT):
    request = hook_request("patient-view", patient, fhirServer=fhir_server)
    return httpx.post(service.url + PATIENT_VIEW, json=request, timeout=60)


# --- no outbound call unless allowed -------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["{base}", "http://localhost:{port}/fhir", "http://2130706433:{port}/fhir",
                                   "http://0x7f000001:{port}/fhir", "http://[::ffff:127.0.0.1]:{port}/fhir",
                                   "http://169.254.169.254/latest/meta-data"])
def test_without_an_allowed_fhir_server_nothing_is_fetched_at_all(default_service, internal, where):
    port = internal.base.split(":")[2].split("/")[0]
    internal.requests.clear()
    response = view(default_service, where.format(base=internal.base, port=port))
    assert response.status_code == 412, response.text
    assert internal.requests == []
    assert MARKER not in response.text and "127.0.0.1" not in response.text and "169.254" not in response.text
    assert "fetches nothing from fhirServer" in response.json()["error"]["message"]


def test_an_allowed_fhir_server_is_read(allowing_service, internal):
    internal.requests.clear()
    response = view(allowing_service, internal.base)
    assert response.status_code == 200, response.text
    assert any(path.startswith("/fhir/Patient/") for path, _ in internal.requests)


@pytest.mark.parametrize("escape", ["/../secret", "/%2e%2e/secret", "/%2E./secret", "/./../secret",
                                    "/..;/secret", "/..%2fsecret", "\\..\\secret"])
def test_dot_segments_cannot_escape_an_allowed_prefix(allowing_service, internal, escape):
    internal.requests.clear()
    response = view(allowing_service, internal.base + escape)
    assert response.status_code in (400, 412), response.text
    assert not any(path.startswith("/secret") for path, _ in internal.requests)
    assert MARKER not in response.text


@pytest.mark.parametrize("next_base", ["{origin}/fhir/../secret", "{origin}/fhir/%2e%2e/secret",
                                       "{origin}/fhir-other", "http://2130706433:{port}/fhir"])
def test_a_next_page_link_cannot_leave_the_fhir_server(allowing_service, internal, next_base):
    port = internal.origin.rsplit(":", 1)[1]
    internal.page_size = 1
    internal.next_link_base = next_base.format(origin=internal.origin, port=port)
    internal.requests.clear()
    try:
        response = view(allowing_service, internal.base)
    finally:
        internal.page_size = 100
        internal.next_link_base = None
    assert response.status_code == 412, response.text
    assert all(path.startswith("/fhir/") and "/../" not in path and "%2e" not in path.lower()
               for path, _ in internal.requests), internal.requests
    assert "outside fhirServer" in allowing_service.log_text()


def test_error_bodies_do_not_tell_a_closed_port_from_a_failing_server(allowing_service, internal, closed_port):
    internal.status_override["Patient"] = 500
    try:
        failing = view(allowing_service, internal.base)
    finally:
        internal.status_override.clear()
    closed = view(allowing_service, f"http://127.0.0.1:{closed_port}/fhir")
    missing = view(allowing_service, internal.base, patient="nobody")  # a 404 on the server
    assert failing.status_code == closed.status_code == missing.status_code == 412
    assert failing.json() == closed.json() == missing.json()
    assert str(closed_port) not in closed.text and "ConnectError" not in closed.text
    assert failing.json()["error"]["details"]["missing"]["patient"].endswith("could not be fetched from fhirServer "
                                                                             "(details in the service log)")


# --- the URL checks, one by one ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("url", "normal"), [
    ("HTTP://FHIR.Example.ORG:80/a/b/../c", "http://fhir.example.org/a/c"),
    ("https://fhir.example.org:443/fhir/%2e%2e/admin", "https://fhir.example.org/admin"),
    ("https://fhir.example.org/fhir/./x/%2E/y/..", "https://fhir.example.org/fhir/x/"),
    ("https://fhir.example.org./fhir", "https://fhir.example.org/fhir"),
    ("https://[::1]:8443/fhir", "https://[::1]:8443/fhir"),
])
def test_urls_are_compared_in_normal_form(url, normal):
    assert normalise_url(url).text() == normal


@pytest.mark.parametrize("url", ["http://2130706433/", "http://0x7f000001/", "http://0177.0.0.1/", "http://127.1/",
                                 "http://0x7f.0.0.1/", "http://user@fhir.example.org/", "ftp://fhir.example.org/",
                                 "http://fhir.example.org/a%2fb", "http://fhir.example.org\\@evil/",
                                 "http://fhir.example.org/..;/x", "http://fhir.example.org:99999/"])
def test_urls_that_mean_something_else_to_another_parser_are_refused(url):
    with pytest.raises(UrlRefused):
        normalise_url(url)


def test_a_prefix_matches_whole_path_segments_only():
    prefix = normalise_url("https://fhir.example.org/fhir")
    assert normalise_url("https://fhir.example.org/fhir/Patient/1").under(prefix)
    assert not normalise_url("https://fhir.example.org/fhir-admin/Patient/1").under(prefix)
    assert not normalise_url("https://fhir.example.org/fhir/../admin").under(prefix)
    assert not normalise_url("https://fhir.example.org:8443/fhir/Patient/1").under(prefix)
    assert not normalise_url("http://fhir.example.org/fhir/Patient/1").under(prefix)


def _collect(fhir_server: str, *, allowed: list[str], private=(), deadline=20.0, timeout=10.0, max_bytes=1 << 20):
    request = hook_request("patient-view", fhirServer=fhir_server)
    return asyncio.run(collect_resources(SERVICES[0].prefetch, request, allowed_servers=allowed, timeout=timeout,
                                         max_pages=20, max_bytes=max_bytes, deadline=deadline,
                                         private_networks=private))


def test_a_host_name_that_resolves_to_loopback_is_refused_unless_its_network_is_allowed(internal):
    port = internal.origin.rsplit(":", 1)[1]
    by_name = f"http://localhost:{port}/fhir"
    internal.requests.clear()
    with pytest.raises(PrefetchUnavailableError):
        _collect(by_name, allowed=[by_name])
    assert internal.requests == []
    assert _collect(by_name, allowed=[by_name], private=("127.0.0.0/8", "::1/128"))  # the deployer allowed it
    assert internal.requests and internal.requests[0][1]["host"] == f"localhost:{port}"


def test_a_context_patient_id_cannot_add_path_segments(internal):
    request = hook_request("patient-view", "../secret", fhirServer=internal.base)
    with pytest.raises(Exception, match="must be a FHIR id"):
        asyncio.run(collect_resources(SERVICES[0].prefetch, request, allowed_servers=[internal.base], timeout=5,
                                      max_pages=20, max_bytes=1 << 20))


# --- misbehaving servers -------------------------------------------------------------------------------------------


class _RawServer:
    """A loopback HTTP server that answers every connection with ``respond(connection)`` (bounded by the caller)."""

    def __init__(self, respond):
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(30)
        self.base = f"http://127.0.0.1:{self._listener.getsockname()[1]}/fhir"
        self.sent = 0
        self.broke = False
        self._respond = respond
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self):
        try:
            connection, _ = self._listener.accept()
        except OSError:
            return
        with connection:
            connection.recv(65536)
            try:
                self._respond(self, connection)
            except OSError:
                self.broke = True  # the client stopped reading and closed the connection

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._listener.close()
        self._thread.join(60)


def _drip(server, connection):
    connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/fhir+json\r\nContent-Length: 100\r\n\r\n")
    for _ in range(100):  # 100 bytes, one every 0.2 s: 20 s in all, each read well inside the read timeout
        connection.sendall(b" ")
        server.sent += 1
        time.sleep(0.2)


def test_one_deadline_bounds_all_fetches_of_a_request_even_when_a_server_drips():
    with _RawServer(_drip) as server:
        started = time.monotonic()
        with pytest.raises(PrefetchUnavailableError) as refused:
            _collect(server.base, allowed=[server.base], deadline=1.0, timeout=5.0)
        elapsed = time.monotonic() - started
    assert elapsed < 10, f"the request was held {elapsed:.1f} s with a 1 s deadline"
    assert "in time" in str(refused.value.details)


def _flood(server, connection):
    connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/fhir+json\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = b" " * 65536
    for _ in range(512):  # 32 MiB, never announced
        connection.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        server.sent += len(chunk)
    connection.sendall(b"0\r\n\r\n")


def test_a_response_is_abandoned_while_streaming_once_it_passes_the_size_cap():
    with _RawServer(_flood) as server:
        with pytest.raises(PrefetchUnavailableError):
            _collect(server.base, allowed=[server.base], max_bytes=256 * 1024)
    assert server.broke and server.sent < 16 * 1024 * 1024, server.sent
