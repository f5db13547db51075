"""A request head that RFC 9112 says a server must refuse is refused, before its body is read, with both parsers.

Both HTTP parsers let some of these through: httptools answered an HTTP/1.1 request without a Host header, or with
two, and evaluated a body sent with ``Transfer-Encoding: gzip, chunked`` as if the gzip step were not there; h11
read a request with both ``Transfer-Encoding`` and ``Content-Length`` by the first, and both took
``Transfer-Encoding`` in an HTTP/1.0 request. A proxy in front of the service may read such framing differently
(request smuggling). Now each is a JSON 400 (501 for a transfer coding other than chunked) saying what is wrong,
and the connection closes. Real servers on loopback; the check itself (``request_head_problem``) is tested apart.
"""

from __future__ import annotations

import json
import re
import socket
import time
from urllib.parse import urlsplit

import pytest
from service_support import example_resources, hook_request, prefetch_for, responses_in, running_service

from imt_cds.service.connections import MAX_TARGET_BYTES, request_head_problem

VIEW = b"/cds-services/imt-patient-view"
BODY = json.dumps(hook_request("patient-view", prefetch=prefetch_for(example_resources()))).encode()
CHUNKED_BODY = b"%x\r\n%s\r\n0\r\n\r\n" % (len(BODY), BODY)


def call(*header_lines: bytes, version: bytes = b"1.1", body: bytes = CHUNKED_BODY) -> bytes:
    """A patient-view call with a full chart (a 200 with cards when accepted) and the given header lines."""
    head = b"POST " + VIEW + b" HTTP/" + version + b"\r\nContent-Type: application/json\r\n"
    return head + b"".join(line + b"\r\n" for line in header_lines) + b"\r\n" + body


HOST = b"Host: 127.0.0.1"
PLAIN_LENGTH = b"Content-Length: %d" % len(BODY)

# (what is sent, status, the message when the service's own check refuses it; None: the parser's own refusal)
REFUSED = {
    "HTTP/1.1 without Host": (call(PLAIN_LENGTH, body=BODY), 400, "must carry a Host header"),
    "two Host headers": (call(HOST, b"Host: 127.0.0.2", PLAIN_LENGTH, body=BODY), 400, "this one has 2"),
    "a Host that is not one": (call(b"Host: a b/c", PLAIN_LENGTH, body=BODY), 400, "Host header is not a host name"),
    "gzip, chunked": (call(HOST, b"Transfer-Encoding: gzip, chunked"), 501, "transfer coding gzip is not supported"),
    "gzip then chunked on two lines": (call(HOST, b"Transfer-Encoding: gzip", b"Transfer-Encoding: chunked"), 501,
                                       "transfer coding gzip is not supported"),
    "Transfer-Encoding in HTTP/1.0": (call(b"Transfer-Encoding: chunked", version=b"1.0"), 400,
                                      "HTTP/1.0 request cannot use Transfer-Encoding"),
    "Transfer-Encoding and Content-Length": (call(HOST, b"Transfer-Encoding: chunked", b"Content-Length: 5"), 400,
                                             "both Transfer-Encoding and Content-Length"),
}
LONG_PATH = b"/rules/" + b"R" * (MAX_TARGET_BYTES - 6)  # one byte over
REFUSED["a request target over 8 KiB"] = (b"GET " + LONG_PATH + b" HTTP/1.1\r\n" + HOST + b"\r\n\r\n", 414,
                                          f"target is {MAX_TARGET_BYTES + 1} bytes long: at most 8192")
# h11 refuses these itself, before the service's check sees them: a 400 with the parser's generic message.
H11_OWN = {"HTTP/1.1 without Host", "two Host headers", "gzip, chunked", "gzip then chunked on two lines"}
# httptools (llhttp) refuses this one itself.
HTTPTOOLS_OWN = {"Transfer-Encoding and Content-Length"}

ACCEPTED = {
    "HTTP/1.1 with Host": call(HOST, PLAIN_LENGTH, body=BODY),
    "chunked": call(HOST, b"Transfer-Encoding: chunked"),
    "HTTP/1.0 without Host": call(PLAIN_LENGTH, version=b"1.0", body=BODY),
    "an IPv6 Host with a port": call(b"Host: [::1]:8080", PLAIN_LENGTH, body=BODY),
    "an empty Host": call(b"Host:", PLAIN_LENGTH, body=BODY),
}
# A target of 8 KiB exactly is read (a 404: no such rule), not refused.
LONGEST_PATH = (b"GET /rules/" + b"R" * (MAX_TARGET_BYTES - 7) + b" HTTP/1.1\r\n" + HOST
                + b"\r\nConnection: close\r\n\r\n")


def exchange(url: str, data: bytes) -> list[bytes]:
    """Send ``data`` on a new connection; every response until the server closes it (the test fails on a timeout:
    a refused request must close its connection)."""
    received, _ = send_head_in_parts(url, [data], pause=0)
    return responses_in(received)


def status_and_error(answer: bytes) -> tuple[int, dict]:
    head, body = answer.split(b"\r\n\r\n", 1)
    return int(head.split(b" ", 2)[1]), json.loads(body)


@pytest.fixture(scope="module", params=["httptools", "h11"])
def service(request):
    with running_service("--allow-unauthenticated", "--workers", "1", "--keep-alive-timeout", "2",
                         "--http-parser", request.param) as running:
        running.parser = request.param  # type: ignore[attr-defined]
        yield running


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_a_request_head_a_server_must_refuse_is_refused_and_its_connection_closed(service, case):
    data, status, message = REFUSED[case]
    own = H11_OWN if service.parser == "h11" else HTTPTOOLS_OWN
    answers = exchange(service.url, data)  # returns only once the server has closed the connection
    assert len(answers) == 1, answers
    got, body = status_and_error(answers[0])
    if case in own:
        assert (got, body["error"]["code"]) == (400, "cds_bad_request"), answers[0]
        return
    assert got == status, answers[0]
    code = {400: "cds_bad_request", 414: "cds_uri_too_long", 501: "cds_not_implemented"}[status]
    assert body["error"] == {"code": code, "status": status, "message": body["error"]["message"]}
    assert message in body["error"]["message"], body
    said = [line for line in service.log_text().splitlines() if "refused a request before reading its body: " in line]
    # The log says why too, as the answer does (each reason: at most 5 lines a minute).
    logged = re.compile(r"(^|\s)imt-cds: refused a request before reading its body: "
                        + re.escape(body["error"]["message"]) + "$")
    assert any(logged.search(line) for line in said), said


@pytest.mark.parametrize("case", sorted(ACCEPTED))
def test_well_formed_heads_are_still_served(service, case):
    # A second request closes the connection (an HTTP/1.0 one is closed after its answer: the second is not read).
    data = ACCEPTED[case] + b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    answers = exchange(service.url, data)
    expected = 1 if b" HTTP/1.0\r\n" in ACCEPTED[case] else 2
    assert [answer.split(b"\r\n", 1)[0] for answer in answers] == [b"HTTP/1.1 200 OK"] * expected, answers
    assert json.loads(answers[0].split(b"\r\n\r\n", 1)[1])["cards"]


def test_a_request_target_of_8_kib_is_read(service):
    answers = exchange(service.url, LONGEST_PATH)
    assert len(answers) == 1 and status_and_error(answers[0])[1]["error"]["code"] == "cds_not_found", answers


def test_calls_pipelined_before_a_refused_head_are_answered_first(service):
    answers = exchange(service.url, call(HOST, PLAIN_LENGTH, body=BODY) + call(PLAIN_LENGTH, body=BODY))
    assert len(answers) == 2, answers
    assert answers[0].startswith(b"HTTP/1.1 200 OK") and json.loads(answers[0].split(b"\r\n\r\n", 1)[1])["cards"]
    status, body = status_and_error(answers[1])
    assert (status, body["error"]["code"]) == (400, "cds_bad_request")
    if service.parser == "httptools":
        assert "must carry a Host header" in body["error"]["message"]


@pytest.mark.parametrize(("version", "headers", "expected"), [
    ("1.1", [(b"host", b"example.org")], None),
    ("1.1", [(b"host", b"localhost:8000")], None),
    ("1.1", [(b"host", b"127.0.0.1:80")], None),
    ("1.1", [(b"host", b"[::1]")], None),
    ("1.1", [(b"host", b"[v1.fe80::a+en1]:443")], None),
    ("1.1", [(b"host", b"xn--bcher-kva.example:")], None),  # an empty port is allowed (RFC 3986)
    ("1.1", [(b"host", b"")], None),
    ("1.0", [], None),
    ("1.1", [(b"host", b"a"), (b"transfer-encoding", b"chunked")], None),
    ("1.1", [(b"host", b"a"), (b"transfer-encoding", b"Chunked")], None),  # codings are case-insensitive
    ("1.1", [(b"host", b"a"), (b"transfer-encoding", b" chunked ,")], None),  # empty list elements are allowed
    ("1.1", [(b"host", b"a"), (b"content-length", b"5")], None),
    ("1.1", [], 400),
    ("1.1", [(b"host", b"a"), (b"host", b"a")], 400),
    ("1.0", [(b"host", b"a"), (b"host", b"b")], 400),
    ("1.1", [(b"host", b"a b")], 400),
    ("1.1", [(b"host", b"a/b")], 400),
    ("1.1", [(b"host", b"user@a")], 400),
    ("1.1", [(b"host", b"a:80x")], 400),
    ("1.1", [(b"host", b"[::1")], 400),
    ("1.1", [(b"host", b"a"), (b"transfer-encoding", b"gzip")], 400),
    ("1.1", [(b"host", b"a"), (b"transfer-encoding", b"chunked, gzip")], 400),
    ("1.1", [(b"host", b"a"), (b"transfer-encoding", b"chunked, chunked")], 400),
    ("1.1", [(b"host", b"a"), (b"transfer-encoding", b"chunked"), (b"transfer-encoding", b"chunked")], 400),
    ("1.1", [(b"host", b"a"), (b"transfer-encoding", b"")], 400),
    ("1.1", [(b"host", b"a"), (b"transfer-encoding", b"chunked"), (b"content-length", b"5")], 400),
    ("1.0", [(b"transfer-encoding", b"chunked")], 400),
    ("1.1", [(b"host", b"a"), (b"transfer-encoding", b"gzip, chunked")], 501),
    ("1.1", [(b"host", b"a"), (b"transfer-encoding", b"x-custom"), (b"transfer-encoding", b"chunked")], 501),
])
def test_the_head_check(version, headers, expected):
    problem = request_head_problem(version, b"/cds-services", headers)
    assert (problem[0] if problem else None) == expected, problem


def test_the_target_is_at_most_8_kib():
    host = [(b"host", b"a")]
    assert request_head_problem("1.1", b"/" * MAX_TARGET_BYTES, host) is None
    assert request_head_problem("1.1", b"/" * (MAX_TARGET_BYTES + 1), host) == (
        414, "the request target is 8193 bytes long: at most 8192 are read (RFC 9112, section 3)")


HOST_A = (b"host", b"a")


@pytest.mark.parametrize(("version", "headers", "problem"), [
    ("1.1", [HOST_A, HOST_A, HOST_A],
     (400, "a request carries one Host header; this one has 3 (RFC 9112, section 3.2)")),
    ("1.1", [], (400, "an HTTP/1.1 request must carry a Host header (RFC 9112, section 3.2)")),
    ("1.1", [(b"host", b"a b")],
     (400, "the Host header is not a host name or address with an optional port (RFC 9110, section 7.2)")),
    ("1.0", [(b"transfer-encoding", b"chunked")],
     (400, "an HTTP/1.0 request cannot use Transfer-Encoding: its length cannot be trusted (RFC 9112, section 6.1)")),
    ("1.1", [HOST_A, (b"transfer-encoding", b"chunked"), (b"content-length", b"3")],
     (400, "a request carries both Transfer-Encoding and Content-Length: its length cannot be trusted "
           "(RFC 9112, section 6.1)")),
    ("1.1", [HOST_A, (b"transfer-encoding", b"chunked, gzip")],
     (400, "Transfer-Encoding must end with chunked, once, in a request: its length cannot be determined otherwise "
           "(RFC 9112, section 6.3)")),
    ("1.1", [HOST_A, (b"transfer-encoding", b"gzip, br, chunked")],
     (501, "the transfer coding gzip, br is not supported: send the body chunked only")),
    # A client's text in the answer is shortened (to 100 characters, then its length).
    ("1.1", [HOST_A, (b"transfer-encoding", b"x" * 5000 + b",chunked")],
     (501, "the transfer coding " + "x" * 100 + "...[5000 characters] is not supported: send the body chunked only")),
])
def test_each_refusal_says_what_is_wrong(version, headers, problem):
    assert request_head_problem(version, b"/", headers) == problem


# --- the head's size ------------------------------------------------------------------------------------------------


def send_head_in_parts(url: str, parts: list[bytes], pause: float = 0.05) -> tuple[bytes, float]:
    """Send ``parts`` one read apart, then read until the server closes: (what it sent, seconds from the last part
    to the close). A connection reset counts as a close (what was read before it is kept)."""
    address = urlsplit(url)
    received = b""
    with socket.create_connection((address.hostname, address.port), timeout=30) as connection:
        for part in parts:
            connection.sendall(part)
            time.sleep(pause)
        sent_at = time.monotonic()
        try:
            while chunk := connection.recv(65536):
                received += chunk
        except ConnectionResetError:
            pass
        return received, time.monotonic() - sent_at


def test_a_head_over_32_kib_is_refused_before_the_header_deadline_and_its_connection_closed(service):
    # httptools set no bound of its own: one connection made the server hold 200 MiB of header in 0.3 s (h11 holds
    # at most its buffer's size, now the same 32 KiB).
    padding = b"".join(b"X-Pad-%d: %s\r\n" % (number, b"a" * 1000) for number in range(40))  # ~40 KiB
    received, seconds = send_head_in_parts(service.url, [b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n", padding])
    assert seconds < 5, "the connection stayed open until the header deadline (10 s)"
    assert received.startswith(b"HTTP/1.1 431 "), received[:300]
    assert json.loads(received.split(b"\r\n\r\n", 1)[1])["error"] == {
        "code": "cds_headers_too_large", "status": 431, "message": "the request line and headers are over 32 KiB"}
    assert "imt-cds: refused a request before reading its body: the request line and headers are over 32 KiB" in (
        service.log_text())


def test_a_head_of_24_kib_arriving_in_many_reads_is_served(service):
    lines = [b"X-Pad-%d: %s\r\n" % (number, b"a" * 1000) for number in range(24)]
    received, _ = send_head_in_parts(
        service.url, [b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n", *lines, b"\r\n"],
        pause=0.01)
    assert received.startswith(b"HTTP/1.1 200 OK"), received[:300]


def test_the_bound_is_32_kib_exactly(service):
    # httptools' head is counted from the read after the one that began it (here: the request line alone); h11
    # bounds its whole buffer, the request line included.
    request_line = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    bound = 32 * 1024  # as README says (not the module's constant: a wrong constant would move the test with it)
    size = bound if service.parser == "httptools" else bound - len(request_line)
    lines = b"".join(b"X-Pad-%03d: %s\r\n" % (number, b"a" * 1000) for number in range(size // 1013))
    padding = lines + b"X-Last: " + b"a" * (size - len(lines) - 8)  # a header line left open
    assert len(padding) == size
    address = urlsplit(service.url)
    with socket.create_connection((address.hostname, address.port), timeout=10) as connection:
        connection.sendall(request_line)
        time.sleep(0.2)
        connection.sendall(padding)
        connection.settimeout(1.0)
        with pytest.raises(TimeoutError):  # the bound itself is held: nothing answered, nothing closed
            connection.recv(1)
        connection.settimeout(10)
        connection.sendall(b"a")  # one byte over
        received = b""
        while chunk := connection.recv(65536):
            received += chunk
    assert received.startswith(b"HTTP/1.1 431 "), received[:200]


def test_the_end_of_a_large_request_read_with_the_start_of_the_next_is_not_counted_as_its_head(service):
    # One read holds a 40 KB call and the first line of the next request: only what arrives after that read is
    # head bytes (counting the whole read refused the next request as too large).
    large = BODY + b" " * (40_000 - len(BODY))
    first = call(HOST, b"Content-Length: %d" % len(large), body=large)
    address = urlsplit(service.url)
    with socket.create_connection((address.hostname, address.port), timeout=30) as connection:
        connection.sendall(first + b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        time.sleep(0.3)
        connection.sendall(b"Connection: close\r\n\r\n")
        stream = b""
        while chunk := connection.recv(65536):
            stream += chunk
    statuses = re.findall(rb"HTTP/1\.1 (\d{3}) ", stream)
    assert statuses == [b"200", b"200"], stream[:300]


def test_empty_lines_before_a_request_line_are_ignored(service):
    # RFC 9112 section 2.2: a server should ignore at least one empty line before a request line. Here in reads of
    # their own, before the request's first byte (where the head's count starts). h11 does not: its 400.
    if service.parser == "h11":
        received, _ = send_head_in_parts(service.url, [b"\r\n"])
        assert received.startswith(b"HTTP/1.1 400 "), received[:300]
        return
    received, _ = send_head_in_parts(service.url, [b"\r\n", b"\r\n", b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n",
                                                   b"Connection: close\r\n\r\n"], pause=0.1)
    assert received.startswith(b"HTTP/1.1 200 OK"), received[:300]
