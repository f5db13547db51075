"""The outbound-call guards of service/prefetch.py one by one, in process: each refusal of ``normalise_url`` with the
reason the service log gets, the normal form of the paths it keeps, the context ids a prefetch template accepts,
the prefetch shapes refused, and a deployer's settings read as written. The attacks through a running service are
in test_security_outbound.py; these were written for the planted mistakes of that module it did not see
(tests/mutation-survivors.md)."""

from __future__ import annotations

import asyncio
import logging
import re

import pytest
from service_support import EXAMPLE_PATIENT, FhirServer, example_resources, hook_request

from imt_cds.service.calls import SERVICES
from imt_cds.service.errors import BadRequestError, PrefetchUnavailableError
from imt_cds.service.prefetch import (
    MAX_URL_CHARS,
    Template,
    UrlRefused,
    collect_resources,
    normalise_url,
    render_template,
)

BASE = "https://fhir.example.org"


# --- normalise_url: what is refused, and the reason logged ---------------------------------------------------------


@pytest.mark.parametrize(("url", "reason"), [
    (None, "not a URL without spaces, control characters or backslashes"),
    (123, "not a URL without spaces, control characters or backslashes"),
    ("", "not a URL without spaces, control characters or backslashes"),
    (f"{BASE}/a b", "not a URL without spaces, control characters or backslashes"),
    (f"{BASE}/a\tb", "not a URL without spaces, control characters or backslashes"),
    (f"{BASE}/a\x00b", "not a URL without spaces, control characters or backslashes"),
    (f"{BASE}/a\x7fb", "not a URL without spaces, control characters or backslashes"),
    (f"{BASE}/a\\b", "not a URL without spaces, control characters or backslashes"),
    ("ftp://fhir.example.org/", "scheme 'ftp' is not http or https"),
    ("https://user@fhir.example.org/", "user-info in the URL"),
    ("https:///fhir", "no host, or a percent-encoded or zoned host"),
    ("https://fhir%2eexample.org/fhir", "no host, or a percent-encoded or zoned host"),
    ("https://[fe80::1%25eth0]/fhir", "no host, or a percent-encoded or zoned host"),
    ("https://fhir.example.org:99999/", "the port is not a number from 0 to 65535"),
    ("https://2130706433/", "a numeric host that is not a dotted-decimal IPv4 address"),
    (f"{BASE}/fhir/a%2Fb", "percent-encoded slash, backslash or NUL in the path"),
    (f"{BASE}/fhir/a%5cb", "percent-encoded slash, backslash or NUL in the path"),
    (f"{BASE}/fhir/a%00b", "percent-encoded slash, backslash or NUL in the path"),
    (f"{BASE}/fhir/..;x/admin", "a dot segment with parameters (..;) in the path"),
    (f"{BASE}/fhir/.;x/admin", "a dot segment with parameters (..;) in the path"),
])
def test_each_refusal_gives_its_reason(url, reason):
    with pytest.raises(UrlRefused) as refused:
        normalise_url(url)
    assert str(refused.value) == reason


def test_a_url_may_be_as_long_as_the_cap_and_no_longer():
    path = "/fhir/" + "a" * (MAX_URL_CHARS - len(BASE) - len("/fhir/"))
    assert len(BASE + path) == MAX_URL_CHARS == 8192
    assert normalise_url(BASE + path).path == path
    with pytest.raises(UrlRefused) as refused:
        normalise_url(BASE + path + "a")
    assert str(refused.value) == "8193 characters long, over the 8192 this service requests"


@pytest.mark.parametrize(("url", "normal"), [
    (BASE, f"{BASE}/"),  # no path is the root
    (f"{BASE}/fhir/.", f"{BASE}/fhir/"),  # a last "." keeps the trailing slash, as RFC 3986 5.2.4 does
    (f"{BASE}/fhir/x/..", f"{BASE}/fhir/"),
    (f"{BASE}/fhir;v=1/Patient", f"{BASE}/fhir;v=1/Patient"),  # parameters on an ordinary segment are kept
    (f"{BASE}/fhir/Patient?_id=1;2", f"{BASE}/fhir/Patient?_id=1;2"),
])
def test_paths_keep_their_normal_form(url, normal):
    assert normalise_url(url).text() == normal


def test_a_prefix_path_ending_in_a_capital_x_is_not_cut_short():
    # paths are case-sensitive: only the prefix's trailing slashes are dropped before comparing
    assert not normalise_url(f"{BASE}/FHIR/Patient").under(normalise_url(f"{BASE}/FHIRX"))


def test_a_prefix_with_a_trailing_slash_covers_its_own_path():
    prefix = normalise_url(f"{BASE}/fhir/")
    assert normalise_url(f"{BASE}/fhir").under(prefix)
    assert normalise_url(f"{BASE}/fhir/Patient").under(prefix)
    assert not normalise_url(f"{BASE}/fhirx").under(prefix)


# --- render_template: the context values put into a query ---------------------------------------------------------

PATIENT = Template("patient", "Patient/{{context.patientId}}")


@pytest.mark.parametrize("value", [None, "", 7])
def test_a_missing_or_empty_context_value_is_refused_by_name(value):
    with pytest.raises(BadRequestError) as refused:
        render_template(PATIENT, {"patientId": value})
    assert str(refused.value) == "context.patientId is needed to fetch patient and is missing"


@pytest.mark.parametrize("value", ["..", "...", ".", "a/b", "a b", "x" * 65, "é"])
def test_a_context_id_must_be_a_fhir_id_that_is_not_only_dots(value):
    with pytest.raises(BadRequestError) as refused:
        render_template(PATIENT, {"patientId": value})
    assert str(refused.value) == ("context.patientId must be a FHIR id (letters, digits, '-' and '.', at most 64 "
                                  "characters) to fetch data with it")


@pytest.mark.parametrize("value", ["X.X", "a.b-1", "x" * 64])
def test_a_fhir_id_is_put_in_as_it_is(value):
    assert render_template(PATIENT, {"patientId": value}) == f"Patient/{value}"


def test_a_context_value_that_is_no_id_is_url_encoded():
    search = Template("orders", "MedicationRequest?encounter={{context.encounter}}")
    assert render_template(search, {"encounter": "a b&c=/"}) == "MedicationRequest?encounter=a%20b%26c%3D%2F"


# --- the prefetch as the client sent it ----------------------------------------------------------------------------


@pytest.mark.parametrize("prefetch", [[], "", "patient", 3, False])
def test_a_prefetch_that_is_not_an_object_is_refused(prefetch):
    request = {**hook_request("patient-view"), "prefetch": prefetch}
    with pytest.raises(BadRequestError) as refused:
        asyncio.run(collect_resources(SERVICES[0].prefetch, request, allowed_servers=[], timeout=5, max_pages=2,
                                      max_bytes=1 << 20))
    assert str(refused.value) == "prefetch must be an object keyed by prefetch key"


# --- the deployer's settings ---------------------------------------------------------------------------------------


def test_an_allowed_server_that_is_no_url_is_logged_and_matches_nothing(caplog):
    request = hook_request("patient-view", prefetch={}, fhirServer=f"{BASE}/fhir")
    with caplog.at_level(logging.ERROR, logger="imt_cds.service.prefetch"), \
            pytest.raises(PrefetchUnavailableError, match="no FHIR server is allowed"):
        asyncio.run(collect_resources(SERVICES[0].prefetch, request, allowed_servers=["ftp://fhir.example.org/"],
                                      timeout=5, max_pages=2, max_bytes=1 << 20))
    assert [(r.name, r.getMessage()) for r in caplog.records] == [
        ("imt_cds.service.prefetch", "imt-cds: allowed FHIR server 'ftp://fhir.example.org/' is ignored: scheme "
                                     "'ftp' is not http or https")]


def test_a_private_network_may_be_written_with_its_host_bits_set():
    # "127.0.0.1/8" as a deployer may write it means 127.0.0.0/8, as ip_network(strict=False) reads it
    with FhirServer(example_resources()) as server:
        request = hook_request("patient-view", prefetch={}, fhirServer=server.base)
        resources = asyncio.run(collect_resources(SERVICES[0].prefetch, request, allowed_servers=[server.base],
                                                  timeout=5, max_pages=5, max_bytes=1 << 20,
                                                  private_networks=["127.0.0.1/8"]))
    assert resources and server.requests


# --- what the client is told when the data cannot be had ------------------------------------------------------------

KEYS = [t.key for t in SERVICES[0].prefetch]


def _refusal(request, allowed, caplog=None):
    with pytest.raises((PrefetchUnavailableError, BadRequestError)) as refused:
        asyncio.run(collect_resources(SERVICES[0].prefetch, request, allowed_servers=allowed, timeout=5, max_pages=2,
                                      max_bytes=1 << 20))
    return refused.value


def test_without_a_fhir_server_the_missing_keys_are_named():
    request = hook_request("patient-view", prefetch={"patient": None, "conditions": {
        "resourceType": "OperationOutcome"}})
    error = _refusal(request, [f"{BASE}/fhir"])
    absent = [k for k in KEYS if k not in ("patient", "conditions")]
    assert str(error) == (f"prefetch lacks conditions, {', '.join(absent)} and the request gives no fhirServer to "
                          "fetch them from")
    assert error.details == {"missing": {"conditions": "the client could not prefetch it (OperationOutcome)",
                                         **{k: "not prefetched" for k in absent}}}


def test_with_no_server_allowed_the_client_is_told_nothing_is_fetched():
    error = _refusal(hook_request("patient-view", prefetch={}, fhirServer=f"{BASE}/fhir"), [])
    assert isinstance(error, PrefetchUnavailableError)
    assert str(error) == (f"prefetch lacks {', '.join(KEYS)}: this service fetches nothing from fhirServer (no FHIR "
                          "server is allowed)")
    assert error.details == {"missing": {k: "not prefetched; this service fetches nothing from fhirServer"
                                         for k in KEYS}}


def test_a_fhir_server_that_is_no_usable_url_is_a_bad_request_and_logged(caplog):
    request = hook_request("patient-view", prefetch={}, fhirServer="ftp://fhir.example.org/")
    with caplog.at_level(logging.WARNING, logger="imt_cds.service.prefetch"):
        error = _refusal(request, [f"{BASE}/fhir"])
    assert isinstance(error, BadRequestError)
    assert str(error) == "fhirServer is not an absolute http(s) URL this service can use"
    assert [r.getMessage() for r in caplog.records] == [
        "imt-cds: fhirServer ftp://fhir.example.org/ refused: scheme 'ftp' is not http or https"]


# --- what is sent to the FHIR server: the client's bearer token, and what is asked for ------------------------------


@pytest.fixture(scope="module")
def fhir_server():
    with FhirServer(example_resources()) as server:
        yield server


def _fetch(server, authorization=None):
    request = hook_request("patient-view", prefetch={}, fhirServer=server.base)
    if authorization is not None:
        request["fhirAuthorization"] = authorization
    server.requests.clear()
    resources = asyncio.run(collect_resources(SERVICES[0].prefetch, request, allowed_servers=[server.base], timeout=5,
                                              max_pages=5, max_bytes=1 << 20, private_networks=["127.0.0.0/8"]))
    assert resources
    return [headers for _, headers in server.requests]


@pytest.mark.parametrize("authorization", [{"access_token": " tok-1 ", "token_type": "Bearer"},
                                           {"access_token": "tok-1", "token_type": "bearer"},
                                           {"access_token": "tok-1"}])  # token_type defaults to Bearer
def test_the_clients_access_token_is_sent_as_a_bearer_token_on_every_fetch(fhir_server, authorization):
    sent = _fetch(fhir_server, authorization)
    assert len(sent) == len(KEYS)
    assert {(h.get("authorization"), h.get("accept")) for h in sent} == {
        ("Bearer tok-1", "application/fhir+json, application/json")}


def test_without_fhir_authorization_no_token_is_sent(fhir_server):
    assert all("authorization" not in headers for headers in _fetch(fhir_server))


@pytest.mark.parametrize(("authorization", "message"), [
    ("tok-1", "fhirAuthorization must be an object with an access_token"),
    ({"token_type": "Bearer"}, "fhirAuthorization must be an object with an access_token"),
    ({"access_token": 7}, "fhirAuthorization must be an object with an access_token"),
    ({"access_token": "tok-1", "token_type": "MAC"}, "fhirAuthorization.token_type must be Bearer"),
    ({"access_token": "tok 1"}, "fhirAuthorization.access_token must not contain spaces or control characters"),
    ({"access_token": "tok\r\nX-Injected: 1"},
     "fhirAuthorization.access_token must not contain spaces or control characters"),
])
def test_an_unusable_fhir_authorization_is_refused_before_anything_is_fetched(fhir_server, authorization, message):
    request = hook_request("patient-view", prefetch={}, fhirServer=fhir_server.base)
    request["fhirAuthorization"] = authorization
    fhir_server.requests.clear()
    with pytest.raises(BadRequestError) as refused:
        asyncio.run(collect_resources(SERVICES[0].prefetch, request, allowed_servers=[fhir_server.base], timeout=5,
                                      max_pages=5, max_bytes=1 << 20, private_networks=["127.0.0.0/8"]))
    assert str(refused.value) == message
    assert fhir_server.requests == []


def test_a_fhir_server_outside_the_allowed_prefixes_is_named_in_the_log_only(caplog):
    request = hook_request("patient-view", prefetch={}, fhirServer="https://other.example.org/fhir")
    with caplog.at_level(logging.WARNING, logger="imt_cds.service.prefetch"):
        error = _refusal(request, [f"{BASE}/fhir"])
    assert str(error) == f"prefetch lacks {', '.join(KEYS)}: fhirServer is not one this service is allowed to call"
    assert error.details == {"missing": {k: "not prefetched; fhirServer is not one this service is allowed to call"
                                         for k in KEYS}}
    assert "other.example.org" not in str(error.to_dict())
    assert [r.getMessage() for r in caplog.records] == [
        "imt-cds: fhirServer https://other.example.org/fhir is not under an allowed FHIR server prefix"]


# --- how the fetches are made: no redirect or proxy, every missing key, the page bound, the log -------------------


def _collect(base, *, prefetch=None, max_pages=20, deadline=20.0):
    request = hook_request("patient-view", prefetch=prefetch or {}, fhirServer=base)
    return asyncio.run(collect_resources(SERVICES[0].prefetch, request, allowed_servers=[base], timeout=5,
                                         max_pages=max_pages, max_bytes=1 << 20, deadline=deadline,
                                         private_networks=["127.0.0.0/8"]))


class _Redirecting:
    """A loopback server answering every GET with a redirect to ``target`` (a server the checks never saw)."""

    def __init__(self, target: str):
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        import threading

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                self.send_response(302)
                self.send_header("Location", target + self.path[len("/fhir"):])
                self.send_header("Content-Length", "0")
                self.end_headers()

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self._http.server_address[1]}/fhir"
        threading.Thread(target=self._http.serve_forever, daemon=True).start()

    def close(self):
        self._http.shutdown()
        self._http.server_close()


def test_a_redirect_is_not_followed(fhir_server, caplog):
    redirecting = _Redirecting(fhir_server.base)
    fhir_server.requests.clear()
    try:
        with caplog.at_level(logging.WARNING, logger="imt_cds.service.prefetch"), \
                pytest.raises(PrefetchUnavailableError) as refused:
            _collect(redirecting.base)
    finally:
        redirecting.close()
    assert fhir_server.requests == []
    assert str(refused.value) == f"prefetch lacks {', '.join(KEYS)}: fetching from fhirServer failed"
    assert refused.value.details == {"missing": {
        k: "not prefetched; could not be fetched from fhirServer (details in the service log)" for k in KEYS}}
    (line,) = [r.getMessage() for r in caplog.records]
    patient = f"{redirecting.base}/Patient/{EXAMPLE_PATIENT}"
    assert line == (f"imt-cds: fetching patient from {redirecting.base} failed: {patient} answered HTTP 302 "
                    f"(requested: ['{patient}'])")


def test_proxy_settings_of_the_environment_are_not_used(fhir_server, monkeypatch):
    # A proxy would see the token and could answer for any server: the fetches go straight to the checked address.
    with FhirServer(example_resources()) as proxy:
        for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
            monkeypatch.setenv(name, proxy.origin)
        for name in ("NO_PROXY", "no_proxy"):
            monkeypatch.delenv(name, raising=False)
        fhir_server.requests.clear()
        assert _collect(fhir_server.base)
    assert proxy.requests == []
    assert len(fhir_server.requests) == len(KEYS)


def test_only_the_keys_not_prefetched_are_fetched_each_of_them(fhir_server):
    patient = next(r for r in example_resources() if r["resourceType"] == "Patient")
    fhir_server.requests.clear()
    resources = _collect(fhir_server.base, prefetch={"patient": patient})
    assert resources[0] == patient
    fetched = [path.split("?")[0].rsplit("/", 1)[-1] for path, _ in fhir_server.requests]
    assert fetched == ["Condition", "Observation", "Procedure"]
    assert len(resources) == 1 + 3


def test_a_search_may_take_as_many_pages_as_allowed_and_no_more(caplog):
    with FhirServer(example_resources(), page_size=1) as paging:
        _collect(paging.base)
        pages = max(sum(1 for path, _ in paging.requests if path.startswith(f"/fhir/{kind}?"))
                    for kind in ("Condition", "Observation", "Procedure"))
        assert pages >= 3
        assert _collect(paging.base, max_pages=pages)
        with caplog.at_level(logging.WARNING, logger="imt_cds.service.prefetch"), \
                pytest.raises(PrefetchUnavailableError):
            _collect(paging.base, max_pages=pages - 1)
    assert (f"failed: more than {pages - 1} pages: refusing to evaluate a partial chart (requested: "
            in caplog.records[-1].getMessage())


def test_the_deadline_ends_the_fetches_and_says_so(fhir_server, caplog):
    with caplog.at_level(logging.WARNING, logger="imt_cds.service.prefetch"), \
            pytest.raises(PrefetchUnavailableError) as refused:
        _collect(fhir_server.base, deadline=1e-9)
    assert str(refused.value) == f"prefetch lacks {', '.join(KEYS)}: fetching from fhirServer failed"
    assert refused.value.details == {"missing": {
        k: "not prefetched; could not be fetched from fhirServer in time" for k in KEYS}}
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.startswith(f"imt-cds: fetching patient from {fhir_server.base} took longer than the 1e-09 s deadline "
                           "(requested: [")


def test_the_answers_may_be_as_large_as_the_byte_cap_and_no_larger(fhir_server, caplog):
    import json

    _fetch(fhir_server)  # the paths a chart needs; the server's answer to each is its JSON text, with its length
    total = sum(len(json.dumps(fhir_server.answer(path)[1]).encode()) for path, _ in fhir_server.requests)

    def collect(max_bytes):
        request = hook_request("patient-view", prefetch={}, fhirServer=fhir_server.base)
        return asyncio.run(collect_resources(SERVICES[0].prefetch, request, allowed_servers=[fhir_server.base],
                                             timeout=5, max_pages=5, max_bytes=max_bytes,
                                             private_networks=["127.0.0.0/8"]))

    assert collect(total)
    with caplog.at_level(logging.WARNING, logger="imt_cds.service.prefetch"), \
            pytest.raises(PrefetchUnavailableError):
        collect(total - 1)
    # the last answer's Content-Length already says it would pass the cap: refused before its body is read
    assert re.search(rf"failed: {fhir_server.base}/\S+ announces more than the {total - 1}-byte cap \(requested: ",
                     caplog.records[-1].getMessage())


def _refused_with_log(documents, caplog):
    with FhirServer(example_resources(), documents=documents) as server, \
            caplog.at_level(logging.WARNING, logger="imt_cds.service.prefetch"), \
            pytest.raises(PrefetchUnavailableError):
        _collect(server.base)
    return caplog.records[-1].getMessage(), server.base


@pytest.mark.parametrize(("answer", "words"), [
    ([{"resourceType": "Patient"}], "did not answer with a FHIR resource"),
    ({"resourceType": 7}, "did not answer with a FHIR resource"),
    ({"resourceType": "OperationOutcome", "issue": []}, "answered with an OperationOutcome"),
])
def test_an_answer_that_is_no_resource_or_an_operation_outcome_is_refused(caplog, answer, words):
    line, base = _refused_with_log({f"/fhir/Patient/{EXAMPLE_PATIENT}": answer}, caplog)
    assert f"failed: {base}/Patient/{EXAMPLE_PATIENT} {words} (requested: " in line


def test_only_a_next_link_is_followed_and_only_under_fhir_server(caplog):
    def bundle(base, *links):
        return {"resourceType": "Bundle", "type": "searchset", "entry": [],
                "link": [{"relation": relation, "url": url} for relation, url in links]}

    with FhirServer(example_resources()) as server:
        server.documents["/fhir/Condition"] = bundle(server.base, ("self", f"{server.base}/Condition?patient=x"),
                                                     ("previous", f"{server.base}/Condition?_page=0"))
        assert _collect(server.base)
        assert sum(1 for path, _ in server.requests if path.startswith("/fhir/Condition")) == 1
    line, _ = _refused_with_log({"/fhir/Condition": bundle(None, ("next", "https://elsewhere.example.org/fhir/x"))},
                                caplog)
    assert ("failed: the next page is at https://elsewhere.example.org/fhir/x, outside fhirServer; not followed "
            "(requested: ") in line


def test_an_answer_read_in_many_chunks_is_put_together_whole():
    with FhirServer(example_resources()) as server:
        big = {"resourceType": "Patient", "id": EXAMPLE_PATIENT, "name": [{"text": "x" * 300_000}]}
        server.documents[f"/fhir/Patient/{EXAMPLE_PATIENT}"] = big
        resources = _collect(server.base)
    assert resources[0] == big


def test_a_server_that_cannot_be_reached_is_logged_by_the_kind_of_error(caplog):
    from service_support import free_port

    base = f"http://127.0.0.1:{free_port()}/fhir"
    with caplog.at_level(logging.WARNING, logger="imt_cds.service.prefetch"), \
            pytest.raises(PrefetchUnavailableError):
        _collect(base)
    assert f"failed: cannot fetch {base}/Patient/{EXAMPLE_PATIENT}: ConnectError (requested: " in \
        caplog.records[-1].getMessage()


def test_a_host_name_resolving_to_loopback_is_refused_when_another_network_is_allowed(fhir_server, caplog):
    port = fhir_server.origin.rsplit(":", 1)[1]
    by_name = f"http://localhost:{port}/fhir"
    request = hook_request("patient-view", prefetch={}, fhirServer=by_name)
    fhir_server.requests.clear()
    with caplog.at_level(logging.WARNING, logger="imt_cds.service.prefetch"), \
            pytest.raises(PrefetchUnavailableError):
        asyncio.run(collect_resources(SERVICES[0].prefetch, request, allowed_servers=[by_name], timeout=5,
                                      max_pages=5, max_bytes=1 << 20, private_networks=["10.0.0.0/8"]))
    assert fhir_server.requests == []
    assert "failed: localhost resolves to " in caplog.records[-1].getMessage()
    assert ", a non-public address that is not allowed (requested: []" in caplog.records[-1].getMessage()


@pytest.mark.parametrize(("address", "allowed"), [
    ("93.184.216.34", True), ("2606:2800:220:1::", True),  # public
    ("::ffff:93.184.216.34", True),  # public, IPv4-mapped
    ("127.0.0.1", False), ("10.1.2.3", False), ("169.254.169.254", False), ("::1", False),
    ("::ffff:127.0.0.1", False), ("ff0e::1", False),  # a global multicast address is refused
])
def test_only_public_unicast_addresses_are_allowed_without_the_deployers_say(address, allowed):
    from ipaddress import ip_address

    from imt_cds.service.prefetch import _allowed_address, _policy

    policy = _policy(["https://fhir.example.org/fhir"], [], 5, 5, 1 << 20)
    assert _allowed_address(ip_address(address), policy.prefixes[0], policy) is allowed


@pytest.mark.parametrize(("address", "allowed"), [("127.0.0.1", True), ("::ffff:127.0.0.1", True), ("::1", False),
                                                  ("10.0.0.1", False)])
def test_an_allowed_private_network_covers_its_addresses_also_ipv4_mapped(address, allowed):
    from ipaddress import ip_address

    from imt_cds.service.prefetch import _allowed_address, _policy

    policy = _policy(["https://fhir.example.org/fhir"], ["127.0.0.0/8"], 5, 5, 1 << 20)
    assert _allowed_address(ip_address(address), policy.prefixes[0], policy) is allowed


def test_the_default_fetch_deadline_is_the_documented_one():
    import dataclasses
    from pathlib import Path

    from imt_cds.service.config import ServiceConfig

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    documented = float(re.search(r"`--fhir-deadline S` \| .*?\(default (\d+),", readme).group(1))
    default = {f.name: f.default for f in dataclasses.fields(ServiceConfig)}["fhir_deadline"]
    assert default == documented == 20.0
    assert collect_resources.__kwdefaults__["deadline"] == default  # the library's default is the service's


class _RawAnswers:
    """A loopback server answering every GET with 200 and ``body``, with a Content-Length or, when ``length`` is
    false, without one (HTTP/1.0: the body ends when the connection closes, so its size is known only by reading)."""

    def __init__(self, body: bytes, *, length: bool = True, address: str = "127.0.0.1"):
        import socket
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        hosts = self.hosts = []  # the Host header of each request, in order
        paths = self.paths = []  # and its path

        class Server(ThreadingHTTPServer):
            address_family = socket.AF_INET6 if ":" in address else socket.AF_INET

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1" if length else "HTTP/1.0"

            def log_message(self, *args):
                pass

            def do_GET(self):
                hosts.append(self.headers.get("Host"))
                paths.append(self.path)
                self.send_response(200)
                self.send_header("Content-Type", "application/fhir+json")
                if length:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._http = Server((address, 0), Handler)
        host = f"[{address}]" if ":" in address else address
        self.base = f"http://{host}:{self._http.server_address[1]}/fhir"
        threading.Thread(target=self._http.serve_forever, daemon=True).start()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._http.shutdown()
        self._http.server_close()


def _refusal_logged(base, caplog, max_bytes=1 << 20):
    request = hook_request("patient-view", prefetch={}, fhirServer=base)
    with caplog.at_level(logging.WARNING, logger="imt_cds.service.prefetch"), \
            pytest.raises(PrefetchUnavailableError):
        asyncio.run(collect_resources(SERVICES[0].prefetch, request, allowed_servers=[base], timeout=5, max_pages=5,
                                      max_bytes=max_bytes, private_networks=["127.0.0.0/8"]))
    return caplog.records[-1].getMessage()


def test_an_answer_without_a_content_length_is_cut_off_at_the_byte_cap_while_read(caplog):
    import json

    patient = json.dumps({"resourceType": "Patient", "id": EXAMPLE_PATIENT, "name": [{"text": "x" * 5000}]}).encode()
    with _RawAnswers(patient, length=False) as server:
        line = _refusal_logged(server.base, caplog, max_bytes=1000)
    assert (f"imt-cds: fetching patient from {server.base} failed: the answers are larger than the 1000-byte cap; "
            "stopped reading (requested: ") in line


def test_an_answer_that_is_not_json_is_refused_by_name(caplog):
    with _RawAnswers(b"<html>Service Unavailable</html>") as server:
        line = _refusal_logged(server.base, caplog)
    assert (f"imt-cds: fetching patient from {server.base} failed: {server.base}/Patient/{EXAMPLE_PATIENT} did not "
            "answer with JSON (requested: ") in line


def test_a_fhir_server_whose_name_does_not_resolve_is_logged_as_such(caplog):
    base = "http://no-such-host.invalid/fhir"  # .invalid never resolves (RFC 6761, section 6.4)
    line = _refusal_logged(base, caplog)
    assert line.startswith(f"imt-cds: fetching patient from {base} failed: cannot resolve no-such-host.invalid: ")


def test_the_host_header_names_an_ipv6_server_in_brackets_with_its_port():
    import json

    patient = json.dumps({"resourceType": "Patient", "id": EXAMPLE_PATIENT}).encode()
    with _RawAnswers(patient, address="::1") as server:
        request = hook_request("patient-view", prefetch={}, fhirServer=server.base)
        asyncio.run(collect_resources(SERVICES[0].prefetch, request, allowed_servers=[server.base], timeout=5,
                                      max_pages=5, max_bytes=1 << 20, private_networks=["::1/128"]))
    port = server.base.split("]:", 1)[1].split("/", 1)[0]
    assert server.hosts and set(server.hosts) == {f"[::1]:{port}"}


def test_a_fhir_server_whose_path_ends_in_a_capital_x_is_fetched_under_that_path():
    import json

    patient = json.dumps({"resourceType": "Patient", "id": EXAMPLE_PATIENT}).encode()
    with _RawAnswers(patient) as server:
        base = server.base + "X"  # .../fhirX
        request = hook_request("patient-view", prefetch={}, fhirServer=base)
        asyncio.run(collect_resources(SERVICES[0].prefetch, request, allowed_servers=[base], timeout=5,
                                      max_pages=5, max_bytes=1 << 20, private_networks=["127.0.0.0/8"]))
    assert server.paths and all(path.startswith("/fhirX/") for path in server.paths)
