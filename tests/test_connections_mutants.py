"""What one client can hold of the server (service/connections.py), in process: the limits' checks, the connection cap
fitted under real open-file limits (set in a forked process), the choice of HTTP protocol, the log-flood filter's
counting, and the guarded protocols' deadlines and cap on a real uvicorn server in this process, with a trivial ASGI
app and timeouts of a fraction of a second. tests/test_service_limits.py and tests/test_service_hostile_clients.py
hold the same behaviour on ``imt-cds serve`` itself; these tests were written for the planted mistakes of the module
that those missed or saw only at the cost of a server per mistake (tests/mutation-survivors.md)."""

from __future__ import annotations

import asyncio
import logging
import resource
import socket
import sys
import threading
import time
from contextlib import contextmanager

import pytest
from helpers import ended_within

from imt_cds.cli.main import _parser
from imt_cds.service.connections import (
    DEFAULT_MAX_CONNECTIONS,
    ConnectionLimits,
    RepeatedLogFilter,
    guarded_protocol,
    install_log_filter,
    open_file_budget,
)
from imt_cds.service.errors import ServiceConfigError

# --- the limits' checks -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("limits, message", [
    (ConnectionLimits(max_connections=15), "--max-connections 15 is too small: at least 16"),
    (ConnectionLimits(header_timeout=0), "--header-timeout 0 must be more than 0 and at most 3600 seconds"),
    (ConnectionLimits(body_timeout=-0.5), "--body-timeout -0.5 must be more than 0 and at most 3600 seconds"),
    (ConnectionLimits(keep_alive_timeout=3600.5),
     "--keep-alive-timeout 3600.5 must be more than 0 and at most 3600 seconds"),
])
def test_limits_out_of_range_are_refused_naming_the_option_and_what_it_allows(limits, message):
    with pytest.raises(ServiceConfigError) as refused:
        limits.check()
    assert refused.value.message == message


def test_limits_at_the_edges_of_their_ranges_are_accepted():
    ConnectionLimits(max_connections=16, header_timeout=3600, body_timeout=0.001, keep_alive_timeout=3600).check()
    ConnectionLimits(max_connections=None, header_timeout=0.001, body_timeout=3600, keep_alive_timeout=0.001).check()


def test_limits_cannot_change_once_made():  # every connection of a server reads the same object
    with pytest.raises(AttributeError):
        ConnectionLimits().header_timeout = 3600  # type: ignore[misc]


def test_the_library_defaults_are_the_ones_serve_uses_and_documents():
    args = _parser().parse_args(["serve", "--allow-unauthenticated"])
    defaults = ConnectionLimits()
    assert (args.max_connections, args.header_timeout, args.body_timeout, args.keep_alive_timeout) == (
        defaults.max_connections, defaults.header_timeout, defaults.body_timeout, defaults.keep_alive_timeout)
    assert (defaults.header_timeout, defaults.body_timeout, defaults.keep_alive_timeout) == (10.0, 30.0, 5.0)
    assert DEFAULT_MAX_CONNECTIONS == 1000  # what serve --help says: "default: 1000, or what the open-file limit ..."


# --- the connection cap under the open-file limit -----------------------------------------------------------------


def _budget_under(soft: int, hard: int, workers: int, max_connections: int | None) -> tuple:
    """In a forked process: the cap ``open_file_budget`` gives under these limits (or its refusal), and the limits
    it leaves."""
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    try:
        cap: object = open_file_budget(ConnectionLimits(max_connections=max_connections), workers)
    except ServiceConfigError as exc:
        cap = f"refused: {exc.message}"
    return cap, resource.getrlimit(resource.RLIMIT_NOFILE)


# The server reserves 256 files, and 8 per worker: 264 for one worker, 272 for two.
BUDGETS = {
    "default cap, the soft limit raised to fit it": ((1024, 4096, 2, None), (1000, (1272, 4096))),
    "default cap, a soft limit above it left alone": ((4096, 4096, 2, None), (1000, (4096, 4096))),
    "default cap cut to what the hard limit leaves": ((300, 400, 1, None), (136, (400, 400))),
    "default cap, just room for 16 connections": ((270, 280, 1, None), (16, (280, 280))),
    "default cap, no room for 16 connections": ((270, 279, 1, None), (
        "refused: the open-file limit (279, hard 279: ulimit -n) leaves no room for client connections beside the "
        "264 the server reserves: raise it", (279, 279))),
    "explicit cap, the soft limit raised to fit it": ((1024, 4096, 2, 2000), (2000, (2272, 4096))),
    "explicit cap that just fits": ((300, 400, 1, 136), (136, (400, 400))),
    "explicit cap that cannot fit": ((300, 400, 1, 137), (
        "refused: --max-connections 137 needs 401 open files but this process may open only 400 (hard limit 400: "
        "ulimit -Hn): lower --max-connections to 136 or raise the limit", (400, 400))),
    "explicit cap far beyond the hard limit": ((100, 200, 1, 500), (
        "refused: --max-connections 500 needs 764 open files but this process may open only 200 (hard limit 200: "
        "ulimit -Hn): lower --max-connections to 0 or raise the limit", (200, 200))),
}


@pytest.mark.parametrize("name", list(BUDGETS))
def test_the_connection_cap_fits_under_the_open_file_limit(name):
    arguments, expected = BUDGETS[name]
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[1] >= 4096, "these tests need a hard open-file limit >= 4096"
    assert ended_within(30, _budget_under, *arguments) == expected


class FakeLimits:
    """An open-file limit of "unlimited", which Linux never has (its hard limit is at most fs.nr_open) but other
    systems may: the only way to reach those branches here."""

    def __init__(self, soft: int, hard: int):
        self.limits = (soft, hard)
        self.set: list[tuple[int, int]] = []

    def getrlimit(self, which: int) -> tuple[int, int]:
        assert which == resource.RLIMIT_NOFILE
        return self.limits

    def setrlimit(self, which: int, limits: tuple[int, int]) -> None:
        assert which == resource.RLIMIT_NOFILE
        self.set.append(limits)
        self.limits = limits


@pytest.mark.parametrize("soft, hard, max_connections, cap, set_to", [
    (resource.RLIM_INFINITY, resource.RLIM_INFINITY, None, 1000, []),
    (resource.RLIM_INFINITY, resource.RLIM_INFINITY, 50_000, 50_000, []),
    (1024, resource.RLIM_INFINITY, None, 1000, [(1272, resource.RLIM_INFINITY)]),
    (1024, resource.RLIM_INFINITY, 5000, 5000, [(5272, resource.RLIM_INFINITY)]),
    (8000, resource.RLIM_INFINITY, None, 1000, []),  # a soft limit above what is needed is never lowered
    (1272, resource.RLIM_INFINITY, None, 1000, []),  # nor set again when it is just what is needed
])
def test_an_unlimited_open_file_limit_gives_the_cap_asked_for(monkeypatch, soft, hard, max_connections, cap, set_to):
    fake = FakeLimits(soft, hard)
    monkeypatch.setattr(resource, "getrlimit", fake.getrlimit)
    monkeypatch.setattr(resource, "setrlimit", fake.setrlimit)
    assert open_file_budget(ConnectionLimits(max_connections=max_connections), 2) == cap
    assert fake.set == set_to


# --- the HTTP protocol ----------------------------------------------------------------------------------------------


def test_the_parser_is_httptools_when_installed_and_h11_when_asked():
    from uvicorn.protocols.http.h11_impl import H11Protocol
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    limits = ConnectionLimits(max_connections=20)
    assert issubclass(guarded_protocol(limits, 20), HttpToolsProtocol)  # by default
    for parser, base in (("auto", HttpToolsProtocol), ("httptools", HttpToolsProtocol), ("h11", H11Protocol)):
        protocol = guarded_protocol(limits, 20, parser)
        assert issubclass(protocol, base), parser
        assert protocol._limits is limits and protocol._max_connections == 20
    assert not issubclass(guarded_protocol(limits, 20, "h11"), HttpToolsProtocol)


def test_without_httptools_auto_falls_back_to_h11_and_asking_for_it_is_refused(monkeypatch):
    from uvicorn.protocols.http.h11_impl import H11Protocol

    monkeypatch.setitem(sys.modules, "uvicorn.protocols.http.httptools_impl", None)  # an import of it fails
    assert issubclass(guarded_protocol(ConnectionLimits(), 20, "auto"), H11Protocol)
    with pytest.raises(ServiceConfigError) as refused:
        guarded_protocol(ConnectionLimits(), 20, "httptools")
    assert refused.value.message == "the HTTP parser httptools is not installed: pip install 'imt-cds[service]'"


def test_an_unknown_parser_is_refused_naming_the_choices():
    with pytest.raises(ServiceConfigError) as refused:
        guarded_protocol(ConnectionLimits(), 20, "picohttp")
    assert refused.value.message == "HTTP parser 'picohttp' is not one of auto, httptools, h11"


# --- the log-flood filter -----------------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def passed(log_filter: logging.Filter, count: int, message: str = "closed %s", name: str = "imt_cds.service",
           level: int = logging.WARNING, log_key: str | None = None, arg: object = "x") -> list[str]:
    """The messages of ``count`` such records that the filter lets through (``arg``: the message's one argument,
    None for a message without any)."""
    through = []
    for _ in range(count):
        record = logging.LogRecord(name, level, __file__, 1, message, () if arg is None else (arg,), None)
        if log_key is not None:
            record.log_key = log_key
        if log_filter.filter(record):
            through.append(record.getMessage())
    return through


def test_a_burst_passes_then_the_rest_of_the_window_is_dropped_and_counted():
    clock = Clock()
    log_filter = RepeatedLogFilter(burst=3, window=10, clock=clock)
    assert passed(log_filter, 5) == ["closed x"] * 3
    clock.now += 9  # still the same window
    assert passed(log_filter, 1) == []
    clock.now += 1  # the window is over: one passes, saying how many were dropped
    assert passed(log_filter, 4) == ["closed x [3 more like this were suppressed in the previous 10 s]",
                                     "closed x", "closed x"]
    clock.now += 10
    assert passed(log_filter, 1) == ["closed x [1 more like this were suppressed in the previous 10 s]"]
    clock.now += 10  # nothing dropped in the last window: nothing to say
    assert passed(log_filter, 1) == ["closed x"]


def test_a_repeated_warning_passes_a_few_times_per_window_then_says_how_many_were_suppressed():
    clock = Clock()
    log_filter = RepeatedLogFilter(burst=5, window=60, clock=clock)
    message = "socket.accept() out of system resource\nsocket: <socket fd=%d>"  # asyncio's, under a flood
    assert len(passed(log_filter, 100, message, name="asyncio", level=logging.ERROR, arg=7)) == 5
    clock.now += 61
    (after,) = passed(log_filter, 1, message, name="asyncio", level=logging.ERROR, arg=8)
    assert after.startswith("socket.accept() out of system resource") and "[95 more like this" in after


def test_the_log_filter_counts_messages_apart_and_never_drops_feedback_or_routine_lines():
    log_filter = RepeatedLogFilter(burst=2, window=60, clock=Clock(), exempt=("imt_cds.service.feedback",))
    assert len(passed(log_filter, 10, "Invalid HTTP request received.", name="uvicorn.error", arg=None)) == 2
    assert len(passed(log_filter, 10, "Exceeded concurrency limit.", name="uvicorn.error", arg=None)) == 2
    assert len(passed(log_filter, 10, "cds-feedback %s", name="imt_cds.service.feedback", arg="{}")) == 10
    assert len(passed(log_filter, 10, "%s - GET / 200", name="uvicorn.access", level=logging.INFO, arg="a")) == 10


def test_the_defaults_are_five_per_minute():
    clock = Clock()
    log_filter = RepeatedLogFilter(clock=clock)
    assert len(passed(log_filter, 10)) == 5
    clock.now += 59
    assert passed(log_filter, 1) == []
    clock.now += 1
    assert passed(log_filter, 1) == ["closed x [6 more like this were suppressed in the previous 60 s]"]


def test_the_note_keeps_the_message_a_template_of_its_arguments():
    clock = Clock()
    log_filter = RepeatedLogFilter(burst=1, window=1.5, clock=clock)
    passed(log_filter, 3, message="%s at 100%%")
    clock.now += 2
    assert passed(log_filter, 1, message="%s at 100%%") == [
        "x at 100% [2 more like this were suppressed in the previous 1.5 s]"]


def test_records_are_counted_apart_by_logger_level_template_and_log_key_never_by_their_arguments():
    log_filter = RepeatedLogFilter(burst=1, window=60, clock=Clock())
    assert len(passed(log_filter, 3, arg="a") + passed(log_filter, 3, arg="b")) == 1  # arguments vary: one key
    assert len(passed(log_filter, 2, name="uvicorn.error")) == 1
    assert len(passed(log_filter, 2, level=logging.ERROR)) == 1
    assert len(passed(log_filter, 2, message="opened %s")) == 1
    assert len(passed(log_filter, 2, log_key="expired")) == 1
    assert len(passed(log_filter, 2, log_key="bad signature")) == 1
    # Only the first line of a template counts, and only its first 200 characters: what follows may hold data.
    assert len(passed(log_filter, 1, message="failed\nfirst %s") + passed(log_filter, 1, message="failed\nother %s")
               ) == 1
    long = "y" * 200
    assert len(passed(log_filter, 1, message=long + "a %s") + passed(log_filter, 1, message=long + "b %s")) == 1
    assert len(passed(log_filter, 1, log_key=long + "a") + passed(log_filter, 1, log_key=long + "b")) == 1


def test_the_filter_remembers_1024_keys_by_default():
    log_filter = RepeatedLogFilter(burst=1, clock=Clock())
    for key in range(1024):
        assert len(passed(log_filter, 1, log_key=str(key))) == 1
    assert len(passed(log_filter, 1, log_key="0")) == 0  # all still known
    assert len(passed(log_filter, 1, log_key="new")) == 1  # the 1,025th: the oldest ("0") is forgotten
    assert len(passed(log_filter, 1, log_key="1")) == 0
    assert len(passed(log_filter, 1, log_key="0")) == 1


def test_records_below_warning_and_of_exempt_loggers_always_pass():
    log_filter = RepeatedLogFilter(burst=1, window=60, clock=Clock(), exempt=("imt_cds.service.feedback",))
    assert len(passed(log_filter, 4, level=logging.INFO)) == 4
    assert len(passed(log_filter, 4, name="imt_cds.service.feedback")) == 4
    assert len(passed(log_filter, 4, name="imt_cds.service.feedback.sink")) == 4  # its children too
    assert len(passed(log_filter, 4, name="imt_cds.service")) == 1


def test_the_filter_forgets_the_oldest_keys_beyond_its_bound():
    log_filter = RepeatedLogFilter(burst=1, window=60, clock=Clock(), max_keys=3)
    for key in "abc":
        assert len(passed(log_filter, 2, log_key=key)) == 1
    assert len(passed(log_filter, 1, log_key="a")) == 0  # still known: dropped
    assert len(passed(log_filter, 1, log_key="d")) == 1  # a fourth key: the oldest ("a") is forgotten...
    assert len(passed(log_filter, 1, log_key="c")) == 0
    assert len(passed(log_filter, 1, log_key="d")) == 0
    assert len(passed(log_filter, 1, log_key="a")) == 1  # ...so it passes again


def test_the_filter_goes_on_every_handler_of_the_named_loggers_and_the_root():
    loggers = [logging.getLogger(name) for name in ("", "test-connections-a", "test-connections-b")]
    handlers = [logging.NullHandler() for _ in loggers]
    for logger, handler in zip(loggers, handlers, strict=True):
        logger.addHandler(handler)
    other = logging.NullHandler()
    logging.getLogger("test-connections-c").addHandler(other)
    log_filter = RepeatedLogFilter()
    try:
        install_log_filter(log_filter, ("test-connections-a", "test-connections-b"))
        assert all(log_filter in handler.filters for handler in handlers)
        assert log_filter not in other.filters
    finally:  # (the root logger's other handlers, pytest's, got the filter too)
        for logger in loggers:
            for handler in logger.handlers:
                handler.removeFilter(log_filter)
        for logger, handler in zip(loggers, handlers, strict=True):
            logger.removeHandler(handler)
        logging.getLogger("test-connections-c").removeHandler(other)


# --- the guarded protocols on a real uvicorn server ---------------------------------------------------------------

HEADER_TIMEOUT, BODY_TIMEOUT, KEEP_ALIVE_TIMEOUT = 0.4, 1.0, 0.6
SLACK = 1.5  # how much later than its deadline a connection may close on a loaded machine
TIMEOUT_RESPONSE = (b'HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n'
                    b'content-length: 100\r\n\r\n{"error":{"code":"cds_request_timeout","status":408,"message":"the '
                    b'request did not arrive in time"}}')
INVALID_RESPONSE = (b'HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\nconnection: close\r\n'
                    b'content-length: 132\r\n\r\n{"error":{"code":"cds_bad_request","status":400,"message":"invalid '
                    b'HTTP request (the request line or headers could not be parsed)"}}')


async def small_app(scope, receive, send):
    """POST /early answers 401 without reading the body (as the service refuses a bad token); /slow holds its
    answer until the test releases it; anything else reads the body and answers 200."""
    if scope["path"] == "/slow":
        while not scope["app_release"].is_set():
            await asyncio.sleep(0.02)
    elif scope["path"] != "/early":
        while (await receive()).get("more_body"):
            pass
    status = 401 if scope["path"] == "/early" else 200
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


@contextmanager
def guarded_server(parser: str, max_connections: int = 16, keep_alive_timeout: float = KEEP_ALIVE_TIMEOUT,
                   header_timeout: float = HEADER_TIMEOUT, body_timeout: float = BODY_TIMEOUT):
    """A uvicorn server in a thread of this process, its protocol ``guarded_protocol(...)``; yields (port, the
    event that releases /slow requests, the log records of imt_cds.service.connections)."""
    import uvicorn

    release = threading.Event()

    async def app(scope, receive, send):
        await small_app({**scope, "app_release": release}, receive, send)

    limits = ConnectionLimits(header_timeout=header_timeout, body_timeout=body_timeout,
                              keep_alive_timeout=keep_alive_timeout)
    # log_config and log_level None: uvicorn leaves this process's logging as it is (other tests read it)
    config = uvicorn.Config(app, http=guarded_protocol(limits, max_connections, parser), lifespan="off",
                            log_config=None, log_level=None, access_log=False, timeout_keep_alive=keep_alive_timeout)
    server = uvicorn.Server(config)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("imt_cds.service.connections")
    logger.addHandler(handler)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
            time.sleep(0.01)
        yield listener.getsockname()[1], release, records
    finally:
        release.set()
        server.should_exit = True
        thread.join(20)
        logger.removeHandler(handler)
        listener.close()


def connect(port: int) -> socket.socket:
    client = socket.create_connection(("127.0.0.1", port), timeout=10)
    return client


def read_until_closed(client: socket.socket) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and when it closed (time.monotonic())."""
    received = b""
    while True:
        try:
            chunk = client.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        received += chunk
    return received, time.monotonic()


def one_request(path: str = "/", body: bytes = b"x") -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body


HEADERS_LATE = f"imt-cds: closed a connection whose request headers did not arrive within {HEADER_TIMEOUT:g} s"


def assert_closed_with_408_at(received: bytes, elapsed: float, deadline: float) -> None:
    """The connection got the 408 and closed ``elapsed`` s after the moment its deadline of ``deadline`` s ran from."""
    assert received == TIMEOUT_RESPONSE, received
    assert within(elapsed, deadline), f"closed after {elapsed:.3f} s, the deadline {deadline} s"


def within(elapsed: float, deadline: float) -> bool:
    """Whether a connection closed ``elapsed`` seconds after the moment a deadline of ``deadline`` s ran from."""
    return deadline - 0.05 <= elapsed <= deadline + SLACK


def read_response(client: socket.socket) -> bytes:
    received = b""
    while not received.endswith(b"ok"):
        chunk = client.recv(65536)
        assert chunk, f"closed before the response ended: {received!r}"
        received += chunk
    return received


PARSERS = ["httptools", "h11"]


@pytest.mark.parametrize("parser", PARSERS)
def test_headers_not_complete_in_time_get_a_408_and_the_connection_closed(parser):
    with guarded_server(parser) as (port, _, records), connect(port) as client:
        opened = time.monotonic()
        client.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nX-Never-Finished: ")
        received, closed = read_until_closed(client)
    assert_closed_with_408_at(received, closed - opened, HEADER_TIMEOUT)
    assert [r.getMessage() for r in records] == [HEADERS_LATE]


@pytest.mark.parametrize("parser", PARSERS)
def test_a_connection_that_sends_nothing_is_closed_at_the_header_deadline(parser):
    with guarded_server(parser) as (port, _, _), connect(port) as client:
        opened = time.monotonic()
        received, closed = read_until_closed(client)
    assert_closed_with_408_at(received, closed - opened, HEADER_TIMEOUT)


@pytest.mark.parametrize("parser", PARSERS)
def test_a_body_not_complete_in_time_gets_a_408_after_the_body_deadline(parser):
    with guarded_server(parser) as (port, _, records), connect(port) as client:
        client.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc")
        sent = time.monotonic()
        received, closed = read_until_closed(client)
    assert_closed_with_408_at(received, closed - sent, BODY_TIMEOUT)
    assert [r.getMessage() for r in records] == [
        f"imt-cds: closed a connection whose request body did not arrive within {BODY_TIMEOUT:g} s"]


@pytest.mark.parametrize("parser", PARSERS)
def test_a_request_answered_before_its_body_is_closed_without_a_second_answer(parser):
    # (uvicorn's own keep-alive timer, armed as it answered, would close the connection first were it shorter)
    with guarded_server(parser, keep_alive_timeout=BODY_TIMEOUT + 2) as (port, _, records), connect(port) as client:
        client.sendall(b"POST /early HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nabc")
        sent = time.monotonic()
        received, closed = read_until_closed(client)
    assert received.startswith(b"HTTP/1.1 401 ") and received.endswith(b"\r\n\r\nok"), received
    assert b" 408 " not in received
    assert within(closed - sent, BODY_TIMEOUT)
    assert [r.getMessage() for r in records] == [
        "imt-cds: closed a connection whose request was answered early and the rest of whose body did not arrive "
        f"within {BODY_TIMEOUT:g} s"]


@pytest.mark.parametrize("parser", PARSERS)
def test_a_request_answered_early_then_read_to_its_end_is_idle_and_closed_at_the_keep_alive_deadline(parser):
    with guarded_server(parser) as (port, _, records), connect(port) as client:
        client.sendall(b"POST /early HTTP/1.1\r\nHost: t\r\nContent-Length: 6\r\n\r\nabc")
        assert read_response(client).startswith(b"HTTP/1.1 401 ")
        client.sendall(b"def")  # the rest of the body: nothing is waiting now
        sent = time.monotonic()
        received, closed = read_until_closed(client)
    assert received == b""
    assert within(closed - sent, KEEP_ALIVE_TIMEOUT)
    assert records == []


@pytest.mark.parametrize("parser", PARSERS)
def test_the_first_request_s_header_deadline_runs_from_the_connection_not_from_its_first_byte(parser):
    with guarded_server(parser, header_timeout=1.0) as (port, _, _), connect(port) as client:
        opened = time.monotonic()
        time.sleep(0.8)
        client.sendall(b"POST / HTTP/1.1\r\nHost: t\r\n")
        received, closed = read_until_closed(client)
    assert received == TIMEOUT_RESPONSE
    assert 0.95 <= closed - opened < 1.6  # from the first byte, it would be 1.8


@pytest.mark.parametrize("parser", PARSERS)
def test_a_request_begun_on_a_connection_idle_after_an_early_answer_has_a_header_deadline(parser):
    with guarded_server(parser, keep_alive_timeout=3.0) as (port, _, _), connect(port) as client:
        client.sendall(b"POST /early HTTP/1.1\r\nHost: t\r\nContent-Length: 6\r\n\r\nabc")
        assert read_response(client).startswith(b"HTTP/1.1 401 ")
        client.sendall(b"def")  # the rest of the body: idle now, until...
        time.sleep(0.1)
        client.sendall(b"POST / HTTP/1.1\r\nHost: t\r\n")  # ...a next request begins, and never ends its headers
        started = time.monotonic()
        received, closed = read_until_closed(client)
    # (the idle deadline would have closed it at 3 s, saying nothing)
    assert_closed_with_408_at(received, closed - started, HEADER_TIMEOUT)


@pytest.mark.parametrize("parser", PARSERS)
def test_kept_alive_connections_answer_again_and_a_later_request_has_its_own_header_deadline(parser):
    with guarded_server(parser, body_timeout=5.0) as (port, _, records), connect(port) as client:
        for _ in range(3):  # waits shorter than every deadline: the connection stays
            client.sendall(one_request())
            assert read_response(client).startswith(b"HTTP/1.1 200 ")
            time.sleep(HEADER_TIMEOUT * 0.6)
        client.sendall(b"POST / HTTP/1.1\r\nHost: t\r\n")  # a later request whose headers never end
        started = time.monotonic()
        received, closed = read_until_closed(client)
    assert_closed_with_408_at(received, closed - started, HEADER_TIMEOUT)
    assert [r.getMessage() for r in records] == [HEADERS_LATE]


@pytest.mark.parametrize("parser", PARSERS)
def test_a_body_trickling_in_is_cut_at_the_body_deadline_from_its_headers(parser):
    with guarded_server(parser) as (port, _, _), connect(port) as client:
        client.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 20\r\n\r\n")
        sent = time.monotonic()
        client.settimeout(0.25)
        received = b""
        for _ in range(20):  # a byte every 0.25 s: each well within the deadline, all of them not
            try:
                client.sendall(b"x")
                chunk = client.recv(65536)
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                break
            received += chunk
            if not chunk or received.endswith(b"}}"):
                break
        closed = time.monotonic()
    # (a byte sent just as the server closed may reset the connection before its 408 is read: either ends it)
    assert received in (TIMEOUT_RESPONSE, b"")
    assert within(closed - sent, BODY_TIMEOUT)


@pytest.mark.parametrize("parser", PARSERS)
def test_a_request_read_whole_is_not_cut_by_the_deadlines_while_it_is_answered(parser):
    with guarded_server(parser) as (port, release, records), connect(port) as client:
        client.sendall(one_request("/slow"))
        time.sleep(BODY_TIMEOUT + HEADER_TIMEOUT + 0.3)  # past every deadline of the request
        release.set()
        assert read_response(client).startswith(b"HTTP/1.1 200 ")
    assert records == []


@pytest.mark.parametrize("parser", PARSERS)
def test_a_request_that_cannot_be_parsed_gets_the_json_400(parser):
    with guarded_server(parser) as (port, _, _), connect(port) as client:
        client.sendall(b"NOT AN HTTP REQUEST\r\n\r\n")
        received, _ = read_until_closed(client)
    assert received == INVALID_RESPONSE


@pytest.mark.parametrize("parser", PARSERS)
def test_at_the_cap_a_new_connection_closes_the_oldest_without_a_request(parser):
    # (a header deadline long enough that no half-open connection here times out on a slow machine)
    with guarded_server(parser, max_connections=3, header_timeout=10.0) as (port, release, records):
        busy = connect(port)
        busy.sendall(one_request("/slow"))  # a request in progress: never the one closed
        time.sleep(0.1)
        half_open = []
        for _ in range(2):
            half_open.append(connect(port))
            half_open[-1].sendall(b"GET / HTTP/1.1\r\nHost: t\r\n")
            time.sleep(0.1)
        newest = connect(port)  # the fourth: the oldest half-open one makes room
        oldest_gone, _ = read_until_closed(half_open[0])
        newest.sendall(one_request())
        assert read_response(newest).startswith(b"HTTP/1.1 200 ")
        half_open[1].sendall(b"\r\n")  # the other half-open one was kept: it can still finish its request
        assert read_response(half_open[1]).startswith(b"HTTP/1.1 200 ")
        release.set()
        assert read_response(busy).startswith(b"HTTP/1.1 200 ")
        for client in (busy, newest, *half_open):
            client.close()
    assert oldest_gone == b""  # aborted, no answer
    assert [r.getMessage() for r in records] == [
        "imt-cds: 3 connections open (the limit): closed the oldest one without a request in progress"]


@pytest.mark.parametrize("parser", PARSERS)
def test_at_the_cap_with_every_connection_busy_the_new_one_is_refused(parser):
    with guarded_server(parser, max_connections=2) as (port, release, records):
        busy = [connect(port), connect(port)]
        for client in busy:
            client.sendall(one_request("/slow"))
        time.sleep(0.2)
        refused = connect(port)
        received, _ = read_until_closed(refused)
        release.set()
        for client in busy:
            assert read_response(client).startswith(b"HTTP/1.1 200 ")
            client.close()
        refused.close()
    assert received == b""
    assert [r.getMessage() for r in records] == [
        "imt-cds: 2 connections open (the limit), each with a request in progress: refused a new one"]
