"""Real servers for the CDS Hooks service tests: the service itself, a FHIR server, and JWTs signed here.

- ``running_service(*args)`` starts ``imt-cds serve`` through the installed console script on a free loopback
  port (a real uvicorn server with its real worker processes), waits until it answers, and stops it afterwards
  (checking that its worker processes went away with it).
- ``FhirServer`` is a small FHIR REST server on loopback (Python's ``http.server`` in a thread): reads
  (``Patient/ID``), searches by ``patient`` and ``code`` tokens with paging (``next`` links), and any extra JSON
  documents (a JWK Set). It records every request with its headers, so a test can see what the service sent.
- ``Signer`` makes key pairs and bearer JWTs (ES384, RS384, and the forbidden kinds: HS384, ``none``).

Nothing here stands in for code under test: the service, the FHIR client and the JWT checks are the real ones.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT / "tests" / "fixtures" / "cds-hooks"  # copies of the published examples (see its README)
EXAMPLE_BUNDLE = ROOT / "examples" / "fhir" / "alk-lung-distant-bundle.json"
EXAMPLE_PATIENT = "imt-example-1"
SCRIPT = Path(sys.executable).with_name("imt-cds")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# --- the service --------------------------------------------------------------------------------------------------


@dataclass
class Service:
    url: str  # the base URL it listens on
    process: subprocess.Popen[bytes]
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children, their children...), read from /proc."""
    found: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                children = (task / "children").read_text().split()
            except OSError:
                continue
            for child in map(int, children):
                if child not in found:
                    found.append(child)
                    todo.append(child)
    return found


def worker_pids(service: Service) -> list[int]:
    """The service's evaluation worker processes (they name themselves imt-cds-worker), found from outside."""
    return worker_pids_below(service.process.pid)


def worker_pids_below(ancestor: int) -> list[int]:
    """The imt-cds-worker processes below ``ancestor`` that have not ended (a zombie, killed and not yet reaped, has
    ended)."""
    pids = []
    for pid in descendants(ancestor):
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() == "imt-cds-worker":
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
                if state != "Z":
                    pids.append(pid)
        except OSError:
            continue
    return sorted(pids)


@contextmanager
def running_service(*args: str, public_url: str | None = None, ready_timeout: float = 90.0) -> Iterator[Service]:
    port = free_port()
    log_dir = Path(tempfile.mkdtemp(prefix="imt-cds-serve-"))
    log = log_dir / "serve.log"
    command = [str(SCRIPT), "serve", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", *args]
    if public_url is not None:
        command += ["--public-url", public_url]
    with log.open("wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, cwd=log_dir)
    service = Service(f"http://127.0.0.1:{port}", process, log)
    try:
        deadline = time.monotonic() + ready_timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"imt-cds serve exited with {process.returncode}:\n{service.log_text()}")
            try:
                if httpx.get(service.url + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"imt-cds serve did not answer within {ready_timeout} s:\n{service.log_text()}")
            time.sleep(0.2)
        yield service
    finally:
        workers = descendants(process.pid)
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        deadline = time.monotonic() + 10  # the fork server and resource tracker follow their parent out
        while any(process_alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        leftover = [pid for pid in workers if process_alive(pid)]
        for pid in leftover:  # only ever the service's own processes, by pid
            os.kill(pid, signal.SIGKILL)
        log_text = service.log_text()
        shutil.rmtree(log_dir, ignore_errors=True)
        assert not leftover, f"processes {leftover} outlived the service:\n{log_text}"


def responses_in(stream: bytes) -> list[bytes]:
    """The HTTP responses (head and Content-Length body each) of everything a server sent on one connection."""
    responses = []
    while stream:
        head, rest = stream.split(b"\r\n\r\n", 1)
        length = re.search(rb"(?im)^content-length: *([0-9]+)", head)
        assert length is not None, f"a response without Content-Length: {head!r}"
        responses.append(head + b"\r\n\r\n" + rest[:int(length[1])])
        stream = rest[int(length[1]):]
    return responses


def process_alive(pid: int) -> bool:
    """Whether a process runs (not ended, nor a zombie waiting for its parent to read how it ended)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


# --- FHIR data ----------------------------------------------------------------------------------------------------


def example_resources(patient_id: str = EXAMPLE_PATIENT) -> list[dict[str, Any]]:
    """The example bundle's resources, re-keyed to another patient id when asked."""
    bundle = json.loads(EXAMPLE_BUNDLE.read_text())
    resources = [copy.deepcopy(entry["resource"]) for entry in bundle["entry"]]
    if patient_id != EXAMPLE_PATIENT:
        text = json.dumps(resources).replace(f"Patient/{EXAMPLE_PATIENT}", f"Patient/{patient_id}")
        resources = json.loads(text)
        for resource in resources:
            if resource["resourceType"] == "Patient":
                resource["id"] = patient_id
    return resources


def searchset(resources: list[dict[str, Any]]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "searchset", "total": len(resources),
            "entry": [{"fullUrl": f"urn:test:{r['resourceType']}/{r.get('id')}", "resource": r,
                       "search": {"mode": "match"}} for r in resources]}


def prefetch_for(resources: list[dict[str, Any]]) -> dict[str, Any]:
    """What a CDS client would prefetch for imt-patient-view's templates, from a patient's resources."""
    patient = next((r for r in resources if r["resourceType"] == "Patient"), None)
    return {
        "patient": patient,
        "conditions": searchset([r for r in resources if r["resourceType"] == "Condition"]),
        "observations": searchset([r for r in resources if r["resourceType"] == "Observation"]),
        "procedures": searchset([r for r in resources if r["resourceType"] == "Procedure"]),
    }


def hook_request(hook: str, patient_id: str = EXAMPLE_PATIENT, *, prefetch: Mapping[str, Any] | None = None,
                 **extra: Any) -> dict[str, Any]:
    request: dict[str, Any] = {"hook": hook, "hookInstance": str(uuid.uuid4()),
                               "context": {"userId": "Practitioner/example", "patientId": patient_id}}
    if prefetch is not None:
        request["prefetch"] = dict(prefetch)
    request.update(extra)
    return request


@dataclass
class FhirServer:
    """A FHIR REST server on loopback serving ``resources`` (and ``documents`` at fixed paths)."""

    resources: list[dict[str, Any]]
    page_size: int = 100
    documents: dict[str, Any] = field(default_factory=dict)  # path -> JSON answered as is (e.g. a JWK Set)
    status_override: dict[str, int] = field(default_factory=dict)  # resource type -> HTTP status to answer
    next_link_base: str | None = None  # answer "next" links under this base instead (to test where they point)
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # http.server's naming
                server.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
                status, body = server.answer(self.path)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/fhir+json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.origin = f"http://127.0.0.1:{self._http.server_address[1]}"
        self.base = self.origin + "/fhir"
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True)

    def __enter__(self) -> FhirServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.shutdown()
        self._http.server_close()

    def answer(self, raw: str) -> tuple[int, Any]:
        parts = urlsplit(raw)
        if parts.path in self.documents:
            return 200, self.documents[parts.path]
        if not parts.path.startswith("/fhir/"):
            return 404, _outcome("not found")
        kind, _, resource_id = parts.path[len("/fhir/"):].partition("/")
        if kind in self.status_override:
            return self.status_override[kind], _outcome("refused")
        if resource_id:
            for resource in self.resources:
                if resource["resourceType"] == kind and resource.get("id") == resource_id:
                    return 200, resource
            return 404, _outcome(f"{kind}/{resource_id} not found")
        query = parse_qs(parts.query)
        patient = query.get("patient", [None])[0]
        found = [r for r in self.resources if r["resourceType"] == kind and _about(r, patient)]
        if "code" in query:
            tokens = [t for value in query["code"] for t in value.split(",")]
            found = [r for r in found if any(_matches(r, t) for t in tokens)]
        page = int(query.get("_page", ["1"])[0])
        chunk = found[(page - 1) * self.page_size: page * self.page_size]
        bundle = searchset(chunk)
        bundle["total"] = len(found)
        if page * self.page_size < len(found):
            base = self.next_link_base or self.base
            bundle["link"] = [{"relation": "next", "url": f"{base}/{kind}?{parts.query.split('&_page=')[0]}"
                               f"&_page={page + 1}"}]
        return 200, bundle


def _outcome(text: str) -> dict[str, Any]:
    return {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "processing",
                                                           "diagnostics": text}]}


def _about(resource: Mapping[str, Any], patient: str | None) -> bool:
    if patient is None:
        return True
    subject = resource.get("subject") or resource.get("patient") or {}
    return subject.get("reference") in (f"Patient/{patient}", patient)


def _matches(resource: Mapping[str, Any], token: str) -> bool:
    system, bar, code = token.rpartition("|")
    for coding in (resource.get("code") or {}).get("coding") or []:
        if bar and coding.get("system") != system:
            continue
        if not code or coding.get("code") == code:
            return True
    return False


# --- JWTs ---------------------------------------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class Signer:
    """An issuer's key pair and the JWTs it signs."""

    iss: str
    kid: str = "test-kid"
    algorithm: str = "ES384"

    def __post_init__(self) -> None:
        if self.algorithm == "ES384":
            self.key: Any = ec.generate_private_key(ec.SECP384R1())
            public = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(self.key.public_key()))
        else:
            self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        public.update(kid=self.kid, use="sig", alg=self.algorithm)
        self.jwks = {"keys": [public]}

    def write_jwks(self, directory: Path) -> Path:
        path = directory / f"jwks-{uuid.uuid4().hex[:8]}.json"
        path.write_text(json.dumps(self.jwks))
        return path

    def claims(self, aud: str | list[str], **changes: Any) -> dict[str, Any]:
        now = int(time.time())
        claims = {"iss": self.iss, "aud": aud, "exp": now + 300, "iat": now, "jti": str(uuid.uuid4()),
                  "tenant": "test-tenant"}
        claims.update(changes)
        return {k: v for k, v in claims.items() if v is not None}

    def token(self, aud: str | list[str], *, headers: Mapping[str, Any] | None = None, **changes: Any) -> str:
        header = {"kid": self.kid, "typ": "JWT", **(headers or {})}
        return jwt.encode(self.claims(aud, **changes), self.key, algorithm=self.algorithm, headers=header)

    def public_pem(self) -> bytes:
        return self.key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo)


def unsigned_token(claims: Mapping[str, Any], kid: str = "test-kid") -> str:
    """A JWT with ``alg: none`` (no signature), as an attacker would send it."""
    header = {"alg": "none", "typ": "JWT", "kid": kid}
    return f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(dict(claims)).encode())}."


def hmac_token(claims: Mapping[str, Any], secret: bytes, kid: str = "test-kid") -> str:
    """An HS384 JWT (a shared-secret signature, forbidden by CDS Hooks), e.g. with the issuer's public key as the
    secret: the classic algorithm-confusion forgery."""
    header = {"alg": "HS384", "typ": "JWT", "kid": kid}
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(dict(claims)).encode())}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha384).digest()
    return f"{signing_input}.{_b64(signature)}"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
