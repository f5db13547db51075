"""The security figures of the service, printed for the release note: ``python tests/security_figures.py``.

Two kinds of figure, each said for what it is:

- *read from the tests' tables* (nothing is run): the connections held open against the cap while ``/healthz``
  answered (``test_service_limits.py``), and the URL forms the outbound checks refuse (the parametrisation tables
  of the refusal tests in ``test_security_outbound.py``);
- *counted while running the tests*: the fuzz inputs of ``test_untrusted_input.py`` (Hypothesis's own statistics;
  every one of those tests fails on any exception other than ``InvalidInputError``, so a green run means 0), and
  every HTTP answer the malformed- and hostile-request tests received from the service, by status (a 500 among
  them is reported; those tests are green only with a 4xx for each).

``HYPOTHESIS_PROFILE=ci`` (what ``make test`` uses) tries more fuzz inputs than the default ``dev`` profile. The
script exits 1 when a test it runs fails or any 5xx was answered. Loaded by pytest as a plugin (``-p
security_figures``), it counts the HTTP answers of the run into the file named by ``IMT_CDS_FIGURES_OUT``.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

TESTS = Path(__file__).resolve().parent
OUTBOUND_REFUSALS = (  # the tests whose every table row is a URL form the service refuses to fetch
    "test_without_an_allowed_fhir_server_nothing_is_fetched_at_all",
    "test_dot_segments_cannot_escape_an_allowed_prefix",
    "test_a_next_page_link_cannot_leave_the_fhir_server",
    "test_urls_that_mean_something_else_to_another_parser_are_refused",
)
MALFORMED_REQUESTS = (  # pytest node selections: requests a client gets wrong or forges on purpose
    ("test_service_http.py", "malformed or bad_json or over_the_limit or error_body or spec_example_request or "
                             "other_than_the_one_in_context"),
    ("test_security_bodies.py", "malformed or duplicate or unknown_paths or inject"),
    ("test_security_tokens.py", "not postgresql"),
    ("test_serve_options.py", "token"),
)
FUZZ = "test_untrusted_input.py"


# --- read from the tables ------------------------------------------------------------------------------------------


def _module(name: str) -> ast.Module:
    return ast.parse((TESTS / name).read_text(), filename=name)


def _table_rows(function: ast.FunctionDef) -> int:
    """The number of cases a test's ``@pytest.mark.parametrize`` decorators make (their product)."""
    cases = 1
    for decorator in function.decorator_list:
        if isinstance(decorator, ast.Call) and ast.unparse(decorator.func).endswith("parametrize"):
            table = decorator.args[1]
            if not isinstance(table, ast.List | ast.Tuple):
                raise SystemExit(f"{function.name}: its table is not a literal list; count it by hand")
            cases *= len(table.elts)
    return cases


def outbound_refusals() -> dict[str, int]:
    functions = {node.name: node for node in _module("test_security_outbound.py").body
                 if isinstance(node, ast.FunctionDef)}
    missing = [name for name in OUTBOUND_REFUSALS if name not in functions]
    if missing:
        raise SystemExit(f"test_security_outbound.py no longer has {', '.join(missing)}; update this script")
    return {name: _table_rows(functions[name]) for name in OUTBOUND_REFUSALS}


def connections_held() -> tuple[int, int]:
    """(connections held half-open, the cap) in the test that asks /healthz and a hook while they are held."""
    module = _module("test_service_limits.py")
    cap = next(node.value.value for node in module.body if isinstance(node, ast.Assign)
               and ast.unparse(node.targets[0]) == "CAP")
    test = next(node for node in module.body if isinstance(node, ast.FunctionDef)
                and node.name == "test_half_open_connections_beyond_the_cap_leave_health_and_hooks_answering")
    held = next(node for node in ast.walk(test) if isinstance(node, ast.Call)
                and ast.unparse(node.func) == "open_half_open")
    factor = ast.unparse(held.args[1])
    if factor != "2 * CAP":
        raise SystemExit(f"the half-open test now holds {factor} connections; update this script")
    return 2 * cap, cap


# --- counted while running ----------------------------------------------------------------------------------------


def _pytest(arguments: list[str], out: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))}
    if out is not None:
        env["IMT_CDS_FIGURES_OUT"] = str(out)
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *arguments],
                          cwd=TESTS.parent, env=env, capture_output=True, text=True, timeout=3600)


def fuzz_inputs() -> tuple[int, int, bool]:
    """(inputs tried, failing inputs, the run passed) over the Hypothesis tests of the fuzz file."""
    run = _pytest([str(TESTS / FUZZ), "--hypothesis-show-statistics"])
    counts = re.findall(r"(\d+) passing(?: examples?)?, (\d+) failing", run.stdout)
    if not counts:
        raise SystemExit(f"no Hypothesis statistics in the output of {FUZZ}; update this script")
    return sum(int(p) + int(f) for p, f in counts), sum(int(f) for _, f in counts), run.returncode == 0


def malformed_request_answers() -> tuple[Counter[int], bool]:
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "statuses.json"
        passed = True
        statuses: Counter[int] = Counter()
        for name, selection in MALFORMED_REQUESTS:
            out.unlink(missing_ok=True)
            run = _pytest([str(TESTS / name), "-k", selection, "-p", "security_figures"], out)
            passed = passed and run.returncode == 0
            if not passed:
                print(run.stdout[-3000:], file=sys.stderr)
            if out.exists():
                statuses.update({int(k): v for k, v in json.loads(out.read_text()).items()})
    return statuses, passed


# --- as a pytest plugin: count the service's answers --------------------------------------------------------------

_answered: Counter[int] = Counter()


def pytest_configure(config: object) -> None:
    if not os.environ.get("IMT_CDS_FIGURES_OUT"):
        return
    import httpx

    send = httpx.Client.send

    def counting_send(self: httpx.Client, request: httpx.Request, **kwargs: object) -> httpx.Response:
        response = send(self, request, **kwargs)
        _answered[response.status_code] += 1
        return response

    httpx.Client.send = counting_send  # type: ignore[method-assign]


def pytest_unconfigure(config: object) -> None:
    target = os.environ.get("IMT_CDS_FIGURES_OUT")
    if target:
        Path(target).write_text(json.dumps(_answered))


def main() -> int:
    held, cap = connections_held()
    refusals = outbound_refusals()
    print(f"connections held open against the cap while /healthz answered: {held} half-open connections against a "
          f"cap of {cap} (test_service_limits.py; read from the test)")
    print(f"outbound fetches refused: {sum(refusals.values())} URL forms (test_security_outbound.py; read from the "
          "tables)")
    for name, rows in refusals.items():
        print(f"    {rows:3d}  {name}")
    tried, failing, fuzz_passed = fuzz_inputs()
    print(f"fuzz inputs tried: {tried}, exceptions other than InvalidInputError: {failing} "
          f"({FUZZ}, Hypothesis profile {os.environ.get('HYPOTHESIS_PROFILE', 'dev')}; "
          f"{'passed' if fuzz_passed else 'FAILED'})")
    statuses, requests_passed = malformed_request_answers()
    errors = sum(count for status, count in statuses.items() if status >= 500)
    shown = ", ".join(f"{status}: {count}" for status, count in sorted(statuses.items()))
    print(f"malformed and hostile requests: {sum(statuses.values())} answers, HTTP 5xx: {errors} ({shown}; "
          f"{'passed' if requests_passed else 'FAILED'})")
    return 0 if fuzz_passed and requests_passed and errors == 0 and failing == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
