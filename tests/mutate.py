"""Mutation testing of one module, every mutant, in minutes instead of hours: `make mutation` runs this.

    python tests/mutate.py imt_cds/core/engine.py [--ids 3,8-12] -- tests/test_engine.py tests/test_isolation.py

The mutants are mutmut 2.5.1's own (its operators and its numbering: id N is the N-th mutant `mutmut run` would make of
the module on a fresh cache), so the ids in tests/mutation-survivors.md mean the same under both. What differs is how
each mutant is tested, because a pytest process per mutant (what `mutmut run` does) spends most of its time starting:

- The copy. The committed tree is copied once into a work folder (`git archive HEAD`); mutants are written there, so
  the checkout is never touched. Only the unmutated run writes byte-code (the tests' rewritten asserts, the other
  modules); the mutated module's is deleted, and each time it is written (a mutant, the original back) it gets an
  mtime it never had before, so Python can never take a stale `.pyc` for it (a `.pyc` is checked by the source's
  size and its mtime in whole seconds: a mutant of the same size written in the same second would pass).
- Forking. This process imports the third-party packages the tests use (pytest, hypothesis, pydantic, durable-rules,
  ...) but never `imt_cds`. Each mutant is tested in a child forked from it, which imports the package and the tests
  from the copy, mutant included, and runs pytest in process.
- Which tests. A first child runs the whole selection unmutated under coverage, switching coverage's context to
  each test's node id, and records which tests execute each line of the module. A mutant is first tested with only
  the tests that execute its statement (`-x`: the first failure ends it). When a line also runs while the package is
  imported (module level, `def` and class bodies, default values) or no test executes it, the whole selection runs;
  so it does after a survivor, and after a run that broke (pytest's status 3 or 5).
- Verdicts. A test failure is a kill, and so are the other ways a test run can show that it saw the mutant: a
  collection error (status 2, or status 4 with "found no collectors" when the selection itself is node ids), a
  package that cannot be imported (status 4 with pytest's "while loading conftest"), a test process killed by a
  signal (durable-rules crashing) or one that runs past the time limit ("timeout", reported apart). A mutant that
  survives the tests chosen by coverage is run again against the whole selection before it is reported as a
  survivor: coverage only ever saves time, it never decides a survivor. (Coverage sees only this process: code run
  in a server or a subprocess is invisible to it, which is one more reason for that rerun.)

The results are printed as they come, one line per mutant, and written as JSON lines (`--out`), which `--report`
turns back into the summary. The unmutated selection must pass first: otherwise every mutant would look killed.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

# What the children would otherwise import once per mutant. Importing them here is safe: none of them starts a
# thread or opens a file at import, and none imports imt_cds (checked below, before the first fork).
_PRELOAD = (
    "pytest", "hypothesis", "pydantic", "durable.lang", "yaml", "orjson", "fastapi", "httpx",
    "uvicorn", "jwt", "cryptography.hazmat.primitives.asymmetric.ec", "psycopg", "z3", "fhir.resources",
    "fhirpathpy", "PIL.Image", "coverage", "anyio.pytest_plugin", "hypothesis.extra.pytestplugin",
)

KILLED_STATUSES = ("killed", "timeout")


@dataclass
class Verdict:
    id: int
    line: int
    original: str
    mutated: str
    status: str  # killed | survived | timeout | error
    how: str  # which tests decided it: "covering N" or "selection"
    seconds: float
    detail: str = ""


def mutants_of(module: Path, source: str | None = None) -> list[tuple[int, int, str, str]]:
    """Every mutant of the module (of `source`, its text, when given) as (id, line number, original line, mutated
    line), in mutmut's order."""
    from mutmut import Context, list_mutations, mutate

    source = module.read_text(encoding="utf-8") if source is None else source
    lines = source.split("\n")
    result = []
    for number, mutation_id in enumerate(list_mutations(Context(source=source, filename=str(module))), start=1):
        mutated_source, count = mutate(Context(source=source, mutation_id=mutation_id, filename=str(module)))
        if count != 1:
            raise SystemExit(f"mutant {number} of {module}: mutmut applied {count} mutations, expected exactly one")
        line_index = mutation_id.line_number
        mutated_lines = mutated_source.split("\n")
        result.append((number, line_index + 1, lines[line_index], mutated_lines[line_index]
                       if len(mutated_lines) == len(lines) else "(a line removed)"))
    return result


def mutated_source_of(module: Path, source: str, number: int) -> str:
    from mutmut import Context, list_mutations, mutate

    mutation_id = list_mutations(Context(source=source, filename=str(module)))[number - 1]
    return mutate(Context(source=source, mutation_id=mutation_id, filename=str(module)))[0]


def statement_lines(source: str) -> dict[int, tuple[range, bool]]:
    """For each line, the lines of the innermost statement holding it (of a compound statement, its header only) and
    whether that statement runs when the module is imported (module level, class bodies, a `def` line with its
    decorators and default values) rather than only when a test calls something."""
    spans: dict[int, tuple[range, bool]] = {}

    def header_end(node: ast.AST) -> int:
        firsts = [block[0].lineno for name in ("body", "orelse", "finalbody", "handlers")
                  if isinstance(block := getattr(node, name, None), list) and block]
        firsts += [case.pattern.lineno for case in getattr(node, "cases", None) or []]
        return node.end_lineno if not firsts else max(node.lineno, min(firsts) - 1)

    def walk(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.stmt, ast.ExceptHandler)):
                start = min([child.lineno, *(item.lineno for item in getattr(child, "decorator_list", []))])
                lines = range(start, header_end(child) + 1)
                for line in lines:
                    spans[line] = (lines, not in_function)
                walk(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)))
            else:
                walk(child, in_function)

    walk(ast.parse(source), False)
    return spans


class Runner:
    """Runs pytest in forked children of this process, in the copy of the tree."""

    def __init__(self, copy: Path, module: Path, timeout: float):
        self.copy, self.module, self.timeout = copy, module, timeout

    def run(self, tests: list[str], *, coverage_map: Path | None = None) -> tuple[int | str, str]:
        """The pytest status of the tests in a forked child (or "timeout", or "signal N"), and its output."""
        with tempfile.TemporaryFile(mode="w+b") as output:
            pid = os.fork()
            if pid == 0:  # the child: never returns
                code = 3
                try:
                    os.setpgid(0, 0)  # its own group, so that a timeout also ends any server it started
                    os.dup2(output.fileno(), 1)
                    os.dup2(output.fileno(), 2)
                    code = _child(self.copy, self.module, tests, coverage_map)
                except BaseException as error:  # noqa: BLE001 - reported through the status, the child must exit
                    print(f"mutation driver: the child failed: {error!r}", flush=True)
                finally:
                    sys.stdout.flush()
                    sys.stderr.flush()
                    os._exit(code)
            deadline = time.monotonic() + self.timeout
            while True:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    break
                if time.monotonic() > deadline:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                    output.seek(0)
                    return "timeout", output.read().decode(errors="replace")
                time.sleep(0.005)
            output.seek(0)
            text = output.read().decode(errors="replace")
        if os.WIFSIGNALED(status):
            return f"signal {os.WTERMSIG(status)}", text
        return os.WEXITSTATUS(status), text


def _child(copy: Path, module: Path, tests: list[str], coverage_map: Path | None) -> int:
    import pytest

    sys.dont_write_bytecode = coverage_map is None
    os.chdir(copy)
    sys.path.insert(0, str(copy))
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(copy), os.environ.get("PYTHONPATH")]))
    if sys.dont_write_bytecode:
        os.environ["PYTHONDONTWRITEBYTECODE"] = "1"
    arguments = ["-x", "-q", "-p", "no:cacheprovider", *tests]
    if coverage_map is None:
        return int(pytest.main(arguments))
    import coverage

    target = str((copy / module).resolve())
    recorder = coverage.Coverage(data_file=None, include=[target], branch=False)

    class SwitchContext:
        @pytest.hookimpl(tryfirst=True)
        def pytest_runtest_setup(self, item):  # noqa: D102 - a pytest hook
            recorder.switch_context(item.nodeid)

        @pytest.hookimpl(trylast=True)
        def pytest_runtest_teardown(self, item):  # noqa: D102 - a pytest hook
            recorder.switch_context(item.nodeid)

    recorder.start()
    status = int(pytest.main([arg for arg in arguments if arg != "-x"], plugins=[SwitchContext()]))
    recorder.stop()
    data = recorder.get_data()
    by_line = {line: sorted(contexts) for line, contexts in data.contexts_by_lineno(target).items()}
    coverage_map.write_text(json.dumps(by_line), encoding="utf-8")
    return status


def verdict_of(status: int | str, output: str) -> tuple[str, str]:
    """Whether a test run saw the mutant: ("killed" | "survived" | "timeout" | "error", why)."""
    if status == "timeout":
        return "timeout", "past the time limit"
    if isinstance(status, str):  # killed by a signal: the mutant crashed the test process (durable-rules' C code)
        return "killed", status
    if status == 0:
        return "survived", ""
    if status == 1:
        return "killed", "a test failed"
    if status == 2:
        return "killed", "a test module could not be collected"
    if status == 4 and "while loading conftest" in output:
        return "killed", "the package could not be imported"
    if status == 4 and "found no collectors for" in output:  # a node id whose module cannot be collected
        return "killed", "a test module could not be collected"
    # 3 (internal error), 4 (usage), 5 (no tests): a broken run, never a kill.
    return "error", f"pytest status {status}: " + output.strip()[-300:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("module", type=Path, nargs="?", help="the module to mutate, relative to the repository root")
    parser.epilog = "After --: the tests that guard the module, as pytest arguments (files, node ids, -k EXPR)."
    parser.add_argument("--ids", default="", help="only these mutant ids: 3,8-12 (default: every one)")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "imt-cds-mutation",
                        help="where the copy of the committed tree goes (default: %(default)s)")
    parser.add_argument("--out", type=Path, help="append each verdict as a JSON line to this file")
    parser.add_argument("--timeout", type=float, default=0,
                        help="seconds a mutant's tests may take (default: 5 x the unmutated run, at least 60)")
    parser.add_argument("--list", action="store_true", help="print the mutants and stop")
    parser.add_argument("--report", type=Path, help="summarise a JSON-lines file written by --out and stop")
    argv = sys.argv[1:] if argv is None else argv
    tests = argv[argv.index("--") + 1:] if "--" in argv else []
    arguments = parser.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    arguments.tests = tests

    if arguments.report:
        return report(arguments.report)
    root = Path(__file__).resolve().parent.parent
    module = arguments.module
    if module is None:
        parser.error("name the module to mutate")
    if not (root / module).is_file():
        parser.error(f"module: {module} is not a file of the repository (give its path from the repository root)")
    all_mutants = mutants_of(root / module)
    wanted = parse_ids(arguments.ids, len(all_mutants)) if arguments.ids else None
    mutants = [m for m in all_mutants if wanted is None or m[0] in wanted]
    if arguments.list:
        for number, line, original, mutated in mutants:
            print(f"{number:5} line {line:5}: {original.strip()}  ->  {mutated.strip()}")
        return 0
    if not arguments.tests:
        parser.error("name the tests that guard the module after --")

    copy = arguments.work / module.name
    subprocess.run(["rm", "-rf", str(copy)], check=True)
    copy.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(root), "archive", "HEAD"], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(copy)], input=archive, check=True)
    if (copy / module).read_bytes() != (root / module).read_bytes():
        print(f"note: {module} differs from its committed version; the committed one is mutated", file=sys.stderr)
    # Beside the copy, as beside the checkout: the tests that read the shared project folder find it.
    shared = root.parent / "shared"
    if shared.is_dir() and not (copy.parent / "shared").exists():
        (copy.parent / "shared").symlink_to(shared)

    for name in _PRELOAD:
        with contextlib.suppress(ImportError):
            __import__(name)
    if any(name == "imt_cds" or name.startswith("imt_cds.") for name in sys.modules):
        raise SystemExit("mutation driver: a preloaded package imported imt_cds; the children would test the original")

    # The mutants are made of the copy's text, the committed one, never of the checkout, which may change (a commit,
    # an edit) while a run goes on.
    original = (copy / module).read_text(encoding="utf-8")
    all_mutants = mutants_of(module, original)
    wanted = parse_ids(arguments.ids, len(all_mutants)) if arguments.ids else None
    mutants = [m for m in all_mutants if wanted is None or m[0] in wanted]
    runner = Runner(copy, module, timeout=1800)
    started = time.monotonic()
    coverage_file = copy / ".mutation-coverage.json"
    status, output = runner.run(arguments.tests, coverage_map=coverage_file)
    baseline = time.monotonic() - started
    if status != 0:
        print(output[-3000:])
        raise SystemExit(f"mutation driver: the unmutated tests do not pass (pytest status {status}); fix that first")
    runner.timeout = arguments.timeout or max(60.0, 5 * baseline)
    for stale in (copy / module).parent.glob(f"__pycache__/{module.stem}.*.pyc"):
        stale.unlink()
    mtimes = itertools.count(int(time.time()) + 10)

    def write_module(text: str) -> None:
        (copy / module).write_text(text, encoding="utf-8")
        moment = next(mtimes)
        os.utime(copy / module, (moment, moment))

    covering = {int(line): contexts for line, contexts in json.loads(coverage_file.read_text()).items()}
    spans = statement_lines(original)
    print(f"{module}: {len(all_mutants)} mutants, {len(mutants)} to run; the unmutated selection took {baseline:.1f} s",
          flush=True)

    output_file = arguments.out.open("a", encoding="utf-8") if arguments.out else None
    counts: dict[str, int] = {}
    try:
        for number, line, original_line, mutated_line in mutants:
            tests = tests_for(line, spans, covering)
            began = time.monotonic()
            write_module(mutated_source_of(module, original, number))
            try:
                if tests:
                    status, text = runner.run(ordered(tests, arguments.tests))
                    verdict, detail = verdict_of(status, text)
                    how = f"covering {len(tests)}"
                    # A survivor is confirmed against the whole selection; so is a broken run (status 3 or 5).
                    if verdict in ("survived", "error"):
                        status, text = runner.run(arguments.tests)
                        verdict, detail = verdict_of(status, text)
                        how = "selection"
                else:
                    status, text = runner.run(arguments.tests)
                    verdict, detail = verdict_of(status, text)
                    how = "selection"
            finally:
                write_module(original)
            result = Verdict(number, line, original_line.strip(), mutated_line.strip(), verdict, how,
                             round(time.monotonic() - began, 2), detail)
            counts[verdict] = counts.get(verdict, 0) + 1
            print(f"{number:5} {verdict:8} {result.seconds:6.1f}s line {line}: {result.original}  ->  "
                  f"{result.mutated}" + (f"   [{detail}]" if verdict == "error" else ""), flush=True)
            if output_file:
                output_file.write(json.dumps(asdict(result) | {"module": str(module)}) + "\n")
                output_file.flush()
    finally:
        if output_file:
            output_file.close()
    detected = sum(counts.get(status, 0) for status in KILLED_STATUSES)
    print(f"{module}: {detected} of {len(mutants)} detected "
          f"({', '.join(f'{n} {status}' for status, n in sorted(counts.items()))})")
    return 1 if counts.get("error") else 0


def tests_for(line: int, spans: dict[int, tuple[range, bool]], covering: dict[int, list[str]]) -> list[str]:
    """The tests that execute the mutated statement, or [] when the whole selection must run."""
    lines, at_import = spans.get(line, (range(line, line + 1), True))
    if at_import:
        return []
    tests: set[str] = set()
    for number in lines:
        contexts = covering.get(number, [])
        if "" in contexts:  # also run while importing the package: any test may depend on it
            return []
        tests.update(contexts)
    return sorted(tests)


def ordered(tests: list[str], selection: list[str]) -> list[str]:
    """The node ids in the order of the selection's files (the test file written for a module first)."""
    files = [item for item in selection if item.endswith(".py")]

    def key(node_id: str) -> tuple[int, str]:
        path = node_id.split("::")[0]
        return (files.index(path) if path in files else len(files), node_id)

    return sorted(tests, key=key)


def parse_ids(text: str, count: int) -> set[int]:
    ids: set[int] = set()
    for part in text.split(","):
        first, _, last = part.strip().partition("-")
        if not first.isdigit() or (last and not last.isdigit()):
            raise SystemExit(f"--ids: {part!r} is not an id or a range of ids (such as 3 or 8-12)")
        span = range(int(first), int(last or first) + 1)
        if not span or span.start < 1 or span.stop - 1 > count:
            raise SystemExit(f"--ids: {part!r} is outside 1-{count}, the module's mutants")
        ids.update(span)
    return ids


def report(path: Path) -> int:
    results: dict[tuple[str, int], dict] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            item = json.loads(line)
            results[(item["module"], item["id"])] = item  # the last run of a mutant counts
    modules = sorted({module for module, _ in results})
    for module in modules:
        items = [item for (name, _), item in sorted(results.items()) if name == module]
        detected = sum(item["status"] in KILLED_STATUSES for item in items)
        print(f"{module}: {detected} of {len(items)} detected")
        for item in items:
            if item["status"] not in KILLED_STATUSES:
                print(f"  {item['id']:5} {item['status']:8} line {item['line']}: {item['original']}  ->  "
                      f"{item['mutated']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
