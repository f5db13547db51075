"""What one client can hold of the server: connection limits, read timeouts and log-flood protection for ``serve``.

uvicorn alone bounds none of this. Its keep-alive timeout only starts after a first response, and its
``limit_concurrency`` answers 503 to *complete* requests once too many connections are open, so a client that opens
connections and never finishes its headers holds them forever and, past the process's open-file limit, stops
``accept()`` for everyone (the event loop then logs "Too many open files" over and over). Here:

- ``ConnectionLimits``: at most ``max_connections`` open at once; request headers must be complete within
  ``header_timeout`` seconds of the connection opening (or of the first byte of a later request on a kept-alive
  connection), and a body within ``body_timeout`` seconds of its headers; idle kept-alive connections close after
  ``keep_alive_timeout``.
- ``guarded_protocol(limits)``: uvicorn's httptools protocol (h11's when httptools is missing) with those
  deadlines. At the cap, a new connection closes the oldest connection that has no request in progress (a
  half-open one, or an idle kept-alive one), so a flood of half-open connections costs legitimate clients nothing;
  only when every connection is busy with a request is the new one refused.
  Both also refuse, before the body is read, a request head RFC 9112 says a server must refuse
  (``request_head_problem``: a request target over 8 KiB, no or several Host headers, a body length a proxy
  could read differently, a transfer coding but chunked) and a head over 32 KiB, answered after the requests
  pipelined before it, and close the connection.
- ``open_file_budget``: raises the process's soft RLIMIT_NOFILE so the cap fits under it, or refuses a cap that
  cannot fit.
- ``RepeatedLogFilter``: the same diagnostic (same logger, level and message template) at most ``burst`` times per
  ``window`` seconds; the next one let through says how many were suppressed. It never keys on the text a client
  chose (a path, a token's claims), so varying that text cannot get a flood through.

Nothing here runs at import; each server builds its own protocol class and filter (no state shared between servers).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from .errors import ServiceConfigError, http_reason, log_value

__all__ = ["MAX_HEAD_BYTES", "MAX_TARGET_BYTES", "ConnectionLimits", "RepeatedLogFilter", "guarded_protocol",
           "open_file_budget", "request_head_problem"]

log = logging.getLogger("imt_cds.service.connections")

DEFAULT_MAX_CONNECTIONS = 1000
# Descriptors the server needs besides client connections: its listening socket, worker pipes and process
# handles (a few per worker), the audit store, log files, outgoing FHIR connections while prefetching.
_RESERVED_FILES = 256
_RESERVED_FILES_PER_WORKER = 8


# The service answers every error as JSON (errors.error_body); these the protocol writes itself, as the same JSON.
def _protocol_answer(status: int, code: str, message: str) -> bytes:
    body = json.dumps({"error": {"code": code, "status": status, "message": message}}, separators=(",", ":"))
    return (b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: %d\r\n\r\n%s"
            % (status, http_reason(status).encode(), len(body), body.encode()))


_TIMEOUT_RESPONSE = _protocol_answer(408, "cds_request_timeout", "the request did not arrive in time")
_INVALID_RESPONSE = _protocol_answer(400, "cds_bad_request",
                                     "invalid HTTP request (the request line or headers could not be parsed)")
_REFUSAL_CODES = {400: "cds_bad_request", 414: "cds_uri_too_long", 431: "cds_headers_too_large",
                  501: "cds_not_implemented"}
# The longest request target read: the service's own paths are short, and 8 KiB is what common proxies pass.
MAX_TARGET_BYTES = 8192
# The most of a request's head (request line and headers) held while it arrives: a bearer token is at most 8 KiB
# (auth.py), the target as much. httptools sets no bound of its own: one connection could make the server hold
# gigabytes of header within the header deadline.
MAX_HEAD_BYTES = 32768
_HEAD_TOO_LARGE = f"the request line and headers are over {MAX_HEAD_BYTES // 1024} KiB"
# A Host header's value (RFC 9110 section 7.2: uri-host [ ":" port ], RFC 3986's IP-literal, IPv4address or
# reg-name; empty is allowed, for a target without an authority).
_HOST_VALUE = re.compile(rb"(?:\[[0-9A-Za-z:.\-_~!$&'()*+,;=%]+\]|[0-9A-Za-z\-._~%!$&'()*+,;=]*)(?::[0-9]*)?")


def request_head_problem(http_version: str, target: bytes,
                         headers: Iterable[tuple[bytes, bytes]]) -> tuple[int, str] | None:
    """What makes a request's head unacceptable before its body is read, as (status, message), or None.

    Both HTTP parsers let through requests that RFC 9112 says a server must refuse, and whose framing a proxy in
    front of the service may read differently (request smuggling): a body length given two ways, or a transfer
    coding the parser ignored. ``target`` is the request target as sent (path and query); ``headers`` are
    (lower-case name, value) pairs as received."""
    if len(target) > MAX_TARGET_BYTES:
        return 414, (f"the request target is {len(target)} bytes long: at most {MAX_TARGET_BYTES} are read "
                     f"(RFC 9112, section 3)")
    hosts = [value for name, value in headers if name == b"host"]
    codings_given = [value for name, value in headers if name == b"transfer-encoding"]
    if len(hosts) > 1:
        return 400, f"a request carries one Host header; this one has {len(hosts)} (RFC 9112, section 3.2)"
    if not hosts and http_version == "1.1":
        return 400, "an HTTP/1.1 request must carry a Host header (RFC 9112, section 3.2)"
    if hosts and not _HOST_VALUE.fullmatch(hosts[0]):
        return 400, "the Host header is not a host name or address with an optional port (RFC 9110, section 7.2)"
    if not codings_given:
        return None
    if http_version != "1.1":
        return 400, (f"an HTTP/{http_version} request cannot use Transfer-Encoding: its length cannot be trusted "
                     f"(RFC 9112, section 6.1)")
    if any(name == b"content-length" for name, _ in headers):
        return 400, ("a request carries both Transfer-Encoding and Content-Length: its length cannot be trusted "
                     "(RFC 9112, section 6.1)")
    codings = [coding.strip().lower() for value in codings_given for coding in value.split(b",") if coding.strip()]
    if codings[-1:] != [b"chunked"] or codings.count(b"chunked") > 1:
        return 400, ("Transfer-Encoding must end with chunked, once, in a request: its length cannot be "
                     "determined otherwise (RFC 9112, section 6.3)")
    if len(codings) > 1:
        others = ", ".join(coding.decode("latin-1") for coding in codings[:-1])
        return 501, f"the transfer coding {log_value(others, 100)} is not supported: send the body chunked only"
    return None


@dataclass(frozen=True)
class ConnectionLimits:
    """How much of the server one client can hold (see the module docstring); ``max_connections`` None: as many as
    the open-file limit allows, at most ``DEFAULT_MAX_CONNECTIONS``."""

    max_connections: int | None = None
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    keep_alive_timeout: float = 5.0

    def check(self) -> None:
        if self.max_connections is not None and self.max_connections < 16:
            raise ServiceConfigError(f"--max-connections {self.max_connections} is too small: at least 16")
        for name in ("header_timeout", "body_timeout", "keep_alive_timeout"):
            value = getattr(self, name)
            if not 0 < value <= 3600:
                option = "--" + name.replace("_", "-")
                raise ServiceConfigError(f"{option} {value:g} must be more than 0 and at most 3600 seconds")


def open_file_budget(limits: ConnectionLimits, workers: int) -> int:
    """The connection cap to use, after raising the soft open-file limit as far as the cap needs (never above the
    hard limit); ``ServiceConfigError`` when an explicit cap cannot fit."""
    import resource

    reserved = _RESERVED_FILES + _RESERVED_FILES_PER_WORKER * workers
    wanted = limits.max_connections or DEFAULT_MAX_CONNECTIONS
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    ceiling = hard if hard != resource.RLIM_INFINITY else max(soft, wanted + reserved)
    target = min(ceiling, wanted + reserved)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    available = (wanted + reserved if soft == resource.RLIM_INFINITY else soft) - reserved
    if limits.max_connections is None:
        if available < 16:
            raise ServiceConfigError(f"the open-file limit ({soft}, hard {hard}: ulimit -n) leaves no room for "
                                     f"client connections beside the {reserved} the server reserves: raise it")
        return min(wanted, available)
    if available < wanted:
        raise ServiceConfigError(f"--max-connections {wanted} needs {wanted + reserved} open files but this process "
                                 f"may open only {soft} (hard limit {hard}: ulimit -Hn): lower --max-connections "
                                 f"to {max(available, 0)} or raise the limit")
    return wanted


def guarded_protocol(limits: ConnectionLimits, max_connections: int,
                     parser: str = "auto") -> type[asyncio.Protocol]:
    """A uvicorn ``http`` protocol class (pass as ``uvicorn.Config(http=...)``) enforcing ``limits``: on uvicorn's
    httptools protocol (the C parser, several times cheaper per request than h11) when httptools is installed, on
    its h11 protocol otherwise (``parser`` "httptools" or "h11" chooses; "auto" prefers httptools)."""
    if parser not in ("auto", "httptools", "h11"):
        raise ServiceConfigError(f"HTTP parser {parser!r} is not one of auto, httptools, h11")
    if parser != "h11":
        try:
            return _guarded_httptools(limits, max_connections)
        except ImportError:
            if parser == "httptools":
                raise ServiceConfigError("the HTTP parser httptools is not installed: pip install "
                                         "'imt-cds[service]'") from None
    return _guarded_h11(limits, max_connections)


class _Deadlines:
    """The deadlines and the connection cap, shared by both guarded protocols. A protocol says, through
    ``_idle()``, whether it has a request in progress; it calls ``_arm`` / ``_disarm`` as its request is read."""

    _deadline: asyncio.TimerHandle | None = None
    _awaiting: str = ""  # what the running deadline waits for ("" none)
    _opened_at: float = 0.0
    _refusal: bytes | None = None  # the answer to a request whose head was refused (request_head_problem)
    _limits: ConnectionLimits
    _max_connections: int
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport
    # (uvicorn's, typed there by each protocol its own way: the set of open connections, the request cycle or None)
    connections: set[Any]
    cycle: Any

    # Cooperative: placed before the uvicorn protocol in the bases, these wrap its own connection_made/_lost.
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        self._opened()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)  # type: ignore[misc]

    def _opened(self) -> None:
        self._opened_at = self.loop.time()
        self._arm(self._limits.header_timeout, "headers")
        if len(self.connections) > self._max_connections:
            self._make_room()

    def _arm(self, seconds: float, awaiting: str) -> None:
        self._disarm()
        self._awaiting = awaiting
        self._deadline = self.loop.call_later(seconds, self._time_out)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline = None
        self._awaiting = ""

    def _time_out(self) -> None:
        what = self._awaiting
        self._deadline = None
        self._awaiting = ""
        if self.transport.is_closing():
            return
        if what == "idle":  # a request answered early, then read to its end: nothing is waiting, as keep-alive
            self.transport.close()
            return
        cycle: object = self.cycle
        answered = cycle is not None and getattr(cycle, "response_complete")
        if what == "body" and answered:
            # The request was answered before its body was read (a 401, 404 or 413): the rest never came.
            log.warning("imt-cds: closed a connection whose request was answered early and the rest of whose body "
                        "did not arrive within %g s", self._limits.body_timeout)
        else:
            log.warning("imt-cds: closed a connection whose request %s did not arrive within %g s",
                        what, self._limits.header_timeout if what == "headers" else self._limits.body_timeout)
            if cycle is None or answered or not getattr(cycle, "response_started"):
                self.transport.write(_TIMEOUT_RESPONSE)  # nothing of a response sent yet: say why it ends
        self.transport.close()

    def _answered_early(self) -> bool:
        """The request whose body was just read to its end had been answered already (before its body was read):
        uvicorn armed its keep-alive timer when it answered, and the body's arrival cancelled it."""
        cycle: object = self.cycle
        return cycle is not None and bool(getattr(cycle, "response_complete"))

    def send_400_response(self, msg: str) -> None:
        # uvicorn's answer to a request it cannot parse, as JSON like every other error of the service (a refused
        # head says why).
        if not self.transport.is_closing():
            self.transport.write(self._refusal or _INVALID_RESPONSE)
            self.transport.close()

    def _refuse_head(self, http_version: str, target: bytes, headers: Iterable[tuple[bytes, bytes]]) -> str | None:
        """Check a request's head as it completes; on a problem keep its answer (the parser's error path then
        writes it, after the answers to requests pipelined before it) and return the message."""
        problem = request_head_problem(http_version, target, headers)
        if problem is None:
            return None
        self._keep_refusal(*problem)
        return problem[1]

    def _keep_refusal(self, status: int, message: str) -> None:
        """Keep the answer a refused request gets (written by ``send_400_response``), and log why."""
        self._refusal = _protocol_answer(status, _REFUSAL_CODES[status], message)
        log.warning("imt-cds: refused a request before reading its body: %s", message, extra={"log_key": status})

    def _idle(self) -> bool:
        raise NotImplementedError

    def _make_room(self) -> None:
        open_now = [c for c in self.connections if not c.transport.is_closing()]
        if len(open_now) <= self._max_connections:
            return  # the excess are closing already
        idle = [c for c in open_now if c is not self and isinstance(c, _Deadlines) and c._idle()]
        if idle:
            oldest = min(idle, key=lambda c: c._opened_at)
            log.warning("imt-cds: %d connections open (the limit): closed the oldest one without a request in "
                        "progress", self._max_connections)
            oldest.transport.abort()
        else:
            log.warning("imt-cds: %d connections open (the limit), each with a request in progress: refused a "
                        "new one", self._max_connections)
            self.transport.abort()


class _RefusedHead(Exception):
    """Raised from the httptools parser's callback to end parsing at a refused request head."""


def _guarded_httptools(limits: ConnectionLimits, max_connections: int) -> type[asyncio.Protocol]:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class GuardedHttpToolsProtocol(_Deadlines, HttpToolsProtocol):
        _limits = limits
        _max_connections = max_connections

        # The parser's callbacks say where the request stands: its first byte (a later request on a kept-alive
        # connection: the header deadline starts), its headers complete (the body deadline), its end (no deadline:
        # the worker timeout bounds the rest).
        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._head_bytes = 0
            self._head_began_in_this_read = True
            if self._deadline is None or self._awaiting == "idle":
                self._arm(limits.header_timeout, "headers")

        # The head's size, counted by whole reads: a read in which a head is still incomplete, and which did not
        # begin it, is head bytes only (the read that began it may hold the end of a request before it, so it is
        # not counted: the bound is MAX_HEAD_BYTES plus one read).
        _head_bytes = 0
        _head_began_in_this_read = False

        def data_received(self, data: bytes) -> None:
            self._head_began_in_this_read = False
            super().data_received(data)
            if self._awaiting != "headers" or self._head_began_in_this_read or self.transport.is_closing():
                return
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                self._keep_refusal(431, _HEAD_TOO_LARGE)
                self.send_400_response(_HEAD_TOO_LARGE)  # after the requests pipelined before it, as any refusal

        def on_headers_complete(self) -> None:
            message = self._refuse_head(self.parser.get_http_version(), self.url, self.headers)
            if message is not None:
                # The parser turns this into its error: uvicorn then calls send_400_response, which waits for
                # the requests read before this one to be answered (below), and nothing more is read.
                raise _RefusedHead(message)
            super().on_headers_complete()
            if not self.transport.is_closing():
                self._arm(limits.body_timeout, "body")

        def on_message_complete(self) -> None:
            super().on_message_complete()
            if self._answered_early():
                # Without this nothing would ever close the connection: the keep-alive timer is gone (see
                # _answered_early) and no response is coming to arm it again.
                self._arm(limits.keep_alive_timeout, "idle")
            else:
                self._disarm()

        def _idle(self) -> bool:
            """No request in progress (a client that has not finished its headers, or a kept-alive connection
            between requests): nothing is lost by closing it. The request cycle exists from the end of the
            headers until its response is complete."""
            return (self.cycle is None or self.cycle.response_complete) and not self.transport.is_closing()

        # A malformed request after others read whole and still being answered (pipelined on one connection):
        # uvicorn wrote its 400 at once and closed, so the answers to the requests before it, evaluated (and
        # recorded) all the same, were lost, each with a traceback in the log. HTTP/1.1 answers in request order:
        # those come first, then the 400, then the connection closes; nothing more is read meanwhile.
        _refusal_pending = False

        def send_400_response(self, msg: str) -> None:
            cycle = self.cycle  # the last request read: the others before it complete first
            if cycle is not None and not cycle.response_complete and not cycle.more_body:
                self._refusal_pending = True
                self._disarm()
                self.flow.pause_reading()
                return
            super().send_400_response(msg)  # nothing else in progress, or the malformed request is this one

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if self._refusal_pending and not self.transport.is_closing():
                if self.cycle.response_complete:  # the last request before the malformed one is answered
                    self._refusal_pending = False
                    super().send_400_response("")
                else:
                    self.flow.pause_reading()  # (uvicorn resumed reading for the next pipelined request)

    return GuardedHttpToolsProtocol


def _guarded_h11(limits: ConnectionLimits, max_connections: int) -> type[asyncio.Protocol]:
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class CheckedConnection(h11.Connection):
        """h11's server side of a connection that also refuses what ``request_head_problem`` refuses (h11 refuses
        some of it itself: a missing or second Host, a transfer coding but chunked)."""

        def __init__(self, protocol: _Deadlines):
            # h11 holds at most this much of a request's head (its own answer past it: a 400).
            super().__init__(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
            self._protocol = protocol

        def next_event(self) -> Any:
            try:
                event = super().next_event()
            except h11.RemoteProtocolError as exc:
                if exc.error_status_hint == 431:  # h11's bound on a head: answered in the service's words
                    self._protocol._keep_refusal(431, _HEAD_TOO_LARGE)
                raise
            if isinstance(event, h11.Request):
                message = self._protocol._refuse_head(event.http_version.decode("ascii"), event.target,
                                                      event.headers)
                if message is not None:
                    raise h11.RemoteProtocolError(message)  # uvicorn then calls send_400_response
            return event

    class GuardedH11Protocol(_Deadlines, H11Protocol):
        _limits = limits
        _max_connections = max_connections

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.conn = CheckedConnection(self)

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            self._follow_request()

        def _follow_request(self) -> None:
            if self.transport.is_closing():
                self._disarm()
                return
            state = self.conn.their_state
            if state is h11.IDLE:
                if self._awaiting == "body":
                    # The body of a request answered early has just been read to its end (h11 starts the next cycle
                    # at once): the connection is idle, and its keep-alive timer is gone (see _answered_early).
                    self._arm(limits.keep_alive_timeout, "idle")
                elif self._deadline is None or self._awaiting == "idle":  # a later request has begun
                    self._arm(limits.header_timeout, "headers")
            elif state is h11.SEND_BODY:
                if self._awaiting != "body":
                    self._arm(limits.body_timeout, "body")
            else:  # the request is read (or the connection is failing): the worker timeout bounds the rest
                self._disarm()

        def _idle(self) -> bool:
            """No request in progress: nothing is lost by closing it (a client that has not finished its headers,
            or a kept-alive connection between requests)."""
            return (self.conn.their_state is h11.IDLE and (self.cycle is None or self.cycle.response_complete)
                    and not self.transport.is_closing())

    return GuardedH11Protocol


@dataclass
class _Seen:
    window_start: float
    passed: int
    suppressed: int


class RepeatedLogFilter(logging.Filter):
    """Let the same diagnostic through at most ``burst`` times per ``window`` seconds (records at WARNING and above;
    keyed by logger, level, the first line of the message *template* (``record.msg``, before its arguments are put
    in) and the record's ``log_key`` when the code logging it gave one (``extra={"log_key": ...}``: e.g. the kind of
    a 401's reason, so that refusals for different reasons are counted apart). Never the message as written: its
    arguments hold what clients sent, and a flood varying them would otherwise pass line by line. The first record
    let through after a suppression says how many were dropped. Loggers in ``exempt`` (records that are data, such
    as feedback written to the log) always pass."""

    def __init__(self, burst: int = 5, window: float = 60.0, exempt: Iterable[str] = (),
                 clock: Callable[[], float] = time.monotonic, max_keys: int = 1024):
        super().__init__()
        self.burst = burst
        self.window = window
        self.exempt = tuple(exempt)
        self._clock = clock
        self._max_keys = max_keys
        self._seen: OrderedDict[tuple[str, int, str, str], _Seen] = OrderedDict()
        self._lock = threading.Lock()  # handlers may be called from executor threads as well as the loop

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING or record.name.startswith(self.exempt):
            return True
        template = str(record.msg).split("\n", 1)[0][:200]
        key = (record.name, record.levelno, template, str(getattr(record, "log_key", ""))[:200])
        now = self._clock()
        with self._lock:
            seen = self._seen.get(key)
            if seen is None or now - seen.window_start >= self.window:
                dropped = seen.suppressed if seen is not None else 0
                self._seen[key] = _Seen(now, 1, 0)
                self._seen.move_to_end(key)
                while len(self._seen) > self._max_keys:
                    self._seen.popitem(last=False)
                if dropped:
                    note = f" [{dropped} more like this were suppressed in the previous {self.window:g} s]"
                    record.msg = str(record.msg) + note.replace("%", "%%")
                return True
            if seen.passed < self.burst:
                seen.passed += 1
                return True
            seen.suppressed += 1
            return False


def install_log_filter(log_filter: logging.Filter, logger_names: Iterable[str]) -> None:
    """Put ``log_filter`` on every handler of the named loggers (and of the root logger)."""
    for name in ("", *logger_names):
        for handler in logging.getLogger(name).handlers:
            handler.addFilter(log_filter)
