"""The service's configuration check (``ServiceConfig.check``), in the test's own process: every bound at its edge,
on both sides, and the whole message of each refusal. test_serve_options.py runs the same refusals through
``imt-cds serve`` (one line, exit 2); these name the bound or word that is wrong.
"""

from __future__ import annotations

from dataclasses import FrozenInstanceError, replace
from pathlib import Path

import pytest

from imt_cds.service.auth import AuthSettings, TrustedIssuer
from imt_cds.service.config import ServiceConfig
from imt_cds.service.errors import ServiceConfigError

PUBLIC = "https://cds.example.org"
OPEN = ServiceConfig(PUBLIC, allow_unauthenticated=True)
TRUSTING = ServiceConfig(PUBLIC, auth=AuthSettings((TrustedIssuer("https://ehr.example.org/", "jwks.json"),)))


def refusal(config: ServiceConfig) -> str:
    with pytest.raises(ServiceConfigError) as caught:
        config.check()
    assert caught.value.code == "cds_config"
    return caught.value.message


def test_the_defaults_with_authentication_or_with_it_waived_are_accepted():
    OPEN.check()
    TRUSTING.check()


@pytest.mark.parametrize("url", ["https://cds.example.org", "http://127.0.0.1:8080", "https://ehr.example.org/cds",
                                 "https://cds.example.org/", "https://ehr.example.org/CDX"])
def test_an_absolute_http_url_with_or_without_a_path_is_a_public_url(url):
    config = replace(OPEN, public_url=url)
    config.check()
    assert config.public_url == url.rstrip("/")  # (no trailing slash: paths are appended to it)
    assert config.service_url("/cds-services") == url.rstrip("/") + "/cds-services"


@pytest.mark.parametrize("url", ["ftp://cds.example.org", "cds.example.org", "https:", "https://cds.example.org?a=1",
                                 "https://cds.example.org#top", "https://", "http:///"])
def test_a_public_url_that_is_not_an_absolute_http_url_without_query_or_fragment_is_refused(url):
    assert refusal(replace(OPEN, public_url=url)) == (
        f"public URL {url!r} must be an absolute http(s) URL without query or fragment, e.g. https://cds.example.org")


def test_no_authentication_is_refused_unless_it_was_waived_and_an_auth_setting_needs_an_issuer():
    assert refusal(ServiceConfig(PUBLIC)) == (
        "no authentication configured: trust at least one JWT issuer (--trust ISS JWKS) or, for a local test only, "
        "pass --allow-unauthenticated")
    assert refusal(replace(TRUSTING, auth=AuthSettings(()))) == "authentication configured without any trusted issuer"
    assert refusal(replace(OPEN, auth=AuthSettings(()))) == "authentication configured without any trusted issuer"


def test_workers_and_the_jobs_one_may_hold_are_bounded():
    replace(OPEN, workers=1).check()
    assert refusal(replace(OPEN, workers=0)) == "at least one evaluation worker is needed"
    for depth in (1, 8):
        replace(OPEN, worker_depth=depth).check()
    for depth in (0, 9):
        assert refusal(replace(OPEN, worker_depth=depth)) == f"--worker-depth {depth} must be from 1 to 8"


def test_the_store_timeout_is_more_than_zero_at_most_five_minutes_and_less_than_the_request_timeout():
    replace(OPEN, store_timeout=0.001).check()
    replace(OPEN, store_timeout=300, request_timeout=301).check()
    for timeout in (0, -1, 300.5):
        assert refusal(replace(OPEN, store_timeout=timeout, request_timeout=400)) == (
            f"--store-timeout {timeout:g} must be more than 0 and at most 300 seconds")
    replace(OPEN, store_timeout=29.5, request_timeout=30).check()
    assert refusal(replace(OPEN, store_timeout=30, request_timeout=30)) == (
        "--store-timeout 30 must be less than --request-timeout 30")


def test_a_tokens_lifetime_and_size_are_bounded_when_tokens_are_checked():
    auth = TRUSTING.auth
    assert auth is not None
    for lifetime in (1, 3600):
        replace(TRUSTING, auth=replace(auth, max_lifetime_seconds=lifetime)).check()
    for lifetime in (0, 3601):
        assert refusal(replace(TRUSTING, auth=replace(auth, max_lifetime_seconds=lifetime))) == (
            f"--jwt-max-lifetime {lifetime} must be more than 0 and at most 3600 seconds (CDS Hooks tokens live for "
            "minutes)")
    for size in (1024, 65536):
        replace(TRUSTING, auth=replace(auth, max_token_bytes=size)).check()
    for size in (1023, 65537):
        assert refusal(replace(TRUSTING, auth=replace(auth, max_token_bytes=size))) == (
            f"--jwt-max-bytes {size} must be from 1024 to 65536 bytes")


def test_the_fetch_deadline_is_more_than_zero_and_at_most_five_minutes():
    for deadline in (0.001, 300):
        replace(OPEN, fhir_deadline=deadline).check()
    for deadline in (0, 300.5):
        assert refusal(replace(OPEN, fhir_deadline=deadline)) == (
            f"--fhir-deadline {deadline:g} must be more than 0 and at most 300 seconds")


def test_a_private_network_is_a_cidr_network_without_host_bits_and_not_every_address():
    replace(OPEN, fhir_private_networks=("10.20.0.0/16", "fd00::/8", "192.168.1.7/32")).check()
    message = refusal(replace(OPEN, fhir_private_networks=("10.0.0.0/8", "10.0.0.5/8")))
    assert message.startswith("--fhir-private-network '10.0.0.5/8' is not a network in CIDR form such as "
                              "10.20.0.0/16 or fd00::/8: ")
    assert message.endswith("has host bits set (did you mean 10.0.0.0/8?)")
    message = refusal(replace(OPEN, fhir_private_networks=("intranet",)))
    assert message == ("--fhir-private-network 'intranet' is not a network in CIDR form such as 10.20.0.0/16 or "
                       "fd00::/8: 'intranet' does not appear to be an IPv4 or IPv6 network")  # (no hint to give)
    for everything in ("0.0.0.0/0", "::/0"):
        assert refusal(replace(OPEN, fhir_private_networks=(everything,))) == (
            f"--fhir-private-network {everything!r} allows every address; name the network your FHIR server is in "
            "(e.g. 10.20.0.0/16)")


def test_the_body_limit_is_at_least_a_kibibyte():
    replace(OPEN, max_body_bytes=1024).check()
    assert refusal(replace(OPEN, max_body_bytes=1023)) == "the body size limit must be at least 1024 bytes"


def test_cors_origins_and_allowed_fhir_servers_are_http_urls():
    replace(OPEN, cors_origins=("*", "https://ehr.example.org", "http://localhost:3000"),
            fhir_servers=("https://fhir.example.org/r4", "http://127.0.0.1:8080/fhir")).check()
    for origin in ("ehr.example.org", "ftp://ehr.example.org"):
        assert refusal(replace(OPEN, cors_origins=(origin,))) == (
            f"CORS origin {origin!r} must be an http(s) origin or *")
    for prefix in ("fhir.example.org", "file:///fhir"):
        assert refusal(replace(OPEN, fhir_servers=(prefix,))) == (
            f"allowed FHIR server {prefix!r} must be an http(s) URL")


def test_feedback_goes_to_the_audit_store_or_to_a_log_not_both(tmp_path):
    replace(OPEN, audit=str(tmp_path / "audit.db")).check()
    replace(OPEN, feedback_log=Path(tmp_path / "feedback.ndjson")).check()
    assert refusal(replace(OPEN, audit=str(tmp_path / "audit.db"), feedback_log=tmp_path / "feedback.ndjson")) == (
        "feedback goes to the audit store when there is one: give --audit or --feedback-log, not both")


def test_a_configuration_is_one_value_that_nothing_can_change_once_built():
    with pytest.raises(FrozenInstanceError):
        OPEN.workers = 8  # type: ignore[misc]


def test_the_default_fetch_limits_are_those_readme_states_and_bound_every_request():
    # README, "fhirServer": searchset pages are followed "at most 20"; one request's own timeout is a number of
    # seconds within the deadline of all of them (None would let one request wait until the deadline alone ends it).
    assert OPEN.fhir_max_pages == 20
    assert isinstance(OPEN.fhir_timeout, float) and 0 < OPEN.fhir_timeout <= OPEN.fhir_deadline
