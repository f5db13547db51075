"""The CDS Hooks 2.0.1 service: point an EHR at imt-cds without glue code (``imt-cds serve``).

Typical use (what ``imt-cds serve`` does)::

    import uvicorn
    from imt_cds.service import ServiceConfig, AuthSettings, TrustedIssuer, create_app

    config = ServiceConfig(public_url="https://cds.example.org",
                           auth=AuthSettings((TrustedIssuer("https://ehr.example.org", "ehr-jwks.json"),)))
    uvicorn.run(create_app(config), host="0.0.0.0", port=8080)

Modules: ``app`` (HTTP routes), ``hooks`` (the two services), ``prefetch`` (FHIR data from prefetch or fhirServer),
``workers`` (the supervised evaluation processes), ``cards`` and ``order_sign`` (renderers), ``drugs`` (the
targeted-drug table), ``auth`` (bearer JWTs), ``feedback``, ``config``, ``errors``. This package is an adapter: it
never decides anything clinical, and the server process never runs the rules engine (workers do). Importing it has
no side effects; FastAPI, uvicorn, httpx and PyJWT are needed only to build and run the app
(``pip install 'imt-cds[service]'``).
"""

from typing import Any

from .auth import AuthSettings, TrustedIssuer
from .config import ServiceConfig
from .errors import ServiceConfigError, ServiceError

__all__ = ["AuthSettings", "ServiceConfig", "ServiceConfigError", "ServiceError", "TrustedIssuer", "create_app"]


def create_app(config: ServiceConfig) -> Any:
    """The FastAPI application for ``config`` (see ``imt_cds.service.app``)."""
    from .app import create_app as build

    return build(config)
