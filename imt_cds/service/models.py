"""What a CDS Hooks 2.0.1 request and a feedback body may hold, as pydantic models, and the 400 that names every
field path that is wrong.

The models check shape and types only (strictly: ``"1"`` is not a number, ``1`` is not text); they never coerce,
and the service goes on with the body as sent (a stored feedback item is the client's object, byte for byte in
meaning). Each field's ``description`` says what is allowed: it is the second half of every message, so a refusal
reads ``context.patientId is required by the patient-view hook: non-empty text (the FHIR id ...)`` or
``feedback[0].outcome must be "accepted" or "overridden", not 'maybe'``; the 400's ``details.problems`` lists each
``{"path", "message"}``. Whether a ``fhirServer`` may be called and
whether ``fhirAuthorization`` is usable for it is decided later, where the data is fetched (``prefetch.py``).
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, Literal, TypeGuard

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..core.validation import LONE_SURROGATE, lone_surrogates, walk_json
from .errors import BadRequestError

__all__ = [
    "CONTEXTS",
    "MAX_ACCEPTED_SUGGESTIONS",
    "MAX_DRAFT_ORDERS",
    "MAX_FEEDBACK_ITEMS",
    "MAX_FHIR_SERVER_CHARS",
    "MAX_LISTED_PROBLEMS",
    "FeedbackBody",
    "HookRequest",
    "OrderSignContext",
    "PatientViewContext",
    "feedback_problems",
    "lone_surrogate_problems",
    "refuse",
    "request_problems",
    "shown_value",
]

_Text = Annotated[str, Field(min_length=1)]
# Bounds on what one call may make the service check, store and answer. A CDS client sends feedback about the cards of
# one hook answer (a handful) and signs a handful of orders at once; the bounds are far above that and far below what
# would make one call hold the event loop or the store for seconds, or answer megabytes of problems.
MAX_FEEDBACK_ITEMS = 500
MAX_ACCEPTED_SUGGESTIONS = 100  # per feedback item: a card has a few suggestions
MAX_DRAFT_ORDERS = 200  # entries of context.draftOrders
# A FHIR base URL is a few dozen characters; the URLs fetched under it add the prefetch queries (about 1 KB).
MAX_FHIR_SERVER_CHARS = 4096
# A 400 lists at most this many problems (in its message and in details.problems), then says how many more there are.
MAX_LISTED_PROBLEMS = 20


class _Model(BaseModel):
    # Other fields are allowed (CDS Hooks lets clients add their own); given ones must have the right type.
    model_config = ConfigDict(strict=True, extra="allow")


class FhirAuthorization(_Model):
    access_token: _Text = Field(description="non-empty text (the OAuth 2.0 access token for fhirServer)")
    token_type: str | None = Field(None, description='text ("Bearer")')
    expires_in: int | None = Field(None, description="a whole number of seconds")
    scope: str | None = Field(None, description="text (the granted OAuth scopes)")
    subject: str | None = Field(None, description="text (the OAuth client id of this service)")
    patient: str | None = Field(None, description="text (the FHIR id of the patient in context)")


class HookRequest(_Model):
    """The envelope of every hook call: the same for every hook; ``context`` is checked per hook (``CONTEXTS``)."""

    hook: _Text = Field(description="non-empty text (a CDS Hooks request has hook, hookInstance and context)")
    hookInstance: _Text = Field(description="non-empty text (a CDS Hooks request has hook, hookInstance and "
                                                        "context)")
    context: dict[str, Any] = Field(description="an object (what the hook's context holds)")
    fhirServer: Annotated[str, Field(max_length=MAX_FHIR_SERVER_CHARS)] | None = Field(
        None, description=f"a URL of at most {MAX_FHIR_SERVER_CHARS} characters (the base URL of the client's FHIR "
                          "server)")
    fhirAuthorization: FhirAuthorization | None = Field(
        None, description="an object with an access_token (CDS Hooks 2.0.1 FHIR resource access)")
    prefetch: dict[str, Any] | None = Field(None, description="an object (prefetch key -> FHIR resource or null)")
    extension: dict[str, Any] | None = Field(None, description="an object (extension URL -> value)")


class PatientViewContext(_Model):
    patientId: _Text = Field(description="non-empty text (the FHIR id of the patient whose chart is open)")
    userId: str | None = Field(None, description="text (a FHIR reference to the user)")
    encounterId: str | None = Field(None, description="text (the FHIR id of the encounter)")


class DraftOrders(_Model):
    resourceType: Literal["Bundle"] = Field(description='"Bundle" (draftOrders is a FHIR Bundle)')
    entry: Annotated[list[Any], Field(max_length=MAX_DRAFT_ORDERS)] | None = Field(
        None, description=f"a list of at most {MAX_DRAFT_ORDERS} entries (the draft orders of one call)")


class OrderSignContext(_Model):
    patientId: _Text = Field(description="non-empty text (the FHIR id of the patient the orders are for)")
    draftOrders: DraftOrders = Field(description="a FHIR Bundle (of the orders to sign)")
    userId: str | None = Field(None, description="text (a FHIR reference to the user)")
    encounterId: str | None = Field(None, description="text (the FHIR id of the encounter)")


CONTEXTS: Mapping[str, type[_Model]] = types.MappingProxyType({
    "patient-view": PatientViewContext,
    "order-sign": OrderSignContext,
})


class Coding(_Model):
    code: str = Field(description="text (a Coding has a code and a system)")
    system: str = Field(description="text (a Coding has a code and a system)")
    display: str | None = Field(None, description="text")


class OverrideReason(_Model):
    reason: Coding | None = Field(None, description="a Coding with code and system (one of the card's "
                                                    "overrideReasons)")
    userComment: str | None = Field(None, description="text")


class AcceptedSuggestion(_Model):
    id: str = Field(description="text (the id of a suggestion of the card)")


_RFC3339_DATE_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?"
                                r"([Zz]|[+-][0-9]{2}:[0-9]{2})")


class FeedbackItem(_Model):
    card: _Text = Field(description="the card's uuid, non-empty text")
    outcome: Literal["accepted", "overridden"] = Field(description='"accepted" or "overridden"')
    outcomeTimestamp: str = Field(description="an RFC 3339 date-time, UTC")
    acceptedSuggestions: Annotated[list[AcceptedSuggestion], Field(max_length=MAX_ACCEPTED_SUGGESTIONS)] | None = Field(
        None, description=f'a list of at most {MAX_ACCEPTED_SUGGESTIONS} {{"id": ...}}')
    overrideReason: OverrideReason | None = Field(None, description="an object")

    @field_validator("outcomeTimestamp")
    @classmethod
    def _rfc3339(cls, value: str) -> str:
        # RFC 3339's date-time: a date, a time to the second and its offset (CDS Hooks asks for UTC: "Z"). Python's
        # own reader alone took a date, a time without an offset (an instant no one can place) and other ISO 8601
        # forms; it still checks the numbers (a 13th month).
        try:
            if _RFC3339_DATE_TIME.fullmatch(value) is None:
                raise ValueError
            datetime.fromisoformat(value.upper())
        except ValueError:
            raise ValueError(f"{shown_value(value)} is not an RFC 3339 date-time with its offset, e.g. "
                             "2026-01-02T03:04:05Z") from None
        return value


class FeedbackBody(_Model):
    feedback: list[FeedbackItem] = Field(min_length=1, description="a list of at least one feedback item (the "
                                                                   'body is {"feedback": [...]})')


# --- turning pydantic's errors into one-line, path-level messages -----------------------------------------------------


def request_problems(body: Any, service_hook: str, service_id: str) -> list[dict[str, str]]:
    """Every problem of a hook request for a service answering ``service_hook``: ``[{"path", "message"}]``."""
    if not isinstance(body, Mapping):
        return [{"path": "", "message": "the request body must be a JSON object (a CDS Hooks request)"}]
    body = body if type(body) is dict else dict(body)  # (the models are strict: any other mapping is "not an object")
    hook = body.get("hook")
    if isinstance(hook, str) and hook and hook != service_hook:  # the rest is judged by the hook's own rules
        return [{"path": "hook", "message": f"service {service_id} answers the {service_hook} hook, not {hook!r}"}]
    if service_hook == "patient-view" and _plainly_valid_patient_view(body):
        return []
    problems = _problems(HookRequest, body)
    context = body.get("context")
    if isinstance(context, Mapping):
        problems += _problems(CONTEXTS[service_hook], context, prefix=("context",), required_by=service_hook)
    return (_keys_not_text(body) or problems) if problems else problems


# The fields a patient-view request is checked for without pydantic, when they hold what the models allow in the
# plainest way (see _plainly_valid_patient_view).
_REQUEST_FIELDS = frozenset(HookRequest.model_fields)
_OPTIONAL_OBJECTS = ("prefetch", "extension")
_PATIENT_VIEW_FIELDS = frozenset(PatientViewContext.model_fields)
_AUTHORIZATION_FIELDS = frozenset(FhirAuthorization.model_fields)


def _plainly_valid_patient_view(body: Mapping[str, Any]) -> bool:
    """True only for a request the models certainly accept (``HookRequest`` and ``PatientViewContext``): plain
    dicts and ASCII text, no field but the models' own; the check of the service's every request, ~20x cheaper than
    validating the models. False says nothing: the models then judge, and word every refusal."""
    if type(body) is not dict or not _REQUEST_FIELDS.issuperset(body):
        return False
    if not (_text(body.get("hook")) and _text(body.get("hookInstance")) and _optional_text(body.get("fhirServer"))):
        return False
    if len(body.get("fhirServer") or "") > MAX_FHIR_SERVER_CHARS:
        return False
    for name in _OPTIONAL_OBJECTS:
        value = body.get(name)
        if value is not None and not _object(value):
            return False
    authorization = body.get("fhirAuthorization")
    if authorization is not None and not (
            _object(authorization) and _AUTHORIZATION_FIELDS.issuperset(authorization)
            and _text(authorization.get("access_token")) and _optional_text(authorization.get("token_type"))
            and _optional_text(authorization.get("scope")) and _optional_text(authorization.get("subject"))
            and _optional_text(authorization.get("patient"))
            and type(authorization.get("expires_in")) in (int, type(None))):
        return False
    context = body.get("context")
    return (_object(context) and _PATIENT_VIEW_FIELDS.issuperset(context) and _text(context.get("patientId"))
            and _optional_text(context.get("userId")) and _optional_text(context.get("encounterId")))


def _text(value: Any) -> bool:
    """Non-empty ASCII text (pydantic refuses some other text: lone surrogates)."""
    return type(value) is str and value != "" and value.isascii()


def _optional_text(value: Any) -> bool:
    return value is None or (type(value) is str and value.isascii())


def _object(value: Any) -> TypeGuard[dict[str, Any]]:
    return type(value) is dict and all(type(key) is str and key.isascii() for key in value)


def feedback_problems(body: Any) -> list[dict[str, str]]:
    """Every problem of a feedback body (CDS Hooks 2.0.1): ``[{"path", "message"}]``."""
    if not isinstance(body, Mapping):
        return [{"path": "", "message": 'feedback must be an object {"feedback": [...]} with at least one item'}]
    body = body if type(body) is dict else dict(body)
    items = body.get("feedback")
    if isinstance(items, list) and len(items) > MAX_FEEDBACK_ITEMS:
        # Refused before any item is checked: checking (and answering about) every item of a huge list is the cost
        # this bound is there to avoid.
        return [{"path": "feedback", "message": f"feedback holds {len(items)} items; at most {MAX_FEEDBACK_ITEMS} "
                                                "are accepted in one call (send the rest in further calls)"}]
    # Every item is stored as sent, fields of the client's own included, and a lone surrogate cannot be written as
    # UTF-8 (to the database or the feedback log): each is refused here, by its path, wherever it is. pydantic finds
    # those of the typed fields too, in vaguer words: pydantic's are left out.
    unwritable = lone_surrogate_problems(items, ("feedback",)) if isinstance(items, list) else []
    # A key that is not text, which only a Python caller's dict can hold, cannot be stored as JSON either: looked for
    # wherever it is, in the client's own fields too.
    return _keys_not_text(body) or unwritable + _problems(FeedbackBody, body, skip_kinds=_UNICODE_ERRORS)


def _keys_not_text(data: Any) -> list[dict[str, str]]:
    """A problem for each key in ``data`` that is not text. JSON keys always are, so only a Python caller's dict can
    hold one; pydantic's words for it are paths like "prefetch[1].[key]", so where there is one it alone is said.
    (In a hook request, looked for only when the models refused something: a body parsed from JSON never needs the
    walk.)"""
    problems = [{"path": _path(loc), "message": f"{_path(loc) or 'the request body'} has a key {shown_value(key)} "
                                                 "that is not text (JSON keys are text)"}
                for loc, key, is_key in walk_json(data, _is_not_text) if is_key]
    return sorted(problems, key=lambda problem: problem["path"])


def _is_not_text(key: Any) -> bool:
    return not isinstance(key, str)


def refuse(problems: list[dict[str, str]]) -> BadRequestError:
    """The 400 for ``problems``: the messages on one line, and each path in ``details``; at most
    ``MAX_LISTED_PROBLEMS`` of them, then how many more there are (so the answer stays small whatever was sent)."""
    listed = problems[:MAX_LISTED_PROBLEMS]
    more = len(problems) - len(listed)
    if more:
        listed = [*listed, {"path": "", "message": f"... and {more} more problems (only the first "
                                                   f"{MAX_LISTED_PROBLEMS} are listed)"}]
    return BadRequestError("; ".join(p["message"] for p in listed), {"problems": listed})


_UNICODE_ERRORS = frozenset({"string_unicode"})  # pydantic's error for text holding a lone surrogate


def _problems(model: type[BaseModel], data: Any, prefix: tuple[str | int, ...] = (),
              required_by: str | None = None, skip_kinds: frozenset[str] = frozenset()) -> list[dict[str, str]]:
    try:
        model.model_validate(data)
    except ValidationError as exc:
        return [_problem(model, prefix, error, required_by, data) for error in exc.errors(include_url=False)
                if error["type"] not in skip_kinds]
    return []


def _problem(model: type[BaseModel], prefix: tuple[str | int, ...], error: Any,
             required_by: str | None, data: Any) -> dict[str, str]:
    loc = tuple(error["loc"])
    path = _path(prefix + loc)
    allowed = _description(model, loc)
    kind = error["type"]
    if kind == "string_unicode" and _is_object_at(data, loc):
        # A key of an object (pydantic reports it at the object, and checks nothing else of that object).
        message = f"{path or 'the request body'} has a key {shown_value(error['input'])} that is {LONE_SURROGATE}"
    elif kind == "missing":
        by = f" by the {required_by} hook" if required_by else ""
        message = f"{path} is required{by}" + (f": {allowed}" if allowed else "")
    elif kind == "value_error":  # a validator's own sentence, e.g. "... is not an RFC 3339 date-time"
        message = f"{path} {str(error['ctx']['error'])}"
    elif kind == "too_long":  # a list over its bound: its length says more than "a list"
        message = f"{path} must be {allowed or 'shorter'}, not a list of {error['ctx']['actual_length']} items"
    elif kind == "string_too_long":
        message = f"{path} must be {allowed or 'shorter'}, not {len(error.get('input') or '')} characters long"
    else:
        message = f"{path} must be {allowed or 'something else'}, not {shown_value(error.get('input'))}"
    return {"path": path, "message": message}


def _is_object_at(data: Any, loc: tuple[str | int, ...]) -> bool:
    """Whether ``data`` holds an object at ``loc``: where pydantic reports text that is not Unicode at an object,
    the text is one of its keys."""
    node = data
    for part in loc:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return False
    return isinstance(node, Mapping)


def lone_surrogate_problems(data: Any, prefix: tuple[str | int, ...] = ()) -> list[dict[str, str]]:
    """A problem for every text (a value or a key) in ``data`` that holds a lone surrogate (``lone_surrogates``)."""
    problems = []
    for loc, text, is_key in lone_surrogates(data, prefix):
        path = _path(loc)
        subject = path or "the request body"
        message = (f"{subject} has a key {shown_value(text)} that is {LONE_SURROGATE}" if is_key
                   else f"{subject} {shown_value(text)} is {LONE_SURROGATE}")
        problems.append({"path": path, "message": message})
    return problems


def _path(loc: tuple[str | int, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _description(model: type[BaseModel], loc: tuple[str | int, ...]) -> str | None:
    """The description of the field at ``loc`` (list indexes skipped), or None where there is no such field."""
    current: Any = model
    description = None
    for part in loc:
        if isinstance(part, int):  # an item of a list: of a model's objects, or of anything
            description = "an object" if current is not None else None
            continue
        fields = getattr(current, "model_fields", None)
        if not isinstance(part, str) or fields is None or part not in fields:
            return None
        field = fields[part]
        description = field.description
        current = _model_in(field.annotation)
    return description


def _model_in(annotation: Any) -> Any:
    """The pydantic model inside an annotation (``X | None``, ``list[X]``), or None."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for argument in typing.get_args(annotation):
        found = _model_in(argument)
        if found is not None:
            return found
    return None


def shown_value(value: Any) -> str:
    """An offending value as a message shows it: short scalars as written, anything else by its JSON type."""
    if isinstance(value, (dict, Mapping)):
        return "an object"
    if isinstance(value, list):
        return "an empty list" if not value else "a list"
    if isinstance(value, str) and len(value) > 60:
        return repr(value[:60] + "...")
    return "null" if value is None else repr(value)
