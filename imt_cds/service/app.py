"""The HTTP face of the CDS Hooks service: ``create_app(config)`` builds a FastAPI application (nothing at import).

Routes (CDS Hooks 2.0.1):

- ``GET  /cds-services``                      discovery (authenticated like every CDS Hooks call)
- ``POST /cds-services/{id}``                 a hook call -> ``{"cards": [...]}``
- ``POST /cds-services/{id}/feedback``        card feedback, stored (``feedback.py``)
- ``GET  /rules/{rule_id}``                   a rule's page (what a card's ``source.url`` opens; public content)
- ``GET  /healthz``                           liveness: live workers, workers lost to crashes while serving a
                                              request (since start), the jobs in the workers' hands and waiting
                                              for one, and the rulebook (no patient data)
- ``GET  /readyz``                            readiness: 200 when hook calls can be answered, 503 with the
                                              reasons (``no_workers``, ``audit_store``) when not

Every error is answered as JSON ``{"error": {"code", "status", "message"[, "details"]}}``, a 401 with a
``WWW-Authenticate: Bearer`` header. Request bodies over the configured size are refused with a 413 before they are
read whole; bodies not declared as JSON (``Content-Type``) with a 415 before they are read (``request_json.py``).
CORS headers are sent only for the configured origins (a refused preflight is a JSON 400 too). The hook call itself
is answered by a small ASGI layer in front of FastAPI (``_HookCalls``), with the same answers, for speed. Building
the app reads and checks the rulebook and the JWK Set files, so a bad configuration fails before the server listens;
the worker pool starts with the server (its lifespan) and stops with it.
"""

import html
import logging
import re
from collections.abc import Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson

from ..core.rule_loader import load_rulebook
from ..core.rulebook import Rulebook
from ..render.cards import citation_links
from .auth import Authenticator
from .calls import SERVICES, find_service
from .config import AuditStoreUnavailableError, ServiceConfig
from .errors import (
    INTERNAL_MESSAGE,
    BadRequestError,
    NotFoundError,
    PayloadTooLargeError,
    ServiceError,
    UnauthorizedError,
    error_body,
    http_reason,
    log_value,
    public_body,
)
from .feedback import CardIndex, FeedbackWriter, open_feedback_sink, parse_feedback, stored_row
from .hooks import HookRunner
from .request_json import check_json_content_type, parse_request_json
from .workers import WorkerPool, WorkerSettings

__all__ = ["create_app"]

log = logging.getLogger("imt_cds.service")
JSON = "application/json"
# How long /readyz waits for the audit store to answer a read: under a proxy's usual health-check timeout.
READY_CHECK_TIMEOUT_SECONDS = 2.0
# What a reading endpoint answers: GET, and HEAD (the same status and headers, no body; HTTP requires both of a
# general-purpose server, RFC 9110 section 9.1, and a proxy's health check may send HEAD).
_READ = ["GET", "HEAD"]


def create_app(config: ServiceConfig) -> Any:
    """A FastAPI application serving ``config``; raises ``ServiceConfigError`` for a configuration it refuses."""
    try:
        from fastapi import FastAPI, Request
        from fastapi.exceptions import RequestValidationError
        from fastapi.responses import HTMLResponse, Response
        from starlette.exceptions import HTTPException
        from starlette.requests import ClientDisconnect
    except ImportError as exc:
        raise ImportError("the CDS Hooks service needs FastAPI and uvicorn: pip install 'imt-cds[service]'") from exc

    config.check()
    rulebook = load_rulebook(config.rules)
    authenticator = (Authenticator(config.auth, replay_store=config.audit, replay_timeout=config.store_timeout)
                     if config.auth is not None else None)
    cards = CardIndex()
    # Open the audit store (creating its tables before feedback's) and the feedback sink once now, so a store that
    # cannot be used stops the start with one clear line instead of a failed lifespan under a listening server.
    _open_audit_store(config)
    open_feedback_sink(config.audit, config.feedback_log, config.store_timeout).close()

    @asynccontextmanager
    async def lifespan(app: Any) -> Any:
        sink = FeedbackWriter(open_feedback_sink(config.audit, config.feedback_log, config.store_timeout),
                              timeout=config.store_timeout)
        pool = WorkerPool(WorkerSettings(rules=str(config.rules) if config.rules else None,
                                         cache_size=config.cache_size, audit=config.audit,
                                         audit_input=config.audit_input, store_timeout=config.store_timeout,
                                         public_url=config.public_url, not_eligible_card=config.not_eligible_card),
                          config.workers, timeout=config.request_timeout,
                          depth=config.worker_depth, rulebook=rulebook)
        await pool.start()
        app.state.pool = pool
        app.state.sink = sink
        app.state.runner = HookRunner(config, pool, rulebook, cards)
        try:
            yield
        finally:
            await pool.close()
            sink.close()
            if authenticator is not None:
                authenticator.replays.close()  # the replay cache's database connection, when it has one

    class ServiceApp(FastAPI):
        """FastAPI, but a hook call goes straight to ``_HookCalls``, past Starlette's middleware stack (and
        FastAPI's per-request telemetry check): the one route that carries the load runs the least code."""

        hook_calls: _HookCalls

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            scope["app"] = self  # as FastAPI sets it: _HookCalls reads the runner from the app's state
            await self.hook_calls(scope, receive, send)

    # redirect_slashes off: a path with a trailing slash is a 404, not a redirect to a URL built from the client's
    # Host header, answered before the request is authenticated.
    app = ServiceApp(title="imt-cds CDS Hooks service", lifespan=lifespan, docs_url=None, redoc_url=None,
                     openapi_url=None, redirect_slashes=False)
    app.state.rule_pages = {}  # rule id -> its page (HTML), made on first request

    def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Any:
        return Response(orjson.dumps(data), status_code=status, media_type=JSON, headers=headers)

    async def authenticate(request: Any, audiences: Iterable[str]) -> dict[str, Any] | None:
        if authenticator is None:
            return None
        return await authenticator.authenticate(request.headers.get("authorization"), audiences)

    async def json_body(request: Any) -> Any:
        check_json_content_type(request.headers.get("content-type"), _encoding(request))  # 415 before reading it
        return parse_request_json(await request.body())  # duplicate keys refused, as in patient facts

    @app.exception_handler(ServiceError)
    async def service_error(request: Any, exc: ServiceError) -> Any:
        # The body says only what public_body allows; what really went wrong (which token check failed, a path,
        # an exception's text) goes to the log, for the operator.
        headers = dict(exc.response_headers) or None
        if isinstance(exc, UnauthorizedError):
            _log_refusal(request.method, request.url.path, exc)
            headers = {"WWW-Authenticate": 'Bearer error="invalid_token"'}
        elif exc.status >= 500:
            _log_server_error(request.method, request.url.path, exc)
        return json_response(public_body(exc), exc.status, headers)

    @app.exception_handler(HTTPException)
    async def http_error(request: Any, exc: Any) -> Any:
        code = {404: "cds_not_found", 405: "cds_method_not_allowed"}.get(exc.status_code, "cds_http_error")
        # exc.headers: the Allow header of a 405, which HTTP requires
        return json_response(error_body(code, exc.status_code, http_reason(exc.status_code)), exc.status_code,
                             exc.headers)

    @app.exception_handler(ClientDisconnect)
    async def client_gone(request: Any, exc: Exception) -> Any:
        # The client closed the connection before its body arrived (or the body deadline closed it, which says so
        # in the log itself): the client's doing, not the service's; the answer goes nowhere.
        log.info("imt-cds: %s %s: the client went away before its request body arrived", request.method,
                 log_value(request.url.path))
        return Response(status_code=400)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Any, exc: Any) -> Any:
        log.warning("imt-cds: %s %s: invalid request: %s", request.method, log_value(request.url.path),
                    log_value(exc.errors(), 400))
        error = BadRequestError("invalid request: the path or parameters are not what this endpoint takes")
        return json_response(error.to_dict(), error.status)

    @app.exception_handler(Exception)
    async def internal_error(request: Any, exc: Exception) -> Any:
        log.exception("imt-cds: internal error answering %s %s", request.method, log_value(request.url.path))
        return json_response(error_body("cds_internal_error", 500, INTERNAL_MESSAGE), 500)

    @app.api_route("/cds-services", methods=_READ)
    async def discovery(request: Request) -> Any:
        await authenticate(request, [config.service_url("/cds-services")])
        return json_response({"services": [s.discovery() for s in SERVICES]})

    @app.post("/cds-services/{service_id}")
    async def hook(service_id: str, request: Request) -> Any:
        await authenticate(request, [config.service_url(f"/cds-services/{service_id}")])
        service = find_service(service_id)
        check_json_content_type(request.headers.get("content-type"), _encoding(request))
        return json_response(await request.app.state.runner.answer(service, await request.body()))

    @app.post("/cds-services/{service_id}/feedback")
    async def feedback(service_id: str, request: Request) -> Any:
        url = config.service_url(f"/cds-services/{service_id}")
        claims = await authenticate(request, [url + "/feedback", url])
        service = find_service(service_id)
        items = parse_feedback(await json_body(request))
        client: dict[str, Any] = {k: claims[k] for k in ("iss", "sub", "tenant") if claims and k in claims}
        rows = [stored_row(service.id, item, cards.get(item["card"]), client) for item in items]
        stored = await request.app.state.sink.record(rows)  # in a thread: a locked store never stalls the loop
        return json_response({"stored": stored})

    @app.api_route("/rules/{rule_id}", methods=_READ)
    async def rule_page(rule_id: str, request: Request) -> Any:
        pages: dict[str, str] = request.app.state.rule_pages  # the rulebook never changes: each page made once
        page = pages.get(rule_id)
        if page is None:
            if rulebook.get(rule_id) is None:
                raise NotFoundError(f"no rule {rule_id!r} in rulebook {rulebook.name} {rulebook.version}")
            page = pages[rule_id] = _rule_html(rulebook, rule_id)
        return HTMLResponse(page)

    @app.api_route("/healthz", methods=_READ)
    async def health(request: Request) -> Any:
        pool = request.app.state.pool
        load = pool.load()
        return json_response({"status": "ok" if pool.live_workers else "degraded", "workers": pool.live_workers,
                              "worker_crashes": pool.crashes,
                              "jobs": {"in_workers": sum(load["in_workers"]), "waiting": load["waiting"]},
                              "rulebook": {"name": rulebook.name, "version": rulebook.version,
                                           "sha256": rulebook.sha256}})

    @app.api_route("/readyz", methods=_READ)
    async def ready(request: Request) -> Any:
        # For a proxy's or an orchestrator's readiness check: 503 takes this server out of rotation while it cannot
        # answer (the reasons are codes only: the details, such as the database's address, go to the log).
        reasons = await request.app.state.pool.not_ready(READY_CHECK_TIMEOUT_SECONDS)
        return json_response({"ready": not reasons, "not_ready": reasons}, 503 if reasons else 200)

    app.add_middleware(_BodyLimit, limit=config.max_body_bytes)
    if config.cors_origins:
        app.add_middleware(_json_cors_middleware(), allow_origins=list(config.cors_origins),
                           allow_methods=["GET", "POST"], allow_headers=["Authorization", "Content-Type"], max_age=600)
    # In front of everything: hook calls skip the rest; any other request goes to FastAPI as it would.
    app.hook_calls = _HookCalls(super(ServiceApp, app).__call__, config=config, authenticator=authenticator)
    return app


def _encoding(request: Any) -> str | None:
    """The request's Content-Encoding headers, joined with commas (each adds a coding), or None."""
    values = request.headers.getlist("content-encoding")
    return ", ".join(values) if values else None


def _open_audit_store(config: ServiceConfig) -> None:
    if config.audit is None:
        return
    from ..audit import open_store
    from ..audit.backends import is_postgres_target
    from ..core.errors import AuditError

    if not is_postgres_target(config.audit):
        folder = Path(config.audit).expanduser().absolute().parent
        if not folder.is_dir():
            raise AuditStoreUnavailableError(f"cannot open the audit store {config.audit}: its folder {folder} does "
                                             "not exist (create it, or give another --audit path)")
    try:
        open_store(config.audit, store_input=config.audit_input).close()
    except AuditError as exc:
        raise AuditStoreUnavailableError(str(exc)) from exc


def _json_cors_middleware() -> Any:  # (a subclass of Starlette's CORSMiddleware)
    """Starlette's CORS middleware, but a refused preflight is answered as every other error is, in JSON (it says
    "Disallowed CORS origin" in plain text): a 400 ``cds_bad_request`` naming what was not allowed (the origin, the
    method, the headers), with the headers Starlette sends (the CORS ones it grants, none for another origin)."""
    from starlette.middleware.cors import CORSMiddleware
    from starlette.responses import Response

    class JsonCORSMiddleware(CORSMiddleware):
        def preflight_response(self, request_headers: Any) -> Any:
            response = super().preflight_response(request_headers)
            if response.status_code != 400:
                return response
            text = bytes(response.body).decode("utf-8", "replace")
            refused = text.removeprefix(_CORS_REFUSAL_PREFIX) if text.startswith(_CORS_REFUSAL_PREFIX) else ""
            message = (f"CORS preflight refused: {refused or text} not allowed (a browser may call this service from "
                       "the origins its --cors-origin names, with GET or POST and the headers Authorization and "
                       "Content-Type)")
            headers = {name: value for name, value in response.headers.items()
                       if name not in ("content-type", "content-length")}
            body = BadRequestError(message).to_dict()
            return Response(orjson.dumps(body), status_code=400, media_type=JSON, headers=headers)

    return JsonCORSMiddleware


_CORS_REFUSAL_PREFIX = "Disallowed CORS "  # Starlette's words before what it refused ("origin, method")


class _TooLarge(Exception):
    pass


class _BodyLimit:
    """Refuse request bodies over ``limit`` bytes (413), by Content-Length at once, or while the body streams in."""

    def __init__(self, app: Callable[..., Awaitable[None]], limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            try:
                too_large = int(declared) > self.limit
            except ValueError:
                await _send_error(send, BadRequestError("Content-Length is not a number"))
                return
            if too_large:
                await _send_error(send, self._error())
                return
        received = 0
        started = False

        async def limited_receive() -> Any:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise _TooLarge
            return message

        async def watched_send(message: Any) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, watched_send)
        except _TooLarge:
            if not started:
                await _send_error(send, self._error())

    def _error(self) -> PayloadTooLargeError:
        return PayloadTooLargeError(f"the request body is larger than this service accepts ({self.limit} bytes)")


_HOOK_PREFIX = "/cds-services/"
_JSON_BYTES = JSON.encode()
_UNAUTHORIZED_HEADER = (b"www-authenticate", b'Bearer error="invalid_token"')


class _HookCalls:
    """The hook call, ``POST /cds-services/{id}``, answered here without FastAPI's routing, dependency and response
    layers (more than half of the HTTP layer's CPU per request went there); every other request goes on to ``app``
    unchanged.

    It answers exactly as the FastAPI route with the middleware around it would, in the same order: a
    Content-Length over the limit (413) or not a number (400) before anything else; then the bearer token (401
    with ``WWW-Authenticate``), the service id (404), the Content-Type (415, with ``Accept``), the body read against
    the limit (413), strict JSON (400), the request's shape (400); then the ``HookRunner`` (``answer``: for a
    patient-view call, the JSON and shape checks run in the worker that answers it, with the same functions and
    words). Error bodies come from the same ``public_body``. A request with an ``Origin`` header, when CORS is
    configured, goes to the FastAPI path, whose CORS middleware adds its headers."""

    def __init__(self, app: Callable[..., Awaitable[None]], config: ServiceConfig,
                 authenticator: Authenticator | None):
        self.app = app
        self.config = config
        self.authenticator = authenticator
        self.limit = config.max_body_bytes
        self.cors = bool(config.cors_origins)
        # With CORS configured, Starlette's CORS middleware adds "Vary: Origin" to every answer to a request without
        # an Origin header; so does this path, so that a cache in between keeps answers to browsers apart.
        self.trailing = [(b"vary", b"Origin")] if self.cors else []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        if (scope["type"] != "http" or scope["method"] != "POST" or not path.startswith(_HOOK_PREFIX)
                or scope.get("root_path")):
            await self.app(scope, receive, send)
            return
        service_id = path[len(_HOOK_PREFIX):]
        if not service_id or "/" in service_id:  # not this route (/feedback, or no id): FastAPI's to answer
            await self.app(scope, receive, send)
            return
        declared = authorization = content_type = None
        encodings: list[bytes] = []
        for name, value in scope["headers"]:
            if name == b"content-length":
                declared = value  # the last one, as the body limit middleware reads it
            elif name == b"authorization":
                if authorization is None:  # the first one, as Starlette's Headers.get reads it
                    authorization = value
            elif name == b"content-type":
                if content_type is None:  # the first one, as above
                    content_type = value
            elif name == b"content-encoding":
                encodings.append(value)  # every one: each adds a coding
            elif name == b"origin" and self.cors:
                await self.app(scope, receive, send)
                return
        if declared is not None:
            try:
                too_large = int(declared) > self.limit
            except ValueError:
                await _send_error(send, BadRequestError("Content-Length is not a number"), self.trailing)
                return
            if too_large:
                await _send_error(send, self._too_large(), self.trailing)
                return
        try:
            body = await self._answer(scope, receive, service_id, authorization, content_type,
                                      b", ".join(encodings).decode("latin-1") if encodings else None)
        except _TooLarge:
            await _send_error(send, self._too_large(), self.trailing)
            return
        except _Disconnected:
            return  # the client went away: nobody to answer
        except ServiceError as exc:
            await self._send_service_error(scope, send, exc)
            return
        except Exception:  # noqa: BLE001 - answered as the FastAPI app answers any other failure: 500, logged
            log.exception("imt-cds: internal error answering %s %s", scope["method"], log_value(path))
            await _send_json(send, 500, orjson.dumps(error_body("cds_internal_error", 500, INTERNAL_MESSAGE)),
                             trailing=self.trailing)
            return
        await _send_json(send, 200, body, trailing=self.trailing)

    async def _answer(self, scope: dict[str, Any], receive: Any, service_id: str, authorization: bytes | None,
                      content_type: bytes | None, content_encoding: str | None) -> bytes:
        if self.authenticator is not None:
            await self.authenticator.authenticate(None if authorization is None else authorization.decode("latin-1"),
                                                  [self.config.service_url(scope["path"])])
        service = find_service(service_id)
        check_json_content_type(None if content_type is None else content_type.decode("latin-1"), content_encoding)
        runner: HookRunner = scope["app"].state.runner
        return orjson.dumps(await runner.answer(service, await self._body(receive)))

    async def _body(self, receive: Any) -> bytes:
        chunks: list[bytes] = []
        received = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                raise _Disconnected
            chunk = message.get("body", b"")
            received += len(chunk)
            if received > self.limit:
                raise _TooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def _too_large(self) -> PayloadTooLargeError:
        return PayloadTooLargeError(f"the request body is larger than this service accepts ({self.limit} bytes)")

    async def _send_service_error(self, scope: dict[str, Any], send: Any, exc: ServiceError) -> None:
        # As the FastAPI app's ServiceError handler: the reason to the log, the public body to the client.
        headers = [(name.lower().encode(), value.encode()) for name, value in exc.response_headers]
        if isinstance(exc, UnauthorizedError):
            _log_refusal(scope["method"], scope["path"], exc)
            headers.append(_UNAUTHORIZED_HEADER)
        elif exc.status >= 500:
            _log_server_error(scope["method"], scope["path"], exc)
        await _send_json(send, exc.status, orjson.dumps(public_body(exc)), headers, self.trailing)


class _Disconnected(Exception):
    pass


# The kind of a 401 reason: its words before the first quoted, numbered or bracketed value (every value a token
# chooses is shown quoted, e.g. "JWT issuer 'https://...' is not trusted"), so the log's rate filter counts
# refusals per reason and no token can make each refusal a line of its own by varying its claims.
_REASON_KIND = re.compile(r"[^'\"(0-9]{0,80}")


def _log_refusal(method: str, path: str, exc: ServiceError) -> None:
    reason = exc.message
    kind = _REASON_KIND.match(reason)
    log.warning("imt-cds: %s %s refused (401): %s", method, log_value(path), log_value(reason, 400),
                extra={"log_key": kind.group() if kind else ""})


def _log_server_error(method: str, path: str, exc: ServiceError) -> None:
    log.error("imt-cds: %s %s: [%s] %s", method, log_value(path), exc.code, log_value(exc.message, 400),
              extra={"log_key": exc.code})


async def _send_json(send: Any, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None,
                     trailing: list[tuple[bytes, bytes]] | None = None) -> None:
    """A JSON response with the headers a FastAPI ``Response`` sends (extra ones first, as it orders them; then
    those a middleware would append)."""
    raw = [*(headers or ()), (b"content-length", str(len(body)).encode()), (b"content-type", _JSON_BYTES),
           *(trailing or ())]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


async def _send_error(send: Any, error: ServiceError, trailing: list[tuple[bytes, bytes]] | None = None) -> None:
    body = orjson.dumps(error.to_dict())
    await send({"type": "http.response.start", "status": error.status,
                "headers": [(b"content-type", JSON.encode()), (b"content-length", str(len(body)).encode()),
                            *(trailing or ())]})
    await send({"type": "http.response.body", "body": body})


def _rule_html(rulebook: Rulebook, rule_id: str) -> str:
    rule = rulebook.rule(rule_id)
    e = html.escape
    parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{e(rule.id)}: {e(rule.title)}"
             "</title></head><body>",
             f"<h1>{e(rule.id)} v{e(rule.version)}: {e(rule.title)}</h1>",
             f"<p>Rulebook {e(rulebook.name)} {e(rulebook.version)} (sha256 {e(rulebook.sha256)}). Kind: "
             f"{e(rule.kind)}. Strength of evidence: {e(rule.strength)}.</p>"]
    if rule.description:
        parts.append(f"<p>{e(rule.description)}</p>")
    if rule.findings:
        parts.append("<h2>Findings</h2><ul>")
        parts += [f"<li><code>{e(f.code)}</code>: {e(f.summary)}</li>" for f in rule.findings]
        parts.append("</ul>")
    entries = [rulebook.evidence[i].to_dict() for i in rule.evidence if i in rulebook.evidence]
    if entries:
        parts.append("<h2>Evidence</h2><ul>")
        for entry in entries:
            text = f"&ldquo;{e(entry['quote'])}&rdquo;" if entry.get("quote") else e(entry["claim"])
            parts.append(f"<li>{text}<br><small>{e(entry['citation'])} [{e(entry['id'])}]</small></li>")
        parts.append("</ul>")
    links = citation_links(entries)
    if links:
        parts.append("<h2>Literature</h2><ul>")
        parts += [f"<li><a href='{e(link['url'])}'>{e(link['label'])}</a></li>" for link in links]
        parts.append("</ul>")
    parts.append("<p><em>Decision support for a multidisciplinary team, not a prescription.</em></p></body></html>")
    return "\n".join(parts)
