"""The service's errors in the test's own process: the code and status of each (as the module's docstring draws them),
what a body may say (``public_body``: nothing of a 401's reason, nothing of a 5xx's internals), the headers HTTP asks
for, and what a log line shows of a value a client chose (``log_value``)."""

from __future__ import annotations

import re

import pytest

from imt_cds.service import errors
from imt_cds.service.errors import (
    INTERNAL_MESSAGE,
    UNAUTHORIZED_MESSAGE,
    BadRequestError,
    EvaluationFailedError,
    NotFoundError,
    PayloadTooLargeError,
    PrefetchUnavailableError,
    ServiceConfigError,
    ServiceError,
    ServiceUnavailableError,
    UnauthorizedError,
    UnsupportedContentCodingError,
    UnsupportedMediaTypeError,
    WorkerCrashedError,
    WorkerTimeoutError,
    error_body,
    http_reason,
    log_value,
    public_body,
)

ERRORS = [ServiceError, ServiceConfigError, BadRequestError, UnauthorizedError, NotFoundError, PayloadTooLargeError,
          UnsupportedMediaTypeError, UnsupportedContentCodingError, PrefetchUnavailableError, WorkerCrashedError,
          WorkerTimeoutError, ServiceUnavailableError, EvaluationFailedError]


def drawn() -> dict[str, tuple[str, int | None]]:
    """The tree of the module's docstring: class name -> (code, status, None where it is never answered)."""
    found = {}
    for line in errors.__doc__.splitlines():
        match = re.fullmatch(r'[\s│├└─]*(\w+Error)\s+"(\w+)"\s+(\d{3})?.*', line)
        if match:
            found[match[1]] = (match[2], int(match[3]) if match[3] else None)
    return found


def test_each_error_has_the_code_and_status_the_docstring_draws():
    tree = drawn()
    assert set(tree) == {cls.__name__ for cls in ERRORS}
    for cls in ERRORS:
        code, status = tree[cls.__name__]
        assert cls.code == code, cls.__name__
        assert status is None or cls.status == status, cls.__name__


@pytest.mark.parametrize(("cls", "message"), [
    (WorkerCrashedError, "the evaluation process stopped while serving this request; it has been replaced"),
    (WorkerTimeoutError, "no evaluation process answered in time; try again"),
    (ServiceUnavailableError, "a store this service needs is unavailable; try again"),
    (EvaluationFailedError, "the evaluation failed; see the server log"),
    (ServiceError, INTERNAL_MESSAGE),
])
def test_a_server_error_is_answered_with_its_fixed_words_never_its_own(cls, message):
    error = cls("worker 4711 died: /srv/imt/rules/x.yaml line 3", {"path": "/srv/imt"})
    assert public_body(error) == {"error": {"code": cls.code, "status": cls.status, "message": message}}
    # words made of fixed text for the client, when the raiser has some
    said = cls("internal detail", public_message="the audit store is busy; try again")
    assert public_body(said)["error"]["message"] == "the audit store is busy; try again"


def test_a_401_says_the_same_whatever_the_reason_and_a_4xx_says_what_it_was_raised_with():
    for reason in ("no issuer https://evil.example/ trusted", "signature does not verify"):
        assert public_body(UnauthorizedError(reason, {"iss": "x"})) == {
            "error": {"code": "cds_unauthorized", "status": 401, "message": UNAUTHORIZED_MESSAGE}}
    assert UNAUTHORIZED_MESSAGE == "the bearer token was not accepted (CDS Hooks 2.0.1 JWT required)"
    refused = BadRequestError("context.patientId is required", [{"path": "context.patientId"}])
    assert public_body(refused) == refused.to_dict() == {"error": {
        "code": "cds_bad_request", "status": 400, "message": "context.patientId is required",
        "details": [{"path": "context.patientId"}]}}
    assert public_body(NotFoundError("no CDS service 'x' here")) == {
        "error": {"code": "cds_not_found", "status": 404, "message": "no CDS service 'x' here"}}


def test_an_error_body_holds_details_only_when_there_are_some():
    assert error_body("c", 400, "m") == {"error": {"code": "c", "status": 400, "message": "m"}}
    assert error_body("c", 400, "m", []) == {"error": {"code": "c", "status": 400, "message": "m", "details": []}}


def test_the_refusals_of_a_body_say_what_would_have_been_accepted():
    assert UnsupportedMediaTypeError.response_headers == (("Accept", "application/json"),)
    assert UnsupportedContentCodingError.response_headers == (("Accept-Encoding", "identity"),)
    assert UnsupportedContentCodingError.status == 415
    assert all(cls.response_headers == () for cls in ERRORS
               if not issubclass(cls, UnsupportedMediaTypeError))


def test_a_status_has_its_standard_reason_phrase_or_a_generic_one():
    assert (http_reason(404), http_reason(503)) == ("Not Found", "Service Unavailable")
    assert http_reason(599) == "HTTP error"


def test_a_clients_value_in_a_log_line_is_cut_and_cannot_break_the_line():
    assert log_value("a" * 200) == "a" * 200
    assert log_value("a" * 201) == "a" * 200 + "...[201 characters]"
    assert log_value("b" * 30, limit=10) == "b" * 10 + "...[30 characters]"
    assert log_value("one\ntwo\r\x00\x1f\x7f\tend") == "one\\x0atwo\\x0d\\x00\\x1f\\x7f\\x09end"
    assert log_value("é ü \u2028") == "é ü \u2028"  # only ASCII controls: other text is shown as it is
    assert log_value(12345) == "12345" and log_value(None) == "None"
