"""``imt-cds serve``: the CDS Hooks 2.0.1 service on uvicorn (registered by ``cli.py``; see ``imt_cds.service``).

The server refuses to start without authentication (at least one ``--trust ISS JWKS``) unless
``--allow-unauthenticated`` is given, which prints a warning: anyone who can reach the port could then read
decision support for any patient record they send. Exit codes: 0 after a clean shutdown; 2 for a configuration it
refuses (no authentication, an unreadable JWK Set, a bad URL, limits that do not fit) or an optional extra that is
not installed (the service's, or psycopg for a PostgreSQL audit store); 3 when it cannot start
where it was told to (the audit store cannot be opened, the address cannot be listened on); 1 for an internal error
(as every command: see ``cli.main``). Each is one line on standard error, never a traceback.

The server runs with the limits of ``service.connections``: a connection cap under the open-file limit, header,
body and keep-alive timeouts, and repeated diagnostics rate-limited in the log.
"""

from __future__ import annotations

import argparse
import gc
import ipaddress
import logging
import signal
import socket
import sys
from pathlib import Path
from typing import Any

from .common import missing_extra, missing_extra_message

__all__ = ["register"]

EXIT_OK, EXIT_USAGE, EXIT_CANNOT_START = 0, 2, 3  # an internal error exits 1 through cli.main
UNAUTHENTICATED_WARNING = (
    "imt-cds: WARNING: serving WITHOUT authentication (--allow-unauthenticated): any client that can reach this "
    "port gets decision support for any record it sends, and can make the service call any FHIR server. Use it "
    "only on a closed test network; trust your EHR's JWT issuer with --trust ISS JWKS instead.")
PUBLIC_URL_WARNING = (
    "imt-cds: WARNING: listening on {host}, not a loopback address, without --public-url: discovery, the JWT "
    "audience (aud) and card links use {url}, which is not where an EHR calls the service (behind a proxy, its URL); "
    "set --public-url URL.")


def register(commands: Any) -> None:
    serve = commands.add_parser(
        "serve",
        help="run the CDS Hooks 2.0.1 service (an EHR calls it on patient-view and order-sign)",
        description="Serve CDS Hooks 2.0.1: discovery at /cds-services, the services imt-patient-view "
        "(patient-view) and imt-order-sign (order-sign), card feedback. Evaluations run in supervised worker "
        "processes. Every call must carry a bearer JWT from a trusted issuer (--trust). For a proxy or an "
        "orchestrator, without a token: /readyz (200 when hook calls can be answered, else 503 with the reasons) "
        "and /healthz (liveness and load).",
        epilog="example: imt-cds serve --port 8080 --public-url https://cds.example.org "
        "--trust https://ehr.example.org/ ehr-jwks.json --audit audit.db\n"
        "exit codes: 0 clean shutdown, 1 internal error, 2 configuration refused or an extra not installed,\n"
        "3 cannot start (audit store cannot be opened, address in use).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8080, help="port to listen on (default 8080)")
    serve.add_argument("--public-url", metavar="URL",
                       help="the base URL clients call (behind a proxy: its URL); JWT aud must be this plus the "
                       "endpoint path (default http://HOST:PORT, with a warning at start when HOST is not a loopback "
                       "address)")
    serve.add_argument("--trust", nargs=2, action="append", default=[], metavar=("ISS", "JWKS"),
                       help="trust JWTs from issuer ISS, verified with the JWK Set JWKS: a file, or an https URL "
                       "(repeat for several issuers)")
    serve.add_argument("--jwt-leeway", type=int, default=60, metavar="SECONDS",
                       help="clock skew allowed on exp and iat (default 60)")
    serve.add_argument("--jwt-max-lifetime", type=int, default=None, metavar="SECONDS",
                       help="longest token lifetime exp - iat accepted, and the oldest iat (default 300; at most "
                       "3600)")
    serve.add_argument("--jwt-max-bytes", type=int, default=None, metavar="BYTES",
                       help="longest bearer token accepted (default 8192; from 1024 to 65536)")
    serve.add_argument("--allow-unauthenticated", action="store_true",
                       help="serve without authentication (prints a warning; for a closed test network only)")
    serve.add_argument("--audit", metavar="DB",
                       help="record every evaluation (patient-view; order-sign checks run none) in this audit store "
                       "(SQLite file or postgresql://...); card feedback is kept there too")
    serve.add_argument("--audit-no-input", action="store_true", help="keep only each input's sha256 in the records")
    serve.add_argument("--feedback-log", metavar="FILE", type=Path,
                       help="without --audit: append card feedback to this NDJSON file (default: the server log)")
    serve.add_argument("--rules", metavar="DIR", type=Path,
                       help="rulebook directory (default: the shipped one), read once at start: every worker runs "
                       "that rulebook; to use edited files, restart the service")
    serve.add_argument("--workers", type=int, default=2, metavar="N", help="evaluation processes (default 2)")
    serve.add_argument("--worker-depth", type=int, default=2, metavar="N",
                       help="jobs one worker may hold at once: the one it runs and, while every worker is busy, the "
                       "next ones queued behind it, so it never waits for the server between jobs (default 2; 1: "
                       "never queue behind a running job; at most 8). A worker that dies fails only the job it ran")
    serve.add_argument("--cache-size", type=int, default=4096, metavar="N",
                       help="memo cache entries per worker (default 4096; 0 = off)")
    serve.add_argument("--request-timeout", type=float, default=30.0, metavar="SECONDS",
                       help="an evaluation taking longer is stopped and its process replaced (default 30)")
    serve.add_argument("--max-body", type=int, default=None, metavar="BYTES",
                       help="largest request body accepted (default 8 MiB)")
    serve.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                       help="allow browser-based CDS clients from this origin (repeatable; default: none)")
    serve.add_argument("--fhir-server", action="append", default=[], metavar="URL",
                       help="allow fetching from fhirServer URLs under this prefix (repeatable; default: none, "
                       "nothing is fetched and a missing prefetch key is a 412)")
    serve.add_argument("--fhir-deadline", type=float, default=None, metavar="SECONDS",
                       help="time for all fetches from fhirServer of one request together (default 20; at most 300)")
    serve.add_argument("--fhir-private-network", action="append", default=[], metavar="CIDR",
                       help="a private network an allowed FHIR server may resolve into, e.g. 10.20.0.0/16 "
                       "(repeatable; default: none, only public addresses or an IP named in --fhir-server)")
    serve.add_argument("--not-eligible-card", action="store_true",
                       help="answer a chart without an IMT diagnosis (or of a deceased patient) with one info card "
                       "saying it was not evaluated (default: no card at all)")
    limits = serve.add_argument_group("connection limits (see the README's deployment notes)")
    limits.add_argument("--max-connections", type=int, default=None, metavar="N",
                        help="client connections open at once; at the limit a new one closes the oldest without a "
                        "request in progress (default: 1000, or what the open-file limit allows)")
    limits.add_argument("--header-timeout", type=float, default=10.0, metavar="SECONDS",
                        help="a connection must send its complete request headers within this time (default 10)")
    limits.add_argument("--body-timeout", type=float, default=30.0, metavar="SECONDS",
                        help="a request body must arrive within this time after its headers (default 30)")
    limits.add_argument("--keep-alive-timeout", type=float, default=5.0, metavar="SECONDS",
                        help="an idle kept-alive connection is closed after this time (default 5)")
    limits.add_argument("--store-timeout", type=float, default=None, metavar="SECONDS",
                        help="a feedback write or an evaluation's audit record waits at most this long for the "
                        "store's write lock, then gets a 503 (default 5)")
    serve.add_argument("--http-parser", choices=("auto", "httptools", "h11"), default="auto",
                        help="the HTTP/1.1 parser: httptools (C, the fast one; installed with the service extra) or "
                        "h11 (pure Python); auto: httptools when installed (default auto). The event loop is uvloop "
                        "when installed")
    serve.add_argument("--log-level", choices=("critical", "error", "warning", "info", "debug"), default="info",
                       help="uvicorn's log level: its start, access and error lines (default info)")
    serve.set_defaults(run=_run_serve)


def _run_serve(args: argparse.Namespace) -> int:
    from ..core.errors import EvidenceError, RulebookError
    from ..service.auth import AuthSettings, TrustedIssuer
    from ..service.config import DEFAULT_MAX_BODY_BYTES, AuditStoreUnavailableError, ServiceConfig
    from ..service.errors import ServiceConfigError

    try:
        # Every module of the service extra, though httpx (fetching from fhirServer, a JWKS URL) and PyJWT with
        # cryptography (bearer tokens) are first used by a request: a partial install is refused now, not with a 500
        # in front of a waiting clinician.
        import cryptography  # noqa: F401
        import httpx  # noqa: F401
        import jwt  # noqa: F401
        import uvicorn

        from ..service import create_app
        from ..service.connections import (
            ConnectionLimits,
            RepeatedLogFilter,
            guarded_protocol,
            install_log_filter,
            open_file_budget,
        )
    except ImportError as exc:
        print(missing_extra_message(exc.name or "?", "service"), file=sys.stderr)
        return EXIT_USAGE
    auth = None
    if args.trust:
        auth = AuthSettings(tuple(TrustedIssuer(iss, jwks) for iss, jwks in args.trust),
                            leeway_seconds=args.jwt_leeway, **_given(max_lifetime_seconds=args.jwt_max_lifetime,
                                                                     max_token_bytes=args.jwt_max_bytes))
    config = ServiceConfig(
        public_url=args.public_url or f"http://{args.host}:{args.port}",
        auth=auth,
        allow_unauthenticated=args.allow_unauthenticated,
        rules=args.rules,
        audit=args.audit,
        audit_input=not args.audit_no_input,
        feedback_log=args.feedback_log,
        workers=args.workers,
        worker_depth=args.worker_depth,
        cache_size=args.cache_size,
        request_timeout=args.request_timeout,
        max_body_bytes=args.max_body or DEFAULT_MAX_BODY_BYTES,
        cors_origins=tuple(args.cors_origin),
        not_eligible_card=args.not_eligible_card,
        fhir_servers=tuple(args.fhir_server),
        fhir_private_networks=tuple(args.fhir_private_network),
        **_given(fhir_deadline=args.fhir_deadline, store_timeout=args.store_timeout),
    )
    limits = ConnectionLimits(max_connections=args.max_connections, header_timeout=args.header_timeout,
                              body_timeout=args.body_timeout, keep_alive_timeout=args.keep_alive_timeout)
    try:
        limits.check()
        max_connections = open_file_budget(limits, args.workers)
        protocol = guarded_protocol(limits, max_connections, args.http_parser)
        app = create_app(config)
    except AuditStoreUnavailableError as exc:
        extra = missing_extra(exc)
        if extra is not None:  # no PostgreSQL driver: nothing to do with where the server starts (exit 2, as usage)
            print(missing_extra_message(*extra), file=sys.stderr)
            return EXIT_USAGE
        print(f"imt-cds: error [{exc.code}]: {exc}", file=sys.stderr)
        return EXIT_CANNOT_START
    except (ServiceConfigError, RulebookError, EvidenceError) as exc:
        print(f"imt-cds: error [{exc.code}]: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        listener = _listen(args.host, args.port)
    except OSError as exc:
        print(f"imt-cds: error [cds_cannot_listen]: cannot listen on {args.host} port {args.port}: "
              f"{exc.strerror or exc}", file=sys.stderr)
        return EXIT_CANNOT_START
    server_config = uvicorn.Config(app, log_level=args.log_level, server_header=False, proxy_headers=False,
                                   http=protocol, loop="auto",
                                   # (uvicorn types it int; it is a delay given to the event loop, and a
                                   # fraction of a second is what --keep-alive-timeout may ask for; the
                                   # ignore is allowed to be unused, for a uvicorn that types it float)
                                   timeout_keep_alive=limits.keep_alive_timeout,  # type: ignore[arg-type,unused-ignore]
                                   ws="none", lifespan="on")
    server = uvicorn.Server(server_config)

    def stop(number: int, frame: object) -> None:
        # What uvicorn's own handler does, and all ours does: the server shuts down once it has started (or at once,
        # when it is already serving), finishing the requests in progress and their audit records.
        server.should_exit = True

    # uvicorn shuts down on SIGINT or SIGTERM, then raises the same signal again with the handlers it found in place,
    # so that the process would end as killed by it (status 130 or 143); ours take it as what it is, a clean shutdown:
    # status 0, as --help says. They are in place before the start line is printed, and they only ask the server to
    # stop: a signal any time after that line, even before uvicorn has set its own handlers, ends in uvicorn's
    # shutdown (not in an exception thrown into the middle of its start, which would leave its coroutine unrun).
    previous = {number: signal.signal(number, stop) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        with listener:
            if auth is None:
                print(UNAUTHENTICATED_WARNING, file=sys.stderr)
            warning = public_url_warning(args.host, args.public_url, config.public_url)
            if warning is not None:
                print(warning, file=sys.stderr)
            print(f"imt-cds: CDS Hooks discovery at {config.public_url}/cds-services "
                  f"({'JWT from ' + ', '.join(i.iss for i in auth.issuers) if auth else 'NO authentication'}; "
                  f"{config.workers} evaluation worker(s); at most {max_connections} connections)", file=sys.stderr)
            # uvicorn.Config set up its log handlers; the root handler carries the service's own loggers and
            # asyncio's ("socket.accept() out of system resource").
            root_handler = logging.StreamHandler(sys.stderr)
            root_handler.setFormatter(logging.Formatter("%(levelname)s:     %(name)s: %(message)s"))
            logging.getLogger().addHandler(root_handler)
            install_log_filter(RepeatedLogFilter(exempt=("imt_cds.service.feedback",)), ("uvicorn", "uvicorn.error"))
            _tune_collector()
            server.run(sockets=[listener])
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    return EXIT_OK


def public_url_warning(host: str, public_url: str | None, used: str) -> str | None:
    """The warning for a server reachable from elsewhere whose base URL was left to the default: http://HOST:PORT
    (http://0.0.0.0:8080 for every interface) is then the discovery base, the ``aud`` every token must carry and
    the root of every card link, and an EHR calling another URL gets 401s and dead links. None on loopback (a
    proxy in front, or a test: the default is right there) or with --public-url."""
    if public_url is not None or _is_loopback(host):
        return None
    return PUBLIC_URL_WARNING.format(host=host, url=used)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve anywhere
        return False


# Container allocations between two young-generation collections (Python's default: 700). A hook call parses a
# ~10 KB chart into about a thousand dicts and lists that live until its answer, all freed by reference counting;
# at the default, each call triggered two or three collections that walked the calls in flight, and their survivors
# fed full collections.
GC_YOUNG_THRESHOLD = 10_000


def _tune_collector() -> None:
    """Cyclic garbage collection for a process that serves until it stops (``serve`` owns its process; the library
    leaves an embedding process's collector alone). Measured on two cores, 16 clients: the collector took about a
    seventh of the server process's CPU, and a full collection, walking every object of the app, paused the event
    loop for up to 60 ms, which set the p99 latency. What exists now (modules, the app, the rulebook) lives as long as
    the process: frozen, out of the collector's sight; and young collections come less often."""
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


def _given(**settings: Any) -> dict[str, Any]:
    """The options given on the command line; the others keep the defaults of the settings' own classes (one place
    for each default)."""
    return {name: value for name, value in settings.items() if value is not None}


def _listen(host: str, port: int) -> socket.socket:
    """A socket bound to (host, port), before anything starts: an address in use is one line, not a traceback."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                        flags=socket.AI_PASSIVE)[0]
    listener = socket.socket(family, kind, proto)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: restart over TIME_WAIT
        if family == socket.AF_INET6:
            listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        listener.bind(address)
    except OSError:
        listener.close()
        raise
    return listener
