"""Reading a request body as JSON the way the library reads patient facts: strictly.

A JSON object with the same key twice (``{"fhirServer": "https://a", "fhirServer": "https://b"}``) means different
things to different parsers (first wins, last wins), so a proxy or an audit reader may see another request than the
service; such a body is refused (400 naming the key), as ``imt_cds.validation`` refuses it for patient facts. So
are NaN and Infinity, which are not JSON. ``loads_strict`` gives the stdlib parser's answer (orjson where that is
known to be the same, the stdlib with a hook per object otherwise), so every refusal keeps the stdlib's wording.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from ..core.validation import DuplicateKeyError, loads_strict
from .errors import BadRequestError

__all__ = ["parse_request_json"]


def parse_request_json(body: bytes) -> Any:
    """The parsed body, or ``BadRequestError`` (malformed JSON, not UTF-8, a duplicate key, NaN/Infinity)."""
    try:
        return loads_strict(body)
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
