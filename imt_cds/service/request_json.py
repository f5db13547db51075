"""Reading a request body as JSON the way the library reads patient facts: strictly.

A JSON object with the same key twice (``{"fhirServer": "https://a", "fhirServer": "https://b"}``) means different
things to different parsers (first wins, last wins), so a proxy or an audit reader may see another request than the
service; such a body is refused (400 naming the key), as ``imt_cds.validation`` refuses it for patient facts. So
are NaN and Infinity, which are not JSON. ``loads_strict`` gives the stdlib parser's answer (orjson where that is
known to be the same, the stdlib with a hook per object otherwise), so every refusal keeps the stdlib's wording.
A body with text holding a lone surrogate (a ``\\ud800`` escape with no partner; the raw bytes of one are not UTF-8,
refused as such) is refused too, each such text named by its path: it is not Unicode text, and no FHIR reader, store
or JSON writer downstream can take it (unrefused, one in a resource's id made the worker's answer unwritable: a 500).

Before any of that, a body must be declared as JSON (``check_json_content_type``): a web page on any site can make a
browser send a ``text/plain`` body, a form or an unlabelled body cross-origin without a CORS preflight, never an
``application/json`` one; refusing the others (415) keeps such pages from starting evaluations or recording feedback.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from ..core.validation import DuplicateKeyError, loads_strict, may_hold_lone_surrogates
from .errors import BadRequestError, UnsupportedContentCodingError, UnsupportedMediaTypeError
from .models import lone_surrogate_problems, refuse

__all__ = ["check_json_content_type", "parse_request_json"]

_SHOWN_CHARACTERS = 80  # of a Content-Type a refusal repeats


def check_json_content_type(content_type: str | None, content_encoding: str | None = None) -> None:
    """Refuse (``UnsupportedMediaTypeError``, 415) a request body not declared as JSON: ``content_type`` (the
    request's first Content-Type header, or None) must be ``application/json`` or another ``application/...+json``
    type, in any case, with any parameters (JSON has no charset parameter; the body must be UTF-8 whatever it
    says). ``content_encoding`` (the request's Content-Encoding headers, joined with commas, or None) may only say
    ``identity``: a compressed body would otherwise be read as if it were not (RFC 9110 section 8.4: 415)."""
    if content_encoding is not None:
        codings = [c.strip() for c in content_encoding.split(",") if c.strip()]
        if any(c.lower() != "identity" for c in codings):
            shown = ", ".join(codings)
            shown = shown if len(shown) <= _SHOWN_CHARACTERS else shown[:_SHOWN_CHARACTERS] + "..."
            raise UnsupportedContentCodingError(f"the request body is encoded ({shown!r}, Content-Encoding); this "
                                                "service reads unencoded JSON only: send it without Content-Encoding")
    if content_type is None:
        raise UnsupportedMediaTypeError("the request has no Content-Type header; a CDS Hooks request body is JSON: "
                                        "send Content-Type: application/json")
    media_type = content_type.split(";", 1)[0].strip().lower()
    kind, slash, subtype = media_type.partition("/")
    if kind == "application" and slash and (subtype == "json" or (subtype.endswith("+json") and len(subtype) > 5)):
        return
    shown = content_type if len(content_type) <= _SHOWN_CHARACTERS else content_type[:_SHOWN_CHARACTERS] + "..."
    raise UnsupportedMediaTypeError(f"the request body is declared as {shown!r} (Content-Type); this service reads "
                                    "JSON only: send Content-Type: application/json")


def parse_request_json(body: bytes) -> Any:
    """The parsed body, or ``BadRequestError`` (malformed JSON, not UTF-8, a duplicate key, NaN/Infinity, a lone
    surrogate)."""
    # JSON between systems is UTF-8 (RFC 8259 section 8.1). The stdlib parser would also read UTF-16 and UTF-32,
    # whose escapes the lone-surrogate check below (bytes of UTF-8) cannot see: such a body is refused first.
    encoding = json.detect_encoding(body)
    if encoding not in ("utf-8", "utf-8-sig"):
        raise BadRequestError(f"the request body is not UTF-8 (it reads as {encoding.upper()}); a CDS Hooks body is "
                              "JSON, and JSON between systems is UTF-8 (RFC 8259)")
    try:
        value = loads_strict(body)
    except DuplicateKeyError as exc:
        shown = exc.key if len(exc.key) <= 80 else exc.key[:80] + "..."
        raise BadRequestError(f"the request body has the key {shown!r} twice in one JSON object") from None
    except json.JSONDecodeError as exc:
        raise BadRequestError(f"the request body is not valid JSON ({exc.msg} at line {exc.lineno} column "
                              f"{exc.colno})") from None
    except (ValueError, RecursionError) as exc:  # not UTF-8, NaN/Infinity, nested too deeply, a huge integer
        text = str(exc)
        if isinstance(exc, RecursionError):
            reason = "nested too deeply"
        elif "integer string conversion" in text:  # Python's own words advise a call of the server's code
            reason = f"a number has more than {sys.get_int_max_str_digits()} digits"
        else:
            reason = text.split("\n")[0][:120]
        raise BadRequestError(f"the request body is not valid JSON ({reason})") from None
    if may_hold_lone_surrogates(body):  # (most bodies are never walked)
        problems = lone_surrogate_problems(value)
        if problems:
            raise refuse(problems)
    return value
